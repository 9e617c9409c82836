//! Typed configuration: figment layers, validation once at start-up, secrets that never print.
//!
//! Layers, later wins: built-in defaults (`config/default.toml`, embedded) → the file given by
//! `--config` / `PROFILE_WORKER_CONFIG` → `PROFILE_WORKER_<SECTION>__<KEY>` environment variables →
//! the original system's variable names (`DATABASE_URL`, `REDIS_URL`, …). Every problem is reported
//! with the key, the offending value and the layer it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Serialize};

/// The built-in defaults: the same file operators read.
pub const DEFAULTS: &str = include_str!("../config/default.toml");
/// Prefix of the daemon's own environment variables.
pub const ENV_PREFIX: &str = "PROFILE_WORKER_";
/// `PROFILE_WORKER_*` variables that are not configuration keys: the config file path, and the
/// commit that container builds hand to `build.rs`.
const NOT_KEYS: &[&str] = &["PROFILE_WORKER_CONFIG", "PROFILE_WORKER_GIT_COMMIT"];
const ENV_NAME: &str = "`PROFILE_WORKER_` environment variable(s)";

/// Environment variables of the original system, mapped to our keys. Later entries win, so the
/// `BMX_` spellings (which the original preferred) override the plain ones.
const ALIASES: &[(&str, &str)] = &[
    ("PROFILE_GENERATION_QUEUE_NAME", "queue.name"),
    ("BMX_PROFILE_GENERATION_QUEUE_NAME", "queue.name"),
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "cache.redis_url"),
    ("BMX_REDIS_URL", "cache.redis_url"),
    ("ENTITY_PROFILE_MODEL", "generator.model"),
    ("AWS_REGION", "aws.region"),
];

/// The whole configuration. Unknown keys anywhere are rejected.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub server: ServerConfig,
    pub shutdown: ShutdownConfig,
    pub aws: AwsConfig,
    pub queue: QueueConfig,
    pub consumer: ConsumerConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub generator: GeneratorConfig,
    pub staleness: StalenessConfig,
    pub jobs: JobsConfig,
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub region: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub url: String,
    pub name: String,
    pub dead_letter_url: String,
    pub endpoint_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub concurrency: u32,
    pub wait_seconds: u32,
    pub visibility_timeout: u32,
    pub max_attempts: u32,
    pub retry_base_seconds: u32,
    pub retry_cap_seconds: u32,
    pub unready_after: u32,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub pool_size: u32,
    pub statement_timeout_ms: u64,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub redis_url: SecretUrl,
    pub local_ttl_seconds: u64,
    pub redis_ttl_seconds: u64,
    pub redis_timeout_ms: u64,
    pub lock_wait_ms: u64,
}

/// Which generator produces profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorBackend {
    Bedrock,
    Offline,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    pub backend: GeneratorBackend,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    pub endpoint_url: String,
    pub call_timeout_seconds: u64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub offline_latency_ms: u64,
    pub models: BTreeMap<String, String>,
    pub prices: BTreeMap<String, Price>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StalenessConfig {
    pub model_change: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub stale_after_seconds: u64,
    pub check_interval_seconds: u64,
}

/// The operator console on the side server (see the README's "Operator console").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Bearer token that enables the console's actions; empty (and no `token_file`) = read-only.
    pub token: Secret,
    /// File holding the token (a mounted secret); trailing whitespace is ignored.
    pub token_file: String,
    /// Path prefix the console is served under behind an ingress (`/ops`); empty = none.
    pub path_prefix: String,
    /// Name this replica publishes its in-flight work under; empty = the host name.
    pub replica: String,
}

impl ConsoleConfig {
    /// The action token from `token` or `token_file`; `None` leaves the actions off.
    pub fn resolve_token(&self) -> Result<Option<String>, String> {
        let token = if !self.token_file.is_empty() {
            std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("cannot read {}: {e}", self.token_file))?
                .trim_end()
                .to_string()
        } else {
            self.token.expose().to_string()
        };
        Ok((!token.is_empty()).then_some(token))
    }
}

/// A secret value that never reaches Debug output, logs or `config`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "***" }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

/// A connection URL whose password never reaches Debug output, logs, `config` or metrics.
/// Only [`SecretUrl::expose`] hands out the real value, for the one place that connects.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL with its password replaced by `***`; an unparsable value is hidden whole.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Replaces the password of a URL with `***`; hides the whole value when it does not parse.
pub fn redact_url(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Cannot fail for a URL that already has a password.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "***".to_string(),
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// One configuration problem, already phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// Invalid configuration: every problem found, each naming its key and source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// Which parts a subcommand needs, so `config` or `version` do not demand a queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub queue: bool,
    pub database: bool,
}

