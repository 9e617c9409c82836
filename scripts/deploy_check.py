"""Checks behind scripts/deploy-check: chart wiring, ECS and IAM, dashboard and alert metrics.

Each subcommand prints one line per finding and exits non-zero when anything is wrong. It runs in
the tools/venv that scripts/deploy-check prepares (PyYAML comes with yamllint, botocore is pinned).
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "profile-worker"
ECS = ROOT / "deploy" / "ecs"
DASHBOARD = ROOT / "deploy" / "grafana" / "profile-worker.json"
RULES = ROOT / "deploy" / "prometheus" / "profile-worker-alerts.yaml"
NAMESPACE = "books"
RELEASE = "pw"
# Kinds kubernetes-validate has no schema for; everything else must be validated.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
SCHEMAS = ROOT / "deploy" / "schemas"
# KEDA kinds validated against the CRD schemas stored in deploy/schemas (see its README).
KEDA_CRDS = {"ScaledObject": "keda.sh_scaledobjects.yaml", "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
# The IAM actions the daemon (task role) and its operators use; anything else is a finding.
TASK_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:SendMessage",
    "bedrock:InvokeModel",
}
POLICY_ACTIONS = {
    "task-role-policy.json": TASK_ACTIONS | {"aps:RemoteWrite", "secretsmanager:GetSecretValue"},
    "enqueue-policy.json": {"sqs:SendMessage", "sqs:GetQueueUrl"},
    "execution-role-policy.json": {"ssm:GetParameters"},
}


class Findings:
    """Collects failures so one run reports all of them."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
            print(f"  FAIL {what}")
        return ok

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


# ---------------------------------------------------------------------------------------------
# Chart


