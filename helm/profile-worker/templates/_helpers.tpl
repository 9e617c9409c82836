{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "profile-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "profile-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "profile-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods; never change them after the first install. */}}
{{- define "profile-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "profile-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "profile-worker.labels" -}}
helm.sh/chart: {{ include "profile-worker.chart" . }}
{{ include "profile-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "profile-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "profile-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The side server's port, taken from config.server.listen so the daemon and the probes agree. */}}
{{- define "profile-worker.port" -}}
{{- $listen := .Values.config.server.listen | default "0.0.0.0:8080" }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.server.listen %q must end with :PORT" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* shutdown.grace_seconds as the daemon will see it (60 is the built-in default). */}}
{{- define "profile-worker.graceSeconds" -}}
{{- $shutdown := .Values.config.shutdown | default dict }}
{{- $shutdown.grace_seconds | default 60 | int }}
{{- end }}

{{/* Where the rendered config file is mounted. */}}
{{- define "profile-worker.configPath" -}}
/etc/profile-worker/config.toml
{{- end }}

{{/* The container's env and envFrom, shared by the Deployment and the migration Job. */}}
{{- define "profile-worker.env" -}}
env:
  {{- with .Values.secrets.existingSecret }}
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $.Values.secrets.databaseUrlKey }}
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $.Values.secrets.redisUrlKey }}
        optional: true
  {{- end }}
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The config.toml the chart renders (ConfigMap data), shared by the Deployment's and the hook's ConfigMaps. */}}
{{- define "profile-worker.configData" -}}
config.toml: |
  # Rendered by the profile-worker chart from .Values.config; layered over the built-in defaults.
  {{- include "profile-worker.toml" .Values.config | trim | nindent 2 }}
{{- end }}

{{/* Fails when the values combine features that cannot work together. */}}
{{- define "profile-worker.validate" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are alternatives: enable at most one" }}
{{- end }}
{{- $queue := .Values.config.queue | default dict }}
{{- if and .Values.autoscaling.keda.enabled (not (or .Values.autoscaling.keda.queueUrl $queue.url)) }}
{{- fail "autoscaling.keda needs a queue URL: set autoscaling.keda.queueUrl or config.queue.url" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (hasKey .Values.podDisruptionBudget "minAvailable") (hasKey .Values.podDisruptionBudget "maxUnavailable") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}

{{/* PromQL label matchers selecting this release's series. */}}
{{- define "profile-worker.promSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "profile-worker.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The daemon's TOML config from .Values.config. Helm's toToml writes every number as a float
(concurrency = 5.0), which the daemon's integer keys reject, so the file is written here:
sections, then sub-tables (generator.models, generator.prices), values inline; no blank lines, so
the YAML block has no whitespace-only lines.
*/}}
{{- define "profile-worker.toml" -}}
{{- range $section := keys . | sortAlpha }}
{{- $body := index $ $section }}
{{- if not (kindIs "map" $body) }}
{{- fail (printf "config.%s must be a section (a map of keys)" $section) }}
{{- end }}
[{{ $section }}]
{{- range $key := keys $body | sortAlpha }}
{{- $value := index $body $key }}
{{- if not (kindIs "map" $value) }}
{{ include "profile-worker.tomlKey" $key }} = {{ include "profile-worker.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $body | sortAlpha }}
{{- $table := index $body $key }}
{{- if kindIs "map" $table }}
[{{ $section }}.{{ include "profile-worker.tomlKey" $key }}]
{{- range $entry := keys $table | sortAlpha }}
{{ include "profile-worker.tomlKey" $entry }} = {{ include "profile-worker.tomlValue" (index $table $entry) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "profile-worker.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ quote . }}{{ end }}
{{- end }}

{{- define "profile-worker.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- range $i, $k := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ include "profile-worker.tomlKey" $k }} = {{ include "profile-worker.tomlValue" (index $ $k) }}{{ end }} }
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- if eq (float64 .) (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "profile-worker.tomlValue" $v }}{{ end }}]
{{- else -}}
{{ toString . | quote }}
{{- end -}}
{{- end }}