/// A loaded configuration together with the layers it came from (for error messages).
pub struct Loaded {
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// Checks that the settings a subcommand needs are present, naming the missing keys.
    pub fn require(&self, needs: Needs) -> Result<(), ConfigError> {
        let c = &self.config;
        let mut problems = Vec::new();
        if needs.queue && c.queue.url.is_empty() && c.queue.name.is_empty() {
            problems.push(Problem {
                key: "queue.url".into(),
                message: "queue.url or queue.name must be set (PROFILE_WORKER_QUEUE__URL, \
                          BMX_PROFILE_GENERATION_QUEUE_NAME or PROFILE_GENERATION_QUEUE_NAME)"
                    .into(),
            });
        }
        if needs.database && c.database.url.is_empty() {
            problems.push(Problem {
                key: "database.url".into(),
                message: "database.url must be set (PROFILE_WORKER_DATABASE__URL or DATABASE_URL)"
                    .into(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The effective configuration as TOML with every secret redacted.
    pub fn redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(&self.config).expect("config serialises to TOML");
        redact_secret_keys(&mut value);
        toml::to_string_pretty(&value).expect("TOML value serialises")
    }

    /// Where the value of a dotted key came from, e.g. `PROFILE_WORKER_CONSUMER__CONCURRENCY`.
    pub fn source_of(&self, key: &str) -> String {
        describe_source(self.figment.find_metadata(key), key)
    }
}

/// Replaces the value of any key named like a secret, whatever its section.
fn redact_secret_keys(value: &mut toml::Value) {
    if let toml::Value::Table(table) = value {
        for (key, v) in table.iter_mut() {
            let lower = key.to_ascii_lowercase();
            if ["secret", "password", "token"]
                .iter()
                .any(|s| lower.contains(s))
            {
                *v = toml::Value::String("***".into());
            } else {
                redact_secret_keys(v);
            }
        }
    }
}

/// `PROFILE_WORKER_<SECTION>__<KEY>` variables, read from the environment the caller passes in
/// (figment's own `Env` reads the process environment, which tests cannot isolate).
struct PrefixedEnv {
    vars: Vec<(String, String)>,
}

impl Provider for PrefixedEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, raw) in &self.vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            insert_path(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// An environment variable of the original system feeding one of our keys.
struct Alias {
    var: &'static str,
    key: &'static str,
    value: String,
}

impl Provider for Alias {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let (section, field) = self
            .key
            .split_once('.')
            .expect("alias keys are section.field");
        let mut inner = Dict::new();
        inner.insert(field.to_string(), Value::from(self.value.clone()));
        let mut outer = Dict::new();
        outer.insert(section.to_string(), Value::from(inner));
        Ok(Profile::Default.collect(outer))
    }
}

fn describe_source(metadata: Option<&Metadata>, key: &str) -> String {
    let Some(md) = metadata else {
        return "unknown source".into();
    };
    if md.name == ENV_NAME {
        return format!(
            "{ENV_PREFIX}{}",
            key.replace('.', "__").to_ascii_uppercase()
        );
    }
    if let Some(var) = md.name.strip_prefix("environment variable ") {
        return var.to_string();
    }
    match &md.source {
        Some(Source::File(path)) => path.display().to_string(),
        Some(Source::Code(_)) => "built-in defaults".into(),
        None if md.name == "TOML source string" => "built-in defaults".into(),
        Some(Source::Custom(s)) => s.clone(),
        _ => md.name.to_string(),
    }
}

/// Renders a figment value for an error message (strings quoted, as in TOML).
fn render_value(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("{c:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_i128()
            .map(|i| i.to_string())
            .or_else(|| n.to_u128().map(|u| u.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_else(|| format!("{n:?}")),
        Value::Empty(_, _) => "(empty)".into(),
        Value::Dict(_, _) => "{…}".into(),
        Value::Array(_, _) => "[…]".into(),
    }
}

/// Loads and validates the configuration from the real process environment.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, &env)
}

/// Loads and validates the configuration from an explicit environment (tests pass their own).
pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    let file: Option<PathBuf> = file.map(Path::to_path_buf).or_else(|| {
        env.iter()
            .find(|(k, _)| k == "PROFILE_WORKER_CONFIG")
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    });
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![Problem {
                    key: "--config".into(),
                    message: format!("config file {} does not exist", path.display()),
                }],
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(PrefixedEnv {
        vars: env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()))
            .cloned()
            .collect(),
    });
    for (var, key) in ALIASES {
        if let Some((_, value)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) {
            figment = figment.merge(Alias {
                var,
                key,
                value: value.clone(),
            });
        }
    }

    let config: Config = figment.extract().map_err(|e| ConfigError {
        problems: e
            .into_iter()
            .map(|err| extraction_problem(&figment, err))
            .collect(),
    })?;
    let loaded = Loaded { config, figment };
    let problems = validate(&loaded);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError { problems })
    }
}