def helm(helm_bin, *args, check=True):
    proc = subprocess.run([helm_bin, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(helm_bin, *values_args, kube="1.30.0"):
    out = helm(
        helm_bin, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", kube, *values_args,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(kinds, kind):
    return kinds.get(kind, [None])[0]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cmd_wiring(args):
    f = Findings("chart wiring")
    variants = {
        "default": ["--set", "config.queue.name=q"],
        "all-features": ["-f", str(CHART / "ci" / "all-features-values.yaml")],
        "hpa": ["-f", str(CHART / "ci" / "hpa-values.yaml")],
    }
    for variant, values in variants.items():
        docs = render(args.helm, *values)
        wire_variant(f, variant, docs)
    wire_checksum(f, args.helm)
    own = by_kind(render(args.helm, "-f", str(CHART / "ci" / "all-features-values.yaml"),
                         "--set", "autoscaling.keda.authenticationRef=shared-aws"))
    f.check("TriggerAuthentication" not in own
            and one(own, "ScaledObject")["spec"]["triggers"][0]["authenticationRef"]["name"] == "shared-aws",
            "autoscaling.keda.authenticationRef names an existing TriggerAuthentication instead of the chart's")
    off = by_kind(render(args.helm, "--set", "config.queue.name=q", "--set", "migrations.job.enabled=false"))
    f.check("Job" not in off and len(off.get("ConfigMap", [])) == 1, "migrations.job.enabled=false renders no hook")
    wire_bad_values(f, args.helm)
    wire_config_accepted(f, args.helm, args.binary)
    return f.finish()


def wire_variant(f, variant, docs):
    kinds = by_kind(docs)
    for d in docs:
        f.check(d["metadata"].get("namespace") == NAMESPACE,
                f"[{variant}] {d['kind']} {d['metadata']['name']} has namespace {NAMESPACE}")
    dep = one(kinds, "Deployment")
    cm = one(kinds, "ConfigMap")
    svc = one(kinds, "Service")
    if not f.check(dep and cm and svc, f"[{variant}] Deployment, ConfigMap and Service rendered"):
        return
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (ctr,) = spec["containers"]
    config = tomllib.loads(cm["data"]["config.toml"])
    grace = config.get("shutdown", {}).get("grace_seconds", 60)
    listen = config.get("server", {}).get("listen", "0.0.0.0:8080")
    port = int(listen.rsplit(":", 1)[1])

    f.check(matches(dep["spec"]["selector"]["matchLabels"], pod_labels),
            f"[{variant}] Deployment selector matches its pod labels")
    f.check(matches(svc["spec"]["selector"], pod_labels), f"[{variant}] Service selector matches pod labels")
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    f.check(ports.get("http-metrics") == port,
            f"[{variant}] container port http-metrics = {port} from config server.listen {listen}")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = ctr.get(probe, {}).get("httpGet", {})
        f.check(get.get("port") == "http-metrics" and get.get("path") == path,
                f"[{variant}] {probe} GETs {path} on the named port http-metrics")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    sp = svc_ports.get("http-metrics", {})
    f.check(sp.get("targetPort") == "http-metrics" and sp.get("port") == port,
            f"[{variant}] Service port http-metrics targets the named container port")
    f.check(spec.get("terminationGracePeriodSeconds", 30) > grace,
            f"[{variant}] terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds')} > grace {grace}")
    # The config file the args name must be the ConfigMap's key, mounted read-only.
    cfg_args = ctr.get("args", [])
    cfg_path = cfg_args[cfg_args.index("--config") + 1] if "--config" in cfg_args else ""
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mount = next((m for m in ctr.get("volumeMounts", []) if cfg_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    vol = vols.get(mount["name"], {}) if mount else {}
    f.check(bool(cfg_path) and mount and mount.get("readOnly")
            and vol.get("configMap", {}).get("name") == cm["metadata"]["name"]
            and os.path.basename(cfg_path) in cm["data"],
            f"[{variant}] --config {cfg_path} is the ConfigMap's key, mounted read-only")
    # Hardened security context (container level, pod level for seccomp as well).
    sc = ctr.get("securityContext", {})
    psc = spec.get("securityContext", {})
    f.check(sc.get("runAsNonRoot") and psc.get("runAsNonRoot") and sc.get("runAsUser", psc.get("runAsUser", 0)) != 0,
            f"[{variant}] runs as a non-root numeric user")
    f.check(sc.get("readOnlyRootFilesystem") is True, f"[{variant}] read-only root filesystem")
    f.check(sc.get("allowPrivilegeEscalation") is False, f"[{variant}] no privilege escalation")
    f.check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"[{variant}] all capabilities dropped")
    f.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            and sc.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault",
            f"[{variant}] seccomp RuntimeDefault")
    f.check(bool(ctr.get("resources", {}).get("requests")) and bool(ctr.get("resources", {}).get("limits")),
            f"[{variant}] resources requests and limits set")
    f.check("checksum/config" in pod["metadata"].get("annotations", {}), f"[{variant}] config checksum annotation")
    sa = one(kinds, "ServiceAccount")
    f.check(sa is not None and spec.get("serviceAccountName") == sa["metadata"]["name"],
            f"[{variant}] pod uses the chart's ServiceAccount")
    pdb = one(kinds, "PodDisruptionBudget")
    f.check(pdb is not None and matches(pdb["spec"]["selector"]["matchLabels"], pod_labels),
            f"[{variant}] PodDisruptionBudget selects the pods")

    wire_migrate_job(f, variant, docs, dep, cm)

    hpa, keda = one(kinds, "HorizontalPodAutoscaler"), one(kinds, "ScaledObject")
    f.check(not (hpa and keda), f"[{variant}] HPA and KEDA are not both rendered")
    for scaler in (hpa, keda):
        if scaler:
            ref = scaler["spec"]["scaleTargetRef"]
            f.check(ref.get("kind", "Deployment") == "Deployment" and ref["name"] == dep["metadata"]["name"],
                    f"[{variant}] {scaler['kind']} targets the Deployment")
            f.check("replicas" not in dep["spec"], f"[{variant}] Deployment leaves replicas to the {scaler['kind']}")
    if keda:
        (trigger,) = keda["spec"]["triggers"]
        conc = config.get("consumer", {}).get("concurrency", 5)
        f.check(trigger["type"] == "aws-sqs-queue" and trigger["metadata"]["queueLength"] == str(conc),
                f"[{variant}] KEDA aws-sqs-queue queueLength = consumer.concurrency ({conc})")
        f.check(trigger["metadata"]["queueURL"].startswith("https://sqs."), f"[{variant}] KEDA has the queue URL")
        f.check(trigger["metadata"].get("scaleOnInFlight") == "true", f"[{variant}] KEDA counts in-flight messages too")
        ta = one(kinds, "TriggerAuthentication")
        f.check(ta is not None and trigger.get("authenticationRef", {}).get("name") == ta["metadata"]["name"]
                and ta["spec"].get("podIdentity") == {"provider": "aws", "identityOwner": "workload"},
                f"[{variant}] KEDA authenticates with the pods' own AWS identity (TriggerAuthentication podIdentity aws/workload)")
    if hpa:
        metrics = hpa["spec"]["metrics"]
        f.check(all(m["type"] == "External" for m in metrics)
                and any(m["external"]["metric"]["name"] == "profile_worker_queue_backlog" for m in metrics),
                f"[{variant}] HPA scales on the external queue backlog metric, not CPU")

    sm = one(kinds, "ServiceMonitor")
    if sm:
        f.check(matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]),
                f"[{variant}] ServiceMonitor selects the Service")
        f.check(all(e["port"] in svc_ports for e in sm["spec"]["endpoints"]),
                f"[{variant}] ServiceMonitor endpoints name a Service port")
    if variant == "all-features":
        f.check(bool(sm) and bool(one(kinds, "PrometheusRule")) and bool(keda),
                "[all-features] ServiceMonitor, PrometheusRule and ScaledObject rendered")
        env = {e["name"]: e for e in ctr.get("env", [])}
        ref = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        f.check(ref.get("name") == "profile-worker-secrets", "[all-features] DATABASE_URL comes from the existing Secret")
        f.check(sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"),
                "[all-features] ServiceAccount carries the IRSA role annotation")
    if variant == "hpa":
        f.check(bool(hpa) and not keda, "[hpa] HPA rendered, no ScaledObject")


def hook_of(doc):
    return set(doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")) - {""}


def wire_migrate_job(f, variant, docs, dep, cm):
    """The pre-install/pre-upgrade hook runs `migrate` with the Deployment's image, env and config."""
    jobs = [d for d in docs if d["kind"] == "Job"]
    if not f.check(len(jobs) == 1, f"[{variant}] one migration Job rendered (migrations.job.enabled defaults to true)"):
        return
    job = jobs[0]
    ann = job["metadata"]["annotations"]
    f.check(hook_of(job) == {"pre-install", "pre-upgrade"}, f"[{variant}] migration Job is a pre-install,pre-upgrade hook")
    f.check("before-hook-creation" in ann.get("helm.sh/hook-delete-policy", ""),
            f"[{variant}] migration Job is replaced on the next upgrade (before-hook-creation)")
    spec = job["spec"]["template"]["spec"]
    (jctr,) = spec["containers"]
    (dctr,) = dep["spec"]["template"]["spec"]["containers"]
    f.check(spec.get("restartPolicy") == "Never", f"[{variant}] migration pod restartPolicy Never")
    f.check(jctr["image"] == dctr["image"], f"[{variant}] migration Job uses the Deployment's image")
    args = jctr.get("args", [])
    f.check(args[:1] == ["migrate"] and args[1:3] == dctr["args"][1:3],
            f"[{variant}] migration Job runs `migrate` with the Deployment's --config: {args}")
    f.check(jctr.get("env") == dctr.get("env") and jctr.get("envFrom") == dctr.get("envFrom"),
            f"[{variant}] migration Job has the Deployment's env and envFrom")
    f.check(jctr.get("securityContext") == dctr.get("securityContext"), f"[{variant}] migration Job is as locked down")
    vol = next((v for v in spec.get("volumes", []) if v["name"] == "config"), {})
    hook_cm = next((d for d in docs if d["kind"] == "ConfigMap"
                    and d["metadata"]["name"] == vol.get("configMap", {}).get("name")), None)
    f.check(hook_cm is not None and hook_of(hook_cm) == hook_of(job)
            and int(hook_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann.get("helm.sh/hook-weight", "0")),
            f"[{variant}] migration Job mounts a hook ConfigMap created before it (hooks run before the release's objects)")
    f.check(hook_cm is not None and hook_cm["data"] == cm["data"], f"[{variant}] hook ConfigMap holds the Deployment's config.toml")


def checksum(helm_bin, *values):
    docs = render(helm_bin, "--set", "config.queue.name=q", *values)
    return one(by_kind(docs), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def wire_checksum(f, helm_bin):
    base = checksum(helm_bin)
    f.check(checksum(helm_bin) == base, "config checksum is stable for the same values")
    f.check(checksum(helm_bin, "--set", "config.consumer.concurrency=3") != base,
            "config checksum changes when the config changes")
    f.check(checksum(helm_bin, "--set", "replicaCount=7") == base,
            "config checksum ignores values outside the config")


# Each bad value must be rejected, and for the stated reason (not for some unrelated error).
BAD_VALUES = [
    (["--set", "config.consumer.concurrency=0"], "concurrency: Must be greater than or equal to 1"),
    (["--set", "config.consumer.concurency=5"], "Additional property concurency is not allowed"),
    (["--set", "config.nosuchsection.key=1"], "Additional property nosuchsection is not allowed"),
    (["--set", "autoscaling.hpa.enabled=true", "--set", "autoscaling.keda.enabled=true"], "autoscaling.keda.enabled"),
    (["--set", "config.server.listen=localhost"], "config.server.listen: Does not match pattern"),
    (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy: image.pullPolicy must be one of"),
    (["--set", "serviceAccount.roleArn=my-role"], "serviceAccount.roleArn: Does not match pattern"),
    (["--set", "config.log.format=xml"], "config.log.format: config.log.format must be one of"),
    (["--set", "podDisruptionBudget.minAvailable=1"], "set minAvailable or maxUnavailable, not both"),
]


def wire_bad_values(f, helm_bin):
    for values, reason in BAD_VALUES:
        proc = helm(helm_bin, "template", RELEASE, str(CHART), "--set", "config.queue.name=q", *values, check=False)
        f.check(proc.returncode != 0 and reason in proc.stderr,
                f"bad values {' '.join(values[1::2])} rejected with '{reason}'"
                + ("" if proc.returncode != 0 else " (it rendered)") + ("" if reason in proc.stderr else f": {proc.stderr.strip()[:300]}"))
    proc = helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / "bad-values.yaml"), check=False)
    expected = ["Additional property concurency is not allowed", "Must be greater than or equal to 1",
                "autoscaling.keda.enabled"]
    out = proc.stdout + proc.stderr
    f.check(proc.returncode != 0 and all(e in out for e in expected),
            "helm lint --strict fails on ci/bad-values.yaml for each of its planted errors")


def wire_config_accepted(f, helm_bin, binary):
    """The daemon itself must accept every TOML file the chart renders (strict keys and types)."""
    if not binary:
        return
    for values in (["--set", "config.queue.name=q"], ["-f", str(CHART / "ci" / "all-features-values.yaml")],
                   ["-f", str(CHART / "ci" / "hpa-values.yaml")]):
        cm = one(by_kind(render(helm_bin, *values)), "ConfigMap")
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as tmp:
            tmp.write(cm["data"]["config.toml"])
        proc = subprocess.run([binary, "--config", tmp.name, "config"], capture_output=True, text=True,
                              env=clean_env())
        os.unlink(tmp.name)
        f.check(proc.returncode == 0, f"profile-worker accepts the chart's config.toml ({' '.join(values)})"
                + ("" if proc.returncode == 0 else f": {proc.stderr.strip()}"))


def clean_env(extra=None):
    """The process environment without any PROFILE_WORKER_ or alias variables, plus `extra`."""
    aliases = {"DATABASE_URL", "REDIS_URL", "BMX_REDIS_URL", "ENTITY_PROFILE_MODEL", "AWS_REGION",
               "BMX_PROFILE_GENERATION_QUEUE_NAME", "PROFILE_GENERATION_QUEUE_NAME"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_WORKER_") and k not in aliases}
    env.update(extra or {})
    return env


def cmd_schema_sync(args):
    """values.schema.json must know exactly the keys of config/default.toml."""
    f = Findings("schema vs config/default.toml")
    defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    f.check(set(schema) == set(defaults), f"schema sections {sorted(schema)} = default.toml sections {sorted(defaults)}")
    for section, body in defaults.items():
        props = schema.get(section, {}).get("properties", {})
        for key in body:
            f.check(key in props, f"schema knows config.{section}.{key}")
        # Commented-out keys in default.toml (e.g. generator.temperature) may be in the schema only.
        commented = set(re.findall(r"^#\s*([a-z_]+)\s*=", section_text(section), re.M))
        for key in props:
            f.check(key in body or key in commented, f"config.{section}.{key} of the schema exists in default.toml")
    return f.finish()


def section_text(section):
    text = (ROOT / "config" / "default.toml").read_text()
    m = re.search(rf"^\[{re.escape(section)}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def cmd_kubeval(args):
    """kubernetes-validate --strict; its 'Couldn't find schema' warning is a failure except for CRDs."""
    f = Findings(f"kubernetes-validate {args.kube}")
    proc = subprocess.run([args.validator, "--strict", "-k", args.kube, *args.files], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    f.check(proc.returncode == 0, f"kubernetes-validate exits 0 for {len(args.files)} file(s)"
            + ("" if proc.returncode == 0 else f":\n{out}"))
    for line in out.splitlines():
        m = re.search(r"Couldn't find schema for kind (\S+)", line)
        if m:
            f.check(m.group(1) in CRD_KINDS, f"schema for {m.group(1)} (only {sorted(CRD_KINDS)} may lack one)")
    f.check(out.count(" passed for resource ") > 0, "some resources were validated")
    return f.finish()


def strict(schema):
    """An openAPIV3Schema as the API server applies it to known fields, with unknown fields an error
    (the server would silently prune them) unless the schema preserves them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if schema.get("x-kubernetes-int-or-string"):
            out["type"] = ["integer", "string"]
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_validator(kind):
    import jsonschema
    crd = yaml.safe_load((SCHEMAS / KEDA_CRDS[kind]).read_text())
    versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
    return crd["spec"]["group"], {v: jsonschema.Draft7Validator(strict(s)) for v, s in versions.items()}


def keda_findings(f, where, doc, validators):
    group, by_version = validators[doc["kind"]]
    api_group, _, version = doc["apiVersion"].partition("/")
    if not f.check(api_group == group and version in by_version, f"{where}: apiVersion {doc['apiVersion']} is served by the CRD"):
        return
    errors = sorted(by_version[version].iter_errors(doc), key=lambda e: list(e.path))
    f.check(not errors, f"{where}: valid against the {doc['kind']} CRD schema"
            + "".join(f"\n    {'/'.join(map(str, e.path))}: {e.message}" for e in errors))
    if doc["kind"] == "ScaledObject":
        keys = json.loads((SCHEMAS / "keda-aws-sqs-queue.json").read_text())
        for t in doc["spec"]["triggers"]:
            if t["type"] != "aws-sqs-queue":
                continue
            meta = t.get("metadata", {})
            unknown = set(meta) - set(keys["required"]) - set(keys["optional"])
            f.check(not unknown, f"{where}: aws-sqs-queue metadata keys are the scaler's (unknown: {sorted(unknown)})")
            f.check(all(meta.get(k) for k in keys["required"]), f"{where}: aws-sqs-queue has {keys['required']}")
            f.check(all(meta[k] in ("true", "false") for k in keys["booleans"] if k in meta)
                    and all(meta[k].isdigit() for k in keys["integers"] if k in meta),
                    f"{where}: aws-sqs-queue boolean and integer values parse")


def cmd_keda(args):
    """Every rendered KEDA object validates against the stored CRD schema; a planted typo must not."""
    f = Findings("KEDA objects against the CRDs")
    validators = {kind: crd_validator(kind) for kind in KEDA_CRDS}
    seen = {}
    for path in args.files:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc["kind"] in KEDA_CRDS:
                seen.setdefault(doc["kind"], doc)
                keda_findings(f, f"{Path(path).name} {doc['kind']} {doc['metadata']['name']}", doc, validators)
    f.check(set(seen) == set(KEDA_CRDS), f"rendered {sorted(seen)} (expected {sorted(KEDA_CRDS)})")
    if "ScaledObject" in seen:
        canary = Findings("canary")
        bad = copy.deepcopy(seen["ScaledObject"])
        bad["spec"]["triggers"][0]["authenticationRef"]["nme"] = "x"
        bad["spec"]["triggers"][0]["metadata"]["queueUrl"] = "wrong case"
        import io, contextlib
        with contextlib.redirect_stdout(io.StringIO()):
            keda_findings(canary, "canary", bad, validators)
        f.check(len(canary.failures) == 2, f"a ScaledObject with a typo'd field and a typo'd metadata key is rejected ({len(canary.failures)} findings)")
    return f.finish()


def cmd_kubeval_canary(args):
    """The validator must reject a Deployment with an unknown field, or the step above proves nothing."""
    f = Findings("kubernetes-validate canary")
    docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d and d["kind"] == "Deployment"]
    bad = copy.deepcopy(docs[0])
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 1
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        yaml.safe_dump(bad, tmp)
    proc = subprocess.run([args.validator, "--strict", "-k", args.kube, tmp.name], capture_output=True, text=True)
    os.unlink(tmp.name)
    f.check(proc.returncode != 0, "a Deployment with an unknown probe field is rejected")
    return f.finish()


# ---------------------------------------------------------------------------------------------
# ECS and IAM


def dockerfile_binary():
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r'^ENTRYPOINT \["([^"]+)"', text, re.M)
    return m.group(1) if m else None


def cmd_ecs(args):
    import botocore.session
    from botocore.validate import ParamValidator

    f = Findings("ECS and IAM")
    session = botocore.session.get_session()
    ecs_model = session.get_service_model("ecs")
    validator = ParamValidator()
    shapes = {
        "task-definition.json": (ecs_model, "RegisterTaskDefinition"),
        "service.json": (ecs_model, "CreateService"),
        "dlq-alarm.json": (session.get_service_model("cloudwatch"), "PutMetricAlarm"),
        "migrate-task-definition.json": (ecs_model, "RegisterTaskDefinition"),
        "migrate-run-task.json": (ecs_model, "RunTask"),
        "oldest-message-alarm.json": (session.get_service_model("cloudwatch"), "PutMetricAlarm"),
        "autoscaling-target.json": (session.get_service_model("application-autoscaling"), "RegisterScalableTarget"),
        "autoscaling-policy.json": (session.get_service_model("application-autoscaling"), "PutScalingPolicy"),
    }
    docs = {}
    for name, (model, op) in shapes.items():
        doc = json.loads((ECS / name).read_text())
        docs[name] = doc
        report = validator.validate(doc, model.operation_model(op).input_shape)
        f.check(not report.has_errors(), f"{name} is valid {model.service_name} {op} input"
                + ("" if not report.has_errors() else ":\n" + report.generate_report()))

    td = docs["task-definition.json"]
    ctr = next(c for c in td["containerDefinitions"] if c["name"] == "profile-worker")
    env = {e["name"]: e["value"] for e in ctr.get("environment", [])}
    grace = int(env.get("PROFILE_WORKER_SHUTDOWN__GRACE_SECONDS", "60"))
    f.check(td.get("requiresCompatibilities") == ["FARGATE"] and td.get("networkMode") == "awsvpc",
            "task definition targets Fargate (awsvpc)")
    f.check(grace < ctr.get("stopTimeout", 30) <= 120,
            f"stopTimeout {ctr.get('stopTimeout')} is above the grace {grace} s and within Fargate's 120 s")
    hc = ctr.get("healthCheck", {}).get("command", [])
    f.check(hc[:1] == ["CMD"] and hc[1:] == [dockerfile_binary(), "healthcheck"],
            f"health check is CMD-form {hc} calling the Dockerfile's binary")
    f.check(ctr.get("readonlyRootFilesystem") is True and ctr.get("user", "0").split(":")[0] not in ("0", "root"),
            "container runs non-root with a read-only root filesystem")
    f.check(ctr.get("linuxParameters", {}).get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
    secrets = {s["name"]: s["valueFrom"] for s in ctr.get("secrets", [])}
    # The daemon reads the database secret itself, so it can read it again after a rotation.
    f.check(env.get("DATABASE_SECRET_ARN", "").startswith("arn:aws:secretsmanager:") and "DATABASE_URL" not in secrets,
            "database credentials come from the secret DATABASE_SECRET_ARN names")
    f.check(not any(k in env for k in ("DATABASE_URL", "REDIS_URL", "BMX_REDIS_URL", "PROFILE_WORKER_DATABASE__URL")),
            "no connection URL in plain environment")
    port = int(env.get("PROFILE_WORKER_SERVER__LISTEN", "0.0.0.0:8080").rsplit(":", 1)[1])
    f.check(any(p["containerPort"] == port for p in ctr.get("portMappings", [])),
            f"port mapping exposes the side server port {port}")
    f.check(docs["service.json"]["taskDefinition"] == td["family"], "service runs the task definition's family")
    dockerfile_version_arg(f)

    ecs_scaling_and_metrics(f, docs, td, ctr, env, port)

    # Migrations: a one-off task of the same image and database secret, run before the service.
    mtd, run = docs["migrate-task-definition.json"], docs["migrate-run-task.json"]
    (mctr,) = mtd["containerDefinitions"]
    menv = {e["name"]: e["value"] for e in mctr.get("environment", [])}
    msecrets = {s["name"]: s["valueFrom"] for s in mctr.get("secrets", [])}
    f.check(mctr.get("command") == ["migrate"], f"migrate task runs `migrate`: {mctr.get('command')}")
    f.check(mctr["image"] == ctr["image"], "migrate task uses the service's image")
    f.check(menv.get("DATABASE_SECRET_ARN") == env.get("DATABASE_SECRET_ARN") and not msecrets,
            "migrate task reads the same database secret")
    f.check(mtd.get("taskRoleArn") == td.get("taskRoleArn"), "migrate task runs as the task role that may read the secret")
    f.check(all(env.get(k) == v for k, v in menv.items()), "migrate task environment agrees with the service's")
    f.check(mtd.get("executionRoleArn") == td.get("executionRoleArn"), "migrate task uses the service's execution role")
    f.check(mctr.get("readonlyRootFilesystem") is True and mctr.get("user") == ctr.get("user"), "migrate task is as locked down as the service")
    f.check(run["taskDefinition"] == mtd["family"] and run["cluster"] == docs["service.json"]["cluster"]
            and run["networkConfiguration"] == docs["service.json"]["networkConfiguration"],
            "migrate-run-task.json runs the migrate family in the service's cluster and network")

    if args.binary:
        extra = dict(env)
        extra.update({name: "redis://cache.invalid:6379" for name in secrets})
        mextra = {k: v for k, v in extra.items() if k in menv}
        proc = subprocess.run([args.binary, "config"], capture_output=True, text=True, env=clean_env(mextra))
        f.check(proc.returncode == 0, "profile-worker accepts the migrate task's environment"
                + ("" if proc.returncode == 0 else f": {proc.stderr.strip()}"))
        proc = subprocess.run([args.binary, "config"], capture_output=True, text=True, env=clean_env(extra))
        f.check(proc.returncode == 0, "profile-worker accepts the task definition's environment"
                + ("" if proc.returncode == 0 else f": {proc.stderr.strip()}"))
        if proc.returncode == 0:
            effective = tomllib.loads(proc.stdout)
            f.check(effective["shutdown"]["grace_seconds"] == grace, "the daemon sees the task's grace period")

    # IAM: every action is one the daemon (or its operator/ECS agent) uses; no wildcards; exact resources.
    queue = env.get("BMX_PROFILE_GENERATION_QUEUE_NAME")
    region = env.get("AWS_REGION")
    policies = {}
    for name, allowed in POLICY_ACTIONS.items():
        pol = json.loads((ECS / name).read_text())
        policies[name] = pol
        f.check(pol.get("Version") == "2012-10-17", f"{name} uses policy language 2012-10-17")
        for st in pol["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            f.check(st.get("Effect") == "Allow" and "NotAction" not in st and "NotResource" not in st,
                    f"{name} {st.get('Sid')}: plain Allow statement")
            for a in actions:
                f.check("*" not in a and a in allowed, f"{name} {st.get('Sid')}: action {a} is one that is used")
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            for r in resources:
                f.check(r != "*" and r.startswith("arn:aws:"), f"{name} {st.get('Sid')}: resource {r} is a specific ARN")
    task = policies["task-role-policy.json"]
    granted = {}
    for st in task["Statement"]:
        for a in st["Action"]:
            for r in st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]:
                granted.setdefault(a, set()).add(r)
    queue_arn = f"arn:aws:sqs:{region}:{account(td)}:{queue}"
    dlq_url = env.get("PROFILE_WORKER_QUEUE__DEAD_LETTER_URL", "")
    dlq_arn = f"arn:aws:sqs:{region}:{account(td)}:{dlq_url.rsplit('/', 1)[-1]}"
    for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"):
        f.check(granted.get(a) == {queue_arn}, f"{a} is granted on the queue {queue_arn} only")
    # Start-up resolves the DLQ named by the RedrivePolicy when queue.dead_letter_url is empty (the chart's default).
    f.check(granted.get("sqs:GetQueueUrl") == {queue_arn, dlq_arn},
            f"sqs:GetQueueUrl is granted on the queue and the DLQ only")
    f.check(granted.get("sqs:SendMessage") == {dlq_arn}, f"sqs:SendMessage is granted on the DLQ {dlq_arn} only")
    secret_arn = env.get("DATABASE_SECRET_ARN")
    f.check(granted.get("secretsmanager:GetSecretValue") == {secret_arn},
            f"secretsmanager:GetSecretValue is granted on the database secret {secret_arn} only")
    bedrock = granted.get("bedrock:InvokeModel", set())
    defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    for name, model_id in defaults["generator"]["models"].items():
        if re.match(r"^(us|eu|apac|global)\.", model_id):
            base = model_id.split(".", 1)[1]
            need = [f"arn:aws:bedrock:{region}:{account(td)}:inference-profile/{model_id}",
                    f"arn:aws:bedrock:*::foundation-model/{base}"]
        else:
            need = [f"arn:aws:bedrock:{region}::foundation-model/{model_id}"]
        for arn in need:
            f.check(arn in bedrock, f"bedrock:InvokeModel covers model {name} ({arn})")
    enqueue = policies["enqueue-policy.json"]["Statement"][0]
    f.check(enqueue["Resource"] == queue_arn, "enqueue policy targets the main queue")
    alarm = docs["dlq-alarm.json"]
    f.check(alarm["Dimensions"][0]["Value"] == dlq_url.rsplit("/", 1)[-1], "DLQ alarm watches the task's DLQ")
    return f.finish()


def ecs_scaling_and_metrics(f, docs, td, ctr, env, port):
    """Application Auto Scaling on backlog per task, the oldest-message alarm, the ADOT sidecar."""
    svc = docs["service.json"]
    queue = env.get("BMX_PROFILE_GENERATION_QUEUE_NAME")
    resource_id = f"service/{svc['cluster']}/{svc['serviceName']}"
    target, policy = docs["autoscaling-target.json"], docs["autoscaling-policy.json"]
    f.check(target["ResourceId"] == resource_id == policy["ResourceId"]
            and target["ScalableDimension"] == policy["ScalableDimension"] == "ecs:service:DesiredCount",
            f"auto scaling target and policy address {resource_id} DesiredCount")
    f.check(1 <= target["MinCapacity"] <= svc["desiredCount"] <= target["MaxCapacity"],
            "service desiredCount lies within the scaling range (and at least one task stays)")
    tt = policy["TargetTrackingScalingPolicyConfiguration"]
    conc = int(env.get("PROFILE_WORKER_CONSUMER__CONCURRENCY", "5"))
    f.check(policy["PolicyType"] == "TargetTrackingScaling" and tt["TargetValue"] == conc,
            f"target tracking keeps backlog per task at consumer.concurrency ({conc})")
    metrics = {m["Id"]: m for m in tt["CustomizedMetricSpecification"]["Metrics"]}
    stat = lambda i: metrics.get(i, {}).get("MetricStat", {}).get("Metric", {})
    dims = lambda i: {d["Name"]: d["Value"] for d in stat(i).get("Dimensions", [])}
    f.check(stat("visible").get("MetricName") == "ApproximateNumberOfMessagesVisible" and dims("visible") == {"QueueName": queue}
            and stat("inflight").get("MetricName") == "ApproximateNumberOfMessagesNotVisible" and dims("inflight") == {"QueueName": queue},
            f"backlog = visible + in-flight messages of {queue}")
    f.check(stat("tasks").get("MetricName") == "RunningTaskCount"
            and dims("tasks") == {"ClusterName": svc["cluster"], "ServiceName": svc["serviceName"]},
            "divided by the service's running tasks (Container Insights)")
    returned = [m for m in metrics.values() if m.get("ReturnData", True)]
    f.check(len(returned) == 1 and re.sub(r"\s", "", returned[0].get("Expression", "")) == "(visible+inflight)/tasks",
            "exactly one returned series: (visible + inflight) / tasks")
    old = docs["oldest-message-alarm.json"]
    f.check(old["Namespace"] == "AWS/SQS" and old["MetricName"] == "ApproximateAgeOfOldestMessage"
            and old["Dimensions"] == [{"Name": "QueueName", "Value": queue}] and old.get("AlarmActions"),
            f"alarm on the age of the oldest message of {queue}, with an action")

    side = next((c for c in td["containerDefinitions"] if c["name"] == "adot-collector"), None)
    if not f.check(side is not None, "task definition has the ADOT collector sidecar"):
        return
    f.check(side.get("essential") is False, "the sidecar is not essential (metrics never stop the worker)")
    senv = {e["name"]: e["value"] for e in side.get("environment", [])}
    text = (ECS / "adot-collector-config.yaml").read_text()
    f.check(senv.get("AOT_CONFIG_CONTENT") == text, "AOT_CONFIG_CONTENT equals deploy/ecs/adot-collector-config.yaml")
    cfg = yaml.safe_load(text)
    (scrape,) = cfg["receivers"]["prometheus"]["config"]["scrape_configs"]
    targets = [t for sc in scrape["static_configs"] for t in sc["targets"]]
    f.check(targets == [f"localhost:{port}"], f"collector scrapes the daemon's port in the task: {targets}")
    rules_job = re.search(r'job="([^"]+)"', RULES.read_text().split("Selector:", 1)[1]).group(1)
    f.check(scrape["job_name"] == rules_job, f"scrape job {scrape['job_name']} is the one the alert rules select ({rules_job})")
    pipe = cfg["service"]["pipelines"]["metrics"]
    f.check(pipe["receivers"] == ["prometheus"] and all(e in cfg["exporters"] for e in pipe["exporters"]),
            "the metrics pipeline runs from the prometheus receiver to a defined exporter")
    endpoint = cfg["exporters"]["prometheusremotewrite"]["endpoint"]
    m = re.match(r"https://aps-workspaces\.([a-z0-9-]+)\.amazonaws\.com/workspaces/(ws-[0-9a-f-]+)/api/v1/remote_write$", endpoint)
    region = env.get("AWS_REGION")
    allowed = {r for st in json.loads((ECS / "task-role-policy.json").read_text())["Statement"]
               if "aps:RemoteWrite" in st["Action"] for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])}
    f.check(bool(m) and m.group(1) == region and cfg["extensions"]["sigv4auth"]["region"] == region
            and f"arn:aws:aps:{region}:{account(td)}:workspace/{m.group(2)}" in allowed,
            f"remote write goes to an AMP workspace in {region} the task role may write to")


def account(td):
    return td["taskRoleArn"].split(":")[4]


# ---------------------------------------------------------------------------------------------
# Metrics, dashboard, alert rules


def declared_metrics():
    """Sample names the daemon can expose, from src/metrics.rs: family -> (sample names, labels).

    Each constructor call (`IntCounterVec::new(opts("name", "help"), &["label"])`) is cut out up
    to the next one; the first string after `opts(`/`hopts(` is the name, `&[...]` the labels."""
    text = (ROOT / "src" / "metrics.rs").read_text()
    prefix = re.search(r'const PREFIX: &str = "([^"]+)"', text).group(1)
    ctor = re.compile(r"\b(IntCounterVec|IntCounter|CounterVec|Counter|HistogramVec|Histogram|IntGaugeVec|IntGauge"
                      r"|GaugeVec|Gauge)::(?:new|with_opts)\(")
    starts = [(m.start(), m.group(1)) for m in ctor.finditer(text)]
    families = {}
    for i, (pos, kind) in enumerate(starts):
        chunk = text[pos:starts[i + 1][0] if i + 1 < len(starts) else len(text)]
        name = re.search(r'h?opts\(\s*"([a-z0-9_]+)"', chunk)
        if not name:
            continue
        full = f"{prefix}_{name.group(1)}"
        samples = {f"{full}_bucket", f"{full}_sum", f"{full}_count"} if kind.startswith("Histogram") else {full}
        labels = re.search(r"&\[([^\]]*)\]", chunk) if kind.endswith("Vec") else None
        label_names = set(re.findall(r'"([a-z_]+)"', labels.group(1))) if labels else set()
        if kind.startswith("Histogram"):
            label_names.add("le")
        help_text = re.search(r'h?opts\(\s*"[a-z0-9_]+",\s*"((?:[^"\\]|\\.)*)"', chunk)
        HELP[full] = help_text.group(1) if help_text else ""
        families[full] = (samples, label_names)
    return families


# Help text of each family, filled by declared_metrics(): it lists the closed label value sets.
HELP = {}


def family_of(sample):
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in HELP:
            return sample[: -len(suffix)]
    return sample


def scraped_metrics(path):
    names, labels = set(), {}
    for line in Path(path).read_text().splitlines():
        if not line or line.startswith("#"):
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                names.add(m.group(1))
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
        names.add(m.group(1))
        labels.setdefault(m.group(1), set()).update(re.findall(r'([a-zA-Z_]+)="', m.group(3) or ""))
    return names, labels


# Labels Prometheus or the scrape config attach, valid on any series.
TARGET_LABELS = {"job", "namespace", "instance", "pod", "container", "service", "endpoint"}


def referenced(expr):
    """(metric, {label: [values]}) for every profile_worker_, process_ and up selector in a PromQL expression."""
    out = []
    for m in re.finditer(r"(?<![a-z_])(profile_worker_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(\{([^}]*)\})?", expr):
        matchers = {}
        for label, op, value in re.findall(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(3) or ""):
            matchers[label] = value.split("|") if op == "=~" else [value]
        out.append((m.group(1), matchers))
    return out


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"dashboard panel '{p['title']}'", t["expr"]))
    return dash, out


def rule_exprs(path):
    doc = yaml.safe_load(Path(path).read_text())
    groups = doc["spec"]["groups"] if "spec" in doc else doc["groups"]
    return [(f"alert {r['alert']}", r["expr"]) for g in groups for r in g["rules"]]


def cmd_metrics(args):
    """Every metric the dashboard and the alerts use exists: in the real scrape, or declared in
    src/metrics.rs as a labelled family (those show up only once a label set was used)."""
    f = Findings("dashboard and alert metrics")
    families = declared_metrics()
    scraped, scraped_labels = scraped_metrics(args.scrape)
    f.check(len(families) >= 17, f"src/metrics.rs declares {len(families)} families (docs/decisions.md, Observability, lists 17)")
    for fam, (samples, _) in families.items():
        # Unlabelled families must be in the real scrape: proves the parse of metrics.rs matches reality.
        if not families[fam][1] - {"le"}:
            f.check(samples <= scraped, f"unlabelled family {fam} is in the real scrape")
    known = {}
    for fam, (samples, label_names) in families.items():
        for s in samples:
            known[s] = label_names
    for name in scraped:
        known.setdefault(name, set()).update(scraped_labels.get(name, set()))
    known.setdefault("up", set())  # synthesized by Prometheus for every target
    exprs = dashboard_exprs()[1] + rule_exprs(args.rules)
    used = set()
    for where, expr in exprs:
        refs = referenced(expr)
        f.check(bool(refs), f"{where} queries a profile_worker_, process_ or up metric")
        for metric, matchers in refs:
            used.add(metric)
            if f.check(metric in known, f"{where}: {metric} exists"):
                label_names = set(matchers)
                bad = label_names - known[metric] - TARGET_LABELS
                f.check(not bad, f"{where}: {metric} has labels {sorted(label_names - TARGET_LABELS)}"
                        + (f" (unknown: {sorted(bad)})" if bad else ""))
                # Values of the daemon's own labels must be ones its help text lists.
                help_words = set(re.findall(r"[a-z_]+", HELP.get(family_of(metric), "")))
                for label, values in matchers.items():
                    if label in known[metric] and label != "le":
                        for v in values:
                            f.check(v in help_words, f"{where}: {metric}{{{label}=\"{v}\"}} is a documented value")
    # Every family listed in docs/decisions.md "Observability" is on the dashboard.
    for fam, (samples, _) in families.items():
        f.check(bool(samples & used) or fam.endswith("build_info") and fam in used,
                f"dashboard or alerts use {fam}")
    return f.finish()


def cmd_dashboard(args):
    f = Findings("Grafana dashboard")
    dash, exprs = dashboard_exprs()
    ids = [p["id"] for p in dash["panels"]]
    f.check(len(ids) == len(set(ids)), "panel ids are unique")
    f.check(dash.get("uid") == "profile-worker" and dash.get("schemaVersion", 0) >= 36, "uid and schemaVersion set")
    f.check(any(i.get("pluginId") == "prometheus" for i in dash.get("__inputs", [])), "importable (__inputs datasource)")
    names = {v["name"] for v in dash["templating"]["list"]}
    f.check({"datasource", "job", "namespace"} <= names, "datasource, job and namespace variables")
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        g = p["gridPos"]
        f.check(g["x"] + g["w"] <= 24, f"panel '{p['title']}' fits the 24-column grid")
        f.check(p.get("datasource", {}).get("uid") == "${datasource}", f"panel '{p['title']}' uses the datasource variable")
        for t in p["targets"]:
            f.check('job=~"$job"' in t["expr"] and 'namespace=~"$namespace"' in t["expr"],
                    f"panel '{p['title']}' {t['refId']} filters by $job and $namespace")
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("outcome", "in flight", "queue depth", "latency", "generator", "tokens", "cost", "cache hit",
                  "database pool"):
        f.check(topic in titles, f"a panel covers '{topic}'")
    return f.finish()


class BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks, as they are written in the chart."""


BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def cmd_rules_sync(args):
    """deploy/prometheus/ holds the chart's rules rendered for a plain Prometheus (job="profile-worker")."""
    f = Findings("plain alert rules file")
    docs = render(args.helm, "--set", "config.queue.name=q", "--set", "metrics.prometheusRule.enabled=true",
                  "--set", 'metrics.prometheusRule.selector=job="profile-worker"')
    rule = one(by_kind(docs), "PrometheusRule")
    text = ("# Generated from helm/profile-worker (templates/prometheusrule.yaml) by `scripts/deploy-check --write-rules`;\n"
            "# for Prometheus without the operator. Selector: job=\"profile-worker\"; edit the chart, not this file.\n"
            + yaml.dump({"groups": rule["spec"]["groups"]}, Dumper=BlockDumper, sort_keys=False, width=120))
    if args.write:
        RULES.parent.mkdir(parents=True, exist_ok=True)
        RULES.write_text(text)
        print(f"wrote {RULES.relative_to(ROOT)}")
    f.check(RULES.exists() and RULES.read_text() == text,
            f"{RULES.relative_to(ROOT)} matches the chart's rules (run scripts/deploy-check --write-rules)")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    for a in ("ProfileWorkerNotScraped", "ProfileWorkerMessagesDeadLettered", "ProfileWorkerNoProgress", "ProfileWorkerErrorRatioHigh",
              "ProfileWorkerPollLoopUnhealthy", "ProfileWorkerBedrockThrottling", "ProfileWorkerCostPerHourHigh"):
        f.check(a in alerts, f"alert {a} defined")
    return f.finish()


def cmd_adapter_rules(args):
    """The prometheus-adapter rule behind the HPA's external metric, run by promtool: its query with
    the adapter's placeholders filled in must give visible + in-flight of one queue reported by two
    pods (not twice, not the delayed messages, not another namespace)."""
    f = Findings("prometheus-adapter external rule")
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = doc["rules"]["external"]
    f.check(rule["name"]["as"] == "profile_worker_queue_backlog", "rule serves profile_worker_queue_backlog")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = [m["external"]["metric"]["name"] for m in values["autoscaling"]["hpa"]["metrics"] if m["type"] == "External"]
    f.check(names == [rule["name"]["as"]], f"the chart's default HPA metric is the rule's ({names})")
    query = (rule["metricsQuery"].replace("<<.Series>>", "profile_worker_queue_messages")
             .replace("<<.LabelMatchers>>", 'namespace="books"').replace("<<.GroupBy>>", "namespace"))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": "profile_worker_queue_backlog", "expr": query}]}]}))
    series = []
    for pod in ("a", "b"):
        for state, value in (("visible", 7), ("in_flight", 3), ("delayed", 4)):
            series.append({"series": f'profile_worker_queue_messages{{namespace="books",pod="{pod}",state="{state}"}}',
                           "values": f"{value}x5"})
    series.append({"series": 'profile_worker_queue_messages{namespace="other",pod="c",state="visible"}', "values": "100x5"})
    (work / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": "profile_worker_queue_backlog", "eval_time": "2m",
                              "exp_samples": [{"labels": 'profile_worker_queue_backlog{namespace="books"}', "value": 10}]}]}]}))
    proc = subprocess.run([args.promtool, "test", "rules", "test.yaml"], cwd=work, capture_output=True, text=True)
    f.check(proc.returncode == 0, "promtool: backlog of two pods reporting 7 visible, 3 in flight, 4 delayed is 10"
            + ("" if proc.returncode == 0 else f":\n{proc.stdout}{proc.stderr}"))
    return f.finish()


