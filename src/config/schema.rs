//! The typed schema: one struct per section, every key required (the embedded defaults supply
//! them), unknown keys rejected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::secret::{Secret, SecretUrl};

/// The built-in defaults: the same file operators read.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

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
    pub budget: BudgetConfig,
    pub staleness: StalenessConfig,
    pub jobs: JobsConfig,
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    #[serde(deserialize_with = "text")]
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
    #[serde(deserialize_with = "text")]
    pub region: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(deserialize_with = "text")]
    pub url: String,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text")]
    pub dead_letter_url: String,
    #[serde(deserialize_with = "text")]
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
    pub message_deadline_seconds: u32,
}

/// How often the heartbeat renews a running message's visibility: every third of the timeout,
/// so a renewal that fails can be tried again before the message reappears.
pub fn renewal_period(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_millis(500))
}

/// Margin of the SQS per-attempt timeout over the long-poll wait: a client timeout shorter than
/// the wait abandons receives the server still fulfils, and those messages stay invisible
/// unseen for a whole visibility timeout.
const SQS_ATTEMPT_MARGIN: Duration = Duration::from_secs(10);

/// The per-attempt timeout of every SQS call, heartbeat renewals included, for a long poll of
/// `wait`.
pub fn sqs_attempt_timeout(wait: Duration) -> Duration {
    wait + SQS_ATTEMPT_MARGIN
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    /// Secrets Manager secret (ARN or name) holding the credentials; empty = `url` alone
    /// (docs/decisions.md, "Database credentials from Secrets Manager").
    pub secret_id: String,
    pub pool_size: u32,
    pub statement_timeout_ms: u64,
    pub migrate_on_start: bool,
    /// PostgreSQL schema of the daemon's own tables (see docs/decisions.md, "Own schema").
    pub schema: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub redis_url: SecretUrl,
    pub local_ttl_seconds: u64,
    pub redis_ttl_seconds: u64,
    pub redis_timeout_ms: u64,
    pub lock_wait_ms: u64,
    /// PEM file of the CA(s) a `rediss://` server's certificate must chain to; empty = the
    /// system's trust store (enough for ElastiCache and other public CAs).
    pub tls_ca_file: String,
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
    #[serde(deserialize_with = "text")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(deserialize_with = "text")]
    pub endpoint_url: String,
    pub call_timeout_seconds: u64,
    pub max_attempts: u32,
    /// Model requests one message may make, every attempt counted (docs/decisions.md,
    /// "Per-message call cap and cancellation").
    pub max_calls_per_message: u32,
    pub retry_base_ms: u64,
    pub offline_latency_ms: u64,
    pub models: BTreeMap<String, String>,
    pub prices: BTreeMap<String, Price>,
    /// By model id: models whose prompts get a cache point (empty = no prompt caching).
    #[serde(default)]
    pub prompt_cache: BTreeMap<String, PromptCache>,
}

/// The Bedrock call budget shared by all replicas through Redis (docs/decisions.md, "Bedrock
/// budget: GCRA in one Lua script"). Every limit and the daily cap at 0, `adaptive` off: no
/// budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Calls (attempts) per minute across the cluster; 0 = no limit.
    pub requests_per_minute: u64,
    /// Input plus output tokens per minute across the cluster; 0 = no limit.
    pub tokens_per_minute: u64,
    /// Bedrock calls running at once across the cluster; 0 = no limit.
    pub max_concurrent_calls: u64,
    /// Life of a call's lease unless renewed (every third of it while the call runs), so a killed
    /// replica's leases free themselves.
    pub lease_ttl_seconds: u64,
    /// Learn the call rate from throttling (AIMD) when the account's quota is unknown.
    pub adaptive: bool,
    /// Replicas expected before Redis has counted the live ones: a replica without Redis takes
    /// this share of each limit.
    pub replicas: u64,
    /// Estimated Bedrock USD per UTC day across all replicas; 0 = no cap. `app_config`
    /// `budget.daily_cost_usd` wins when set, and is re-read before every generation
    /// (docs/decisions.md, "Daily cost cap").
    pub daily_cost_usd: f64,
    /// Prefix of the budget's Redis keys (one hash slot: keep the braces on a cluster).
    #[serde(deserialize_with = "text")]
    pub key_prefix: String,
}

impl BudgetConfig {
    /// The daily cost cap in force (0 = none): `app_config`'s `budget.daily_cost_usd` when it
    /// is set and a number >= 0, else the configured one (docs/decisions.md, "Daily cost cap").
    pub fn daily_cap(&self, app_config: Option<&str>) -> f64 {
        let Some(value) = app_config else {
            return self.daily_cost_usd;
        };
        match value.trim().parse::<f64>() {
            Ok(cap) if cap >= 0.0 && cap.is_finite() => cap,
            _ => {
                tracing::warn!(%value, "app_config budget.daily_cost_usd is not a number >= 0; using configuration");
                self.daily_cost_usd
            }
        }
    }

    /// Whether any limit, the adaptive rate or the daily cost cap is on (the cap counts the
    /// cost the budget reserves for calls in flight).
    pub fn enabled(&self) -> bool {
        self.adaptive
            || self.daily_cost_usd > 0.0
            || self.requests_per_minute > 0
            || self.tokens_per_minute > 0
            || self.max_concurrent_calls > 0
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt-cache reads; the input price when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Prompt-cache writes; the input price when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// Prompt caching of one model (docs/decisions.md, "Prompt caching"): listed = supported.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCache {
    /// The smallest prefix, in tokens, the model caches; shorter prefixes get no cache point.
    pub min_tokens: u32,
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
    #[serde(deserialize_with = "text")]
    pub token_file: String,
    /// Path prefix the console is served under behind an ingress (`/ops`); empty = none.
    #[serde(deserialize_with = "text")]
    pub path_prefix: String,
    /// Name this replica publishes its in-flight work under; empty = the host name.
    #[serde(deserialize_with = "text")]
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

/// A text key that also takes a scalar: figment reads an environment value that looks like a
/// number or a boolean as one, and a queue named `12345` is still a name.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_char<E>(self, v: char) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Text)
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    #[test]
    fn the_embedded_defaults_fill_every_key() {
        let config: Config = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        assert_eq!(config.consumer.concurrency, 5);
        assert!(config.generator.models["haiku"].starts_with("anthropic."));
    }

    #[test]
    fn a_text_key_takes_a_number_as_its_digits() {
        let config: Config = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("[queue]\nname = 12345"))
            .extract()
            .unwrap();
        assert_eq!(config.queue.name, "12345");
    }
}