fn extraction_problem(figment: &Figment, err: figment::Error) -> Problem {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let detail = match &err.kind {
        Kind::UnknownField(field, expected) => {
            path.push(field.clone());
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            "missing key".to_string()
        }
        other => other.to_string(),
    };
    let key = path.join(".");
    let source = describe_source(figment.find_metadata(&key).or(err.metadata.as_ref()), &key);
    let message = match figment.find_value(&key) {
        Ok(v) if !matches!(v, Value::Dict(..)) => {
            format!(
                "{key} = {} (from {source}): {detail}",
                shown(&key, &render_value(&v))
            )
        }
        _ => format!("{key} (from {source}): {detail}"),
    };
    Problem { key, message }
}

/// Values of secret keys are never echoed back, not even in error messages.
fn shown(key: &str, rendered: &str) -> String {
    if key.ends_with("url") {
        format!("{:?}", redact_url(rendered.trim_matches('"')))
    } else if ["secret", "password", "token"]
        .iter()
        .any(|s| key.contains(s))
    {
        "\"***\"".into()
    } else {
        rendered.to_string()
    }
}

/// Range and format checks, all of them, so one start-up reports every problem.
fn validate(loaded: &Loaded) -> Vec<Problem> {
    let c = &loaded.config;
    let mut checks = Checks {
        loaded,
        problems: Vec::new(),
    };

    if tracing_subscriber::EnvFilter::try_new(&c.log.level).is_err() {
        checks.fail(
            "log.level",
            "is not a valid tracing filter (e.g. \"info,profile_worker=debug\")",
        );
    }
    checks.range("shutdown.grace_seconds", c.shutdown.grace_seconds, 0, 3600);
    checks.url("queue.url", &c.queue.url, &["http", "https"]);
    checks.url(
        "queue.dead_letter_url",
        &c.queue.dead_letter_url,
        &["http", "https"],
    );
    checks.url(
        "queue.endpoint_url",
        &c.queue.endpoint_url,
        &["http", "https"],
    );
    checks.range(
        "consumer.concurrency",
        c.consumer.concurrency.into(),
        1,
        100,
    );
    checks.range(
        "consumer.wait_seconds",
        c.consumer.wait_seconds.into(),
        0,
        20,
    );
    checks.range(
        "consumer.visibility_timeout",
        c.consumer.visibility_timeout.into(),
        6,
        43_200,
    );
    checks.range(
        "consumer.max_attempts",
        c.consumer.max_attempts.into(),
        1,
        1000,
    );
    checks.range(
        "consumer.retry_base_seconds",
        c.consumer.retry_base_seconds.into(),
        1,
        43_200,
    );
    checks.range(
        "consumer.retry_cap_seconds",
        c.consumer.retry_cap_seconds.into(),
        c.consumer.retry_base_seconds.into(),
        43_200,
    );
    checks.range(
        "consumer.unready_after",
        c.consumer.unready_after.into(),
        1,
        1000,
    );
    checks.range(
        "consumer.max_body_bytes",
        c.consumer.max_body_bytes as u64,
        64,
        1_048_576,
    );
    checks.url(
        "database.url",
        c.database.url.expose(),
        &["postgres", "postgresql"],
    );
    checks.range("database.pool_size", c.database.pool_size.into(), 1, 200);
    checks.range(
        "database.statement_timeout_ms",
        c.database.statement_timeout_ms,
        0,
        86_400_000,
    );
    checks.url(
        "cache.redis_url",
        c.cache.redis_url.expose(),
        &["redis", "rediss", "unix"],
    );
    checks.range(
        "cache.local_ttl_seconds",
        c.cache.local_ttl_seconds,
        0,
        86_400,
    );
    checks.range(
        "cache.redis_ttl_seconds",
        c.cache.redis_ttl_seconds,
        1,
        86_400,
    );
    checks.range(
        "cache.redis_timeout_ms",
        c.cache.redis_timeout_ms,
        1,
        60_000,
    );
    checks.range("cache.lock_wait_ms", c.cache.lock_wait_ms, 0, 600_000);
    if c.generator.model.trim().is_empty() {
        checks.fail(
            "generator.model",
            "must name a model (haiku, sonnet, opus) or a Bedrock model id",
        );
    }
    if let Some(t) = c.generator.temperature
        && !(0.0..=1.0).contains(&t)
    {
        checks.fail("generator.temperature", "must be within 0.0..=1.0");
    }
    checks.url(
        "generator.endpoint_url",
        &c.generator.endpoint_url,
        &["http", "https"],
    );
    checks.range(
        "generator.call_timeout_seconds",
        c.generator.call_timeout_seconds,
        1,
        3600,
    );
    checks.range(
        "generator.max_attempts",
        c.generator.max_attempts.into(),
        1,
        20,
    );
    checks.range(
        "generator.retry_base_ms",
        c.generator.retry_base_ms,
        1,
        600_000,
    );
    checks.range(
        "generator.offline_latency_ms",
        c.generator.offline_latency_ms,
        0,
        600_000,
    );
    for (model, price) in &c.generator.prices {
        if !(price.input >= 0.0 && price.output >= 0.0) {
            checks.fail(
                &format!("generator.prices.\"{model}\""),
                "prices must be >= 0",
            );
        }
    }
    checks.range(
        "jobs.check_interval_seconds",
        c.jobs.check_interval_seconds,
        1,
        86_400,
    );
    if !c.console.token.expose().is_empty() && !c.console.token_file.is_empty() {
        checks.fail(
            "console.token_file",
            "set console.token or console.token_file, not both",
        );
    } else if let Err(e) = c.console.resolve_token() {
        checks.fail("console.token_file", &e);
    } else if let Ok(Some(token)) = c.console.resolve_token()
        && token.len() < 16
    {
        checks.fail("console.token", "must be at least 16 characters");
    }
    let prefix = &c.console.path_prefix;
    if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
        checks.fail(
            "console.path_prefix",
            "must start with '/' and not end with one (e.g. \"/ops\")",
        );
    }
    checks.problems
}