def cmd_image_labels(args):
    """The built image's OCI labels: source, version (= Cargo.toml), created (RFC 3339), revision."""
    f = Findings("image OCI labels")
    labels = json.loads(Path(args.labels).read_text())
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    f.check(labels.get("org.opencontainers.image.version") == version, f"version label is Cargo.toml's {version}: {labels}")
    f.check(labels.get("org.opencontainers.image.source", "").startswith("https://"), "source label is a URL")
    f.check(bool(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", labels.get("org.opencontainers.image.created", ""))),
            "created label is an RFC 3339 time")
    f.check(labels.get("org.opencontainers.image.revision") == args.commit, f"revision label is the commit {args.commit}")
    return f.finish()


def dockerfile_version_arg(f):
    """The Dockerfile's default version label must follow Cargo.toml."""
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    m = re.search(r"^ARG PROFILE_WORKER_VERSION=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    f.check(bool(m) and m.group(1) == version, f"Dockerfile ARG PROFILE_WORKER_VERSION = Cargo.toml version {version}")
    f.check("FROM scratch" in (ROOT / "Dockerfile").read_text(), "the runtime stage is FROM scratch (no shell, no package manager)")


def cmd_ready(args):
    """Judges a /ready body: ready, and every check it reports (database, queue when wired) passes."""
    f = Findings("readiness body")
    body = json.loads(Path(args.body).read_text())
    checks = body.get("checks", {})
    f.check(body.get("ready") is True, f"ready is true: {json.dumps(body)}")
    f.check(isinstance(checks, dict), "checks is an object")
    for name, c in checks.items():
        f.check(c.get("ok") or not c.get("required"), f"check {name} passes or is optional: {c}")
    for name in ("database", "queue"):
        if name in checks:
            f.check(checks[name]["ok"], f"{name} check reported and ok")
    print(f"  reported checks: {sorted(checks) or 'none yet (run does not register any)'}")
    return f.finish()


def cmd_smoke_args(args):
    """Prints, NUL-separated, the podman run options the rendered Deployment implies."""
    docs = [d for d in yaml.safe_load_all(Path(args.rendered).read_text()) if d]
    kinds = by_kind(docs)
    dep, cm = one(kinds, "Deployment"), one(kinds, "ConfigMap")
    spec = dep["spec"]["template"]["spec"]
    (ctr,) = spec["containers"]
    sc, psc = ctr.get("securityContext", {}), spec.get("securityContext", {})
    user = sc.get("runAsUser", psc.get("runAsUser"))
    group = sc.get("runAsGroup", psc.get("runAsGroup"))
    out = [f"--user={user}:{group}"]
    if sc.get("readOnlyRootFilesystem"):
        out.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        out.append(f"--cap-drop={cap}")
    if sc.get("allowPrivilegeEscalation") is False:
        out.append("--security-opt=no-new-privileges")
    cfg_dir = Path(args.workdir) / "config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    for key, value in cm["data"].items():
        (cfg_dir / key).write_text(value)
    for m in ctr.get("volumeMounts", []):
        vol = next(v for v in spec["volumes"] if v["name"] == m["name"])
        if "configMap" in vol:
            out.append(f"--volume={cfg_dir}:{m['mountPath']}:ro")
        elif "emptyDir" in vol:
            out.append(f"--tmpfs={m['mountPath']}:rw,size=16m")
    for e in ctr.get("env", []):
        if "value" in e:
            out.append(f"--env={e['name']}={e['value']}")
        else:
            # Secret-backed variables come from the caller's environment (the local test services).
            out.append(f"--env={e['name']}")
    grace = spec["terminationGracePeriodSeconds"]
    sys.stdout.write("".join(f"{item}\0" for item in out + ["--", str(grace), *ctr.get("args", [])]))
    return 0


def cmd_hook_args(args):
    """Prints, NUL-separated, the migration hook Job's container args, with its ConfigMap written
    under `workdir` and --config pointed there (to run the hook's command with the local binary)."""
    docs = [d for d in yaml.safe_load_all(Path(args.rendered).read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "Job" and {"pre-install", "pre-upgrade"} <= hook_of(d)]
    spec = job["spec"]["template"]["spec"]
    (ctr,) = spec["containers"]
    vol = next(v for v in spec["volumes"] if v["name"] == "config")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == vol["configMap"]["name"])
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "config")["mountPath"]
    out_dir = Path(args.workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, value in cm["data"].items():
        (out_dir / key).write_text(value)
    out = [a.replace(mount.rstrip("/") + "/", str(out_dir) + "/") for a in ctr["args"]]
    sys.stdout.write("".join(f"{a}\0" for a in out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wiring"); s.add_argument("--helm", required=True); s.add_argument("--binary")
    s.set_defaults(fn=cmd_wiring)
    s = sub.add_parser("schema-sync"); s.set_defaults(fn=cmd_schema_sync)
    s = sub.add_parser("kubeval"); s.add_argument("--validator", required=True); s.add_argument("--kube", required=True)
    s.add_argument("files", nargs="+"); s.set_defaults(fn=cmd_kubeval)
    s = sub.add_parser("kubeval-canary"); s.add_argument("--validator", required=True); s.add_argument("--kube", required=True)
    s.add_argument("file"); s.set_defaults(fn=cmd_kubeval_canary)
    s = sub.add_parser("keda"); s.add_argument("files", nargs="+"); s.set_defaults(fn=cmd_keda)
    s = sub.add_parser("ecs"); s.add_argument("--binary"); s.set_defaults(fn=cmd_ecs)
    s = sub.add_parser("metrics"); s.add_argument("--scrape", required=True); s.add_argument("--rules", default=str(RULES))
    s.set_defaults(fn=cmd_metrics)
    s = sub.add_parser("dashboard"); s.set_defaults(fn=cmd_dashboard)
    s = sub.add_parser("rules-sync"); s.add_argument("--helm", required=True); s.add_argument("--write", action="store_true")
    s.set_defaults(fn=cmd_rules_sync)
    s = sub.add_parser("adapter-rules"); s.add_argument("--promtool", required=True); s.add_argument("--workdir", required=True)
    s.set_defaults(fn=cmd_adapter_rules)
    s = sub.add_parser("image-labels"); s.add_argument("labels"); s.add_argument("--commit", required=True)
    s.set_defaults(fn=cmd_image_labels)
    s = sub.add_parser("ready"); s.add_argument("body"); s.set_defaults(fn=cmd_ready)
    s = sub.add_parser("hook-args"); s.add_argument("rendered"); s.add_argument("workdir"); s.set_defaults(fn=cmd_hook_args)
    s = sub.add_parser("smoke-args"); s.add_argument("rendered"); s.add_argument("workdir"); s.set_defaults(fn=cmd_smoke_args)
    args = p.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
