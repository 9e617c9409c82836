//! Typed configuration: figment layers, validation once at start-up, secrets that never print.
//!
//! [`schema`] is what can be set (the structs; `config/default.toml` holds every default),
//! [`sources`] where it comes from (later wins: built-in defaults → the file given by `--config` /
//! `PROFILE_WORKER_CONFIG` → `PROFILE_WORKER_<SECTION>__<KEY>` environment variables → the
//! original system's variable names such as `DATABASE_URL`), and [`validate`] what must hold
//! before anything is opened. Every problem is reported as `key = value (from SOURCE): rule`.

mod schema;
mod secret;
mod sources;
mod validate;

use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};

pub use schema::{
    AwsConfig, BudgetConfig, CacheConfig, Config, ConsoleConfig, ConsumerConfig, DEFAULTS,
    DatabaseConfig, GeneratorBackend, GeneratorConfig, JobsConfig, LogConfig, LogFormat, Price,
    PromptCache, QueueConfig, ServerConfig, ShutdownConfig, StalenessConfig, renewal_period,
    sqs_attempt_timeout,
};
pub use secret::{Secret, SecretUrl, redact_url};
pub use sources::ENV_PREFIX;

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
    /// Extracts and validates the layered sources.
    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError {
            problems: sources::extraction_problems(&figment, e),
        })?;
        let loaded = Loaded { config, figment };
        let problems = validate::validate(&loaded.config, &loaded.figment);
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(ConfigError { problems })
        }
    }

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
        if needs.database && c.database.url.is_empty() && c.database.secret_id.is_empty() {
            problems.push(Problem {
                key: "database.url".into(),
                message: "database.url or database.secret_id must be set \
                          (PROFILE_WORKER_DATABASE__URL, BMX_DATABASE_URL, DATABASE_URL, \
                          BMX_DATABASE_SECRET_ARN, DATABASE_SECRET_ARN or DATABASE_SECRET_NAME)"
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
        secret::redact_secret_keys(&mut value);
        toml::to_string_pretty(&value).expect("TOML value serialises")
    }

    /// Where the value of a dotted key came from, e.g. `PROFILE_WORKER_CONSUMER__CONCURRENCY`.
    pub fn source_of(&self, key: &str) -> String {
        sources::source_of(&self.figment, key)
    }
}

/// Loads and validates the configuration from the process environment and `file`.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    Loaded::from_figment(sources::layered(file)?)
}

/// The built-in defaults alone, whatever the environment says (tests and tools start here).
pub fn defaults() -> Config {
    Figment::from(Toml::string(DEFAULTS))
        .extract()
        .expect("the embedded defaults are a valid configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with `toml` layered over them, as a file would be.
    fn with_file(toml: &str) -> Result<Loaded, ConfigError> {
        Loaded::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(toml)))
    }

    /// The problems' messages of a file the loader must reject.
    fn rejected(toml: &str) -> Vec<String> {
        let err = with_file(toml).err().expect("rejected");
        err.problems.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn defaults_are_valid_and_name_their_source() {
        let loaded = with_file("").expect("defaults load");
        assert_eq!(loaded.config.consumer.wait_seconds, 20);
        assert_eq!(
            loaded.source_of("consumer.concurrency"),
            "built-in defaults"
        );
        assert_eq!(defaults().consumer.concurrency, 5);
    }

    #[test]
    fn an_unknown_key_is_named_once_with_its_value() {
        let msgs = rejected("[consumer]\nbogus = 1");
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].starts_with("consumer.bogus = 1 (from "), "{msgs:?}");
        assert!(
            msgs[0].contains("unknown key; expected one of: concurrency,"),
            "{msgs:?}"
        );
    }

    #[test]
    fn an_unknown_section_is_named_by_the_keys_written_under_it() {
        let msgs = rejected("[quota]\nrequests_per_minute = 60");
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].starts_with("quota.requests_per_minute = 60 (from "),
            "{msgs:?}"
        );
        assert!(
            msgs[0].contains("unknown key; \"quota\" is not one of: log, server,"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_missing_price_field_is_named() {
        let msgs = rejected("[generator.prices]\n\"m\" = { input = 1.0 }");
        assert!(
            msgs[0].starts_with("generator.prices.m.output (from "),
            "{msgs:?}"
        );
        assert!(msgs[0].ends_with("missing key"), "{msgs:?}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_value() {
        let msgs = rejected("[server]\nlisten = \"localhost-8080\"");
        assert!(
            msgs[0].starts_with("server.listen = \"localhost-8080\" (from "),
            "{msgs:?}"
        );
    }

    #[test]
    fn an_array_where_text_belongs_is_shown_as_written() {
        let msgs = rejected("[queue]\nname = [1, \"b\"]");
        assert!(
            msgs[0].starts_with("queue.name = [1, \"b\"] (from ")
                && msgs[0].contains("invalid type"),
            "{msgs:?}"
        );
    }

    #[test]
    fn bad_database_url_is_reported_without_its_password() {
        let msgs = rejected("[database]\nurl = \"mysql://u:hunter2@db/app\"");
        let msg = &msgs[0];
        assert!(
            msg.starts_with("database.url = \"mysql://u:***@db/app\" (from "),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"));
    }

    #[test]
    fn secrets_never_print() {
        let loaded = with_file(
            "[database]\nurl = \"postgres://u:hunter2@db/app\"\n\
             [cache]\nredis_url = \"redis://:s3cr3t@cache:6379\"",
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
    fn require_names_missing_keys() {
        let loaded = with_file("").unwrap();
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