struct Checks<'a> {
    loaded: &'a Loaded,
    problems: Vec<Problem>,
}

impl Checks<'_> {
    fn fail(&mut self, key: &str, rule: &str) {
        let source = self.loaded.source_of(key);
        let value = self
            .loaded
            .figment
            .find_value(key)
            .map(|v| shown(key, &render_value(&v)))
            .unwrap_or_else(|_| "(unset)".into());
        self.problems.push(Problem {
            key: key.to_string(),
            message: format!("{key} = {value} (from {source}): {rule}"),
        });
    }

    fn range(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.fail(key, &format!("must be {min}..={max}"));
        }
    }

    fn url(&mut self, key: &str, value: &str, schemes: &[&str]) {
        if value.is_empty() {
            return;
        }
        match url::Url::parse(value) {
            Ok(u) if schemes.contains(&u.scheme()) => {}
            Ok(u) => self.fail(
                key,
                &format!(
                    "scheme {:?} is not one of {}",
                    u.scheme(),
                    schemes.join(", ")
                ),
            ),
            Err(e) => self.fail(key, &format!("is not a valid URL ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load_from(None, &[]).expect("defaults load");
        assert_eq!(loaded.config.consumer.concurrency, 5);
        assert_eq!(loaded.config.consumer.wait_seconds, 20);
        assert_eq!(
            loaded.source_of("consumer.concurrency"),
            "built-in defaults"
        );
    }

    #[test]
    fn env_out_of_range_names_key_value_and_variable() {
        let err = load_from(None, &env(&[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "0")]))
            .err()
            .expect("rejected");
        assert_eq!(
            err.problems[0].message,
            "consumer.concurrency = 0 (from PROFILE_WORKER_CONSUMER__CONCURRENCY): must be 1..=100"
        );
    }

    #[test]
    fn console_settings_are_checked_and_the_token_never_echoed() {
        let keys = |pairs: &[(&str, &str)]| -> Vec<String> {
            load_from(None, &env(pairs))
                .err()
                .map(|e| e.problems.into_iter().map(|p| p.key).collect())
                .unwrap_or_default()
        };
        let short = load_from(None, &env(&[("PROFILE_WORKER_CONSOLE__TOKEN", "short")]))
            .err()
            .expect("rejected");
        assert_eq!(short.problems[0].key, "console.token");
        assert!(!short.problems[0].message.contains("short"), "{short:?}");
        assert_eq!(
            keys(&[("PROFILE_WORKER_CONSOLE__TOKEN_FILE", "/nonexistent/token")]),
            ["console.token_file"]
        );
        assert_eq!(
            keys(&[("PROFILE_WORKER_CONSOLE__PATH_PREFIX", "ops/")]),
            ["console.path_prefix"]
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-a-file-0123456789\n").unwrap();
        let path = file.path().display().to_string();
        let loaded =
            load_from(None, &env(&[("PROFILE_WORKER_CONSOLE__TOKEN_FILE", &path)])).unwrap();
        assert_eq!(
            loaded.config.console.resolve_token().unwrap().as_deref(),
            Some("from-a-file-0123456789")
        );
        assert_eq!(
            keys(&[
                ("PROFILE_WORKER_CONSOLE__TOKEN_FILE", &path),
                ("PROFILE_WORKER_CONSOLE__TOKEN", "another-token-0123456789"),
            ]),
            ["console.token_file"]
        );
    }

    #[test]
    fn unknown_env_key_is_rejected() {
        let err = load_from(None, &env(&[("PROFILE_WORKER_CONSUMER__CONCURENCY", "3")]))
            .err()
            .expect("rejected");
        let msg = &err.problems[0].message;
        assert!(msg.contains("consumer.concurency"), "{msg}");
        assert!(msg.contains("PROFILE_WORKER_CONSUMER__CONCURENCY"), "{msg}");
        assert!(msg.contains("unknown key"), "{msg}");
    }

    #[test]
    fn aliases_feed_keys_and_bmx_wins() {
        let loaded = load_from(
            None,
            &env(&[
                ("PROFILE_GENERATION_QUEUE_NAME", "plain"),
                ("BMX_PROFILE_GENERATION_QUEUE_NAME", "bmx"),
                ("DATABASE_URL", "postgres://u:hunter2@db/app"),
                ("REDIS_URL", "redis://cache:6379/0"),
                ("ENTITY_PROFILE_MODEL", "sonnet"),
                ("AWS_REGION", "us-west-2"),
            ]),
        )
        .expect("loads");
        let c = &loaded.config;
        assert_eq!(c.queue.name, "bmx");
        assert_eq!(c.database.url.expose(), "postgres://u:hunter2@db/app");
        assert_eq!(c.cache.redis_url.expose(), "redis://cache:6379/0");
        assert_eq!(c.generator.model, "sonnet");
        assert_eq!(c.aws.region, "us-west-2");
        assert_eq!(
            loaded.source_of("queue.name"),
            "BMX_PROFILE_GENERATION_QUEUE_NAME"
        );
    }

    #[test]
    fn bad_database_url_is_reported_without_its_password() {
        let err = load_from(None, &env(&[("DATABASE_URL", "mysql://u:hunter2@db/app")]))
            .err()
            .expect("rejected");
        let msg = &err.problems[0].message;
        assert!(
            msg.starts_with("database.url = \"mysql://u:***@db/app\" (from DATABASE_URL)"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"));
    }

    #[test]
    fn secrets_never_print() {
        let loaded = load_from(
            None,
            &env(&[
                ("DATABASE_URL", "postgres://u:hunter2@db/app"),
                ("BMX_REDIS_URL", "redis://:s3cr3t@cache:6379"),
            ]),
        )
        .expect("loads");
        let debug = format!("{:?}", loaded.config);
        let toml = loaded.redacted_toml();
        for out in [&debug, &toml] {
            assert!(!out.contains("hunter2") && !out.contains("s3cr3t"), "{out}");
            assert!(out.contains("postgres://u:***@db/app"), "{out}");
        }
    }

    #[test]
    fn secret_named_keys_are_redacted_in_output() {
        let mut v: toml::Value = toml::from_str("[a]\napi_token = \"x\"\nkeep = \"y\"").unwrap();
        redact_secret_keys(&mut v);
        assert_eq!(v["a"]["api_token"].as_str(), Some("***"));
        assert_eq!(v["a"]["keep"].as_str(), Some("y"));
    }

    #[test]
    fn require_names_missing_keys() {
        let loaded = load_from(None, &[]).unwrap();
        let err = loaded
            .require(Needs {
                queue: true,
                database: true,
            })
            .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["queue.url", "database.url"]);
    }
}
