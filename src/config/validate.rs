//! What must hold before anything is opened: ranges, URL schemes, and the combinations of keys
//! that would start a daemon that cannot work (busy polling, a starved pool, a heartbeat that
//! cannot keep a message invisible). Every problem is collected, so one start-up reports them all.

use std::time::Duration;

use figment::Figment;

use super::schema::{Config, renewal_period, sqs_attempt_timeout};
use super::{Problem, sources};

/// SQS's longest visibility timeout (and message delay): 12 hours.
const SQS_MAX_SECONDS: u64 = 43_200;

/// Pool connections held outside the message slots while `run` runs: the readiness check
/// (`app.rs`, one ping every 10 s) and, when it is on, the stuck-job rescue (`jobs/rescue.rs`).
/// The queue-depth poller, the deleter and the heartbeat talk only to SQS.
fn background_connections(c: &Config) -> u32 {
    1 + u32::from(c.jobs.stale_after_seconds > 0)
}

/// Range and format checks, then the cross-key traps.
pub(super) fn validate(c: &Config, figment: &Figment) -> Vec<Problem> {
    let mut checks = Checks {
        figment,
        problems: Vec::new(),
    };
    checks.ranges(c);
    checks.urls(c);
    checks.generator(c);
    checks.budget(c);
    checks.traps(c);
    checks.console(c);
    checks.problems
}

struct Checks<'a> {
    figment: &'a Figment,
    problems: Vec<Problem>,
}

impl Checks<'_> {
    fn fail(&mut self, key: &str, rule: &str) {
        self.problems
            .push(sources::problem(self.figment, key, rule));
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

    fn ranges(&mut self, c: &Config) {
        if tracing_subscriber::EnvFilter::try_new(&c.log.level).is_err() {
            self.fail(
                "log.level",
                "is not a valid tracing filter (e.g. \"info,profile_worker=debug\")",
            );
        }
        self.range("shutdown.grace_seconds", c.shutdown.grace_seconds, 0, 3600);
        let k = &c.consumer;
        self.range("consumer.concurrency", k.concurrency.into(), 1, 100);
        if k.wait_seconds == 0 {
            self.fail(
                "consumer.wait_seconds",
                "must be 1..=20: 0 turns the long poll into a busy loop of paid empty receives",
            );
        } else {
            self.range("consumer.wait_seconds", k.wait_seconds.into(), 1, 20);
        }
        self.range(
            "consumer.visibility_timeout",
            k.visibility_timeout.into(),
            6,
            SQS_MAX_SECONDS,
        );
        self.range("consumer.max_attempts", k.max_attempts.into(), 1, 1000);
        self.range(
            "consumer.retry_base_seconds",
            k.retry_base_seconds.into(),
            1,
            SQS_MAX_SECONDS,
        );
        self.range(
            "consumer.retry_cap_seconds",
            k.retry_cap_seconds.into(),
            k.retry_base_seconds.into(),
            SQS_MAX_SECONDS,
        );
        self.range("consumer.unready_after", k.unready_after.into(), 1, 1000);
        self.range(
            "consumer.max_body_bytes",
            k.max_body_bytes as u64,
            64,
            1_048_576,
        );
        self.range(
            "consumer.message_deadline_seconds",
            k.message_deadline_seconds.into(),
            1,
            SQS_MAX_SECONDS,
        );
        let d = &c.database;
        self.range("database.pool_size", d.pool_size.into(), 1, 200);
        let schema = &d.schema;
        if schema.is_empty()
            || schema.len() > 63
            || schema == "public"
            || schema.starts_with("pg_")
            || !schema.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
            || !schema
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            self.fail(
                "database.schema",
                "must be a lowercase PostgreSQL identifier (a-z, 0-9, _; at most 63 characters), \
                 not public or pg_*",
            );
        }
        self.range(
            "database.statement_timeout_ms",
            d.statement_timeout_ms,
            0,
            86_400_000,
        );
        let r = &c.cache;
        self.range("cache.local_ttl_seconds", r.local_ttl_seconds, 0, 86_400);
        self.range("cache.redis_ttl_seconds", r.redis_ttl_seconds, 1, 86_400);
        self.range("cache.redis_timeout_ms", r.redis_timeout_ms, 1, 60_000);
        self.range("cache.lock_wait_ms", r.lock_wait_ms, 0, 600_000);
        if !r.tls_ca_file.is_empty() && !r.redis_url.expose().starts_with("rediss://") {
            self.fail(
                "cache.tls_ca_file",
                "is only used with a rediss:// cache.redis_url",
            );
        }
        self.range(
            "jobs.check_interval_seconds",
            c.jobs.check_interval_seconds,
            1,
            86_400,
        );
    }

    fn console(&mut self, c: &Config) {
        if !c.console.token.expose().is_empty() && !c.console.token_file.is_empty() {
            self.fail(
                "console.token_file",
                "set console.token or console.token_file, not both",
            );
        } else {
            match c.console.resolve_token() {
                Err(e) => self.fail("console.token_file", &e),
                Ok(Some(token)) if token.len() < 16 => {
                    self.fail("console.token", "must be at least 16 characters")
                }
                Ok(_) => {}
            }
        }
        let prefix = &c.console.path_prefix;
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
            self.fail(
                "console.path_prefix",
                "must start with '/' and not end with one (e.g. \"/ops\")",
            );
        }
    }

    fn urls(&mut self, c: &Config) {
        let web = &["http", "https"];
        self.url("queue.url", &c.queue.url, web);
        self.url("queue.dead_letter_url", &c.queue.dead_letter_url, web);
        self.url("queue.endpoint_url", &c.queue.endpoint_url, web);
        self.url("generator.endpoint_url", &c.generator.endpoint_url, web);
        self.url(
            "database.url",
            c.database.url.expose(),
            &["postgres", "postgresql"],
        );
        self.url(
            "cache.redis_url",
            c.cache.redis_url.expose(),
            &["redis", "rediss", "unix"],
        );
    }

    fn generator(&mut self, c: &Config) {
        let g = &c.generator;
        if g.model.trim().is_empty() {
            self.fail(
                "generator.model",
                "must name a model (haiku, sonnet, opus) or a Bedrock model id",
            );
        }
        if let Some(t) = g.temperature
            && !(0.0..=1.0).contains(&t)
        {
            self.fail("generator.temperature", "must be within 0.0..=1.0");
        }
        self.range(
            "generator.call_timeout_seconds",
            g.call_timeout_seconds,
            1,
            3600,
        );
        self.range("generator.max_attempts", g.max_attempts.into(), 1, 20);
        self.range(
            "generator.max_calls_per_message",
            g.max_calls_per_message.into(),
            2,
            1000,
        );
        self.range("generator.retry_base_ms", g.retry_base_ms, 1, 600_000);
        self.range(
            "generator.offline_latency_ms",
            g.offline_latency_ms,
            0,
            600_000,
        );
        for (model, price) in &g.prices {
            if !(price.input >= 0.0
                && price.output >= 0.0
                && price.cache_read.is_none_or(|p| p >= 0.0)
                && price.cache_write.is_none_or(|p| p >= 0.0))
            {
                self.fail(
                    &format!("generator.prices.\"{model}\""),
                    "prices must be >= 0",
                );
            }
        }
        if !(c.budget.daily_cost_usd >= 0.0 && c.budget.daily_cost_usd.is_finite()) {
            self.fail(
                "budget.daily_cost_usd",
                "must be a number >= 0 (0 = no cap)",
            );
        }
        for (model, cache) in &g.prompt_cache {
            self.range(
                &format!("generator.prompt_cache.\"{model}\".min_tokens"),
                cache.min_tokens.into(),
                1,
                1_000_000,
            );
        }
    }

    fn budget(&mut self, c: &Config) {
        let b = &c.budget;
        self.range(
            "budget.requests_per_minute",
            b.requests_per_minute,
            0,
            1_000_000,
        );
        self.range(
            "budget.tokens_per_minute",
            b.tokens_per_minute,
            0,
            1_000_000_000,
        );
        self.range(
            "budget.max_concurrent_calls",
            b.max_concurrent_calls,
            0,
            10_000,
        );
        self.range("budget.lease_ttl_seconds", b.lease_ttl_seconds, 3, 3600);
        self.range("budget.replicas", b.replicas, 1, 1000);
        if b.key_prefix.trim().is_empty() {
            self.fail("budget.key_prefix", "must not be empty");
        }
    }

    /// Combinations of keys that pass their ranges one by one but cannot work together.
    fn traps(&mut self, c: &Config) {
        let k = &c.consumer;
        let needed = k.concurrency + background_connections(c);
        if c.database.pool_size < needed {
            let rescue = if c.jobs.stale_after_seconds > 0 {
                " and the stuck-job rescue"
            } else {
                ""
            };
            self.fail(
                "database.pool_size",
                &format!(
                    "must be at least {needed}: one connection per consumer slot \
                     (consumer.concurrency = {}) plus one each for the readiness check{rescue}, \
                     or messages wait for connections and time out",
                    k.concurrency
                ),
            );
        }

        // The heartbeat renews every period; one renewal call may take up to the SQS attempt
        // timeout. Both must fit inside the visibility timeout, or a slow renewal lets the message
        // reappear while it is still being handled.
        if (1..=20).contains(&k.wait_seconds) && k.visibility_timeout >= 6 {
            let visibility = Duration::from_secs(k.visibility_timeout.into());
            let period = renewal_period(visibility);
            let call = sqs_attempt_timeout(Duration::from_secs(k.wait_seconds.into()));
            if period + call >= visibility {
                let every = period.as_secs_f64();
                let every = if every.fract() == 0.0 {
                    format!("{every}")
                } else {
                    format!("{every:.1}")
                };
                // v/3 + call < v  <=>  v > 1.5 * call
                let minimum = call.as_secs() * 3 / 2 + 1;
                self.fail(
                    "consumer.visibility_timeout",
                    &format!(
                        "too short for the heartbeat: it renews every {} s and one renewal may \
                         take {} s (consumer.wait_seconds + 10 s), which must end before the \
                         visibility does; use at least {minimum} or a shorter consumer.wait_seconds",
                        every,
                        call.as_secs()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};

    use super::super::schema::DEFAULTS;
    use super::*;

    fn problems(toml: &str) -> Vec<Problem> {
        let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(toml));
        let config: Config = figment.extract().expect("extracts");
        validate(&config, &figment)
    }

    fn only(toml: &str) -> String {
        let found = problems(toml);
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].message.clone()
    }

    #[test]
    fn console_settings_are_checked_and_the_token_never_echoed() {
        let short = only("[console]\ntoken = \"short\"");
        assert!(short.starts_with("console.token = "), "{short}");
        assert!(!short.contains("short\""), "{short}");
        assert!(
            only("[console]\ntoken_file = \"/nonexistent/token\"")
                .starts_with("console.token_file")
        );
        assert!(only("[console]\npath_prefix = \"ops/\"").starts_with("console.path_prefix"));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-a-file-0123456789\n").unwrap();
        let path = file.path().display().to_string();
        assert_eq!(problems(&format!("[console]\ntoken_file = {path:?}")), []);
        assert!(
            only(&format!(
                "[console]\ntoken_file = {path:?}\ntoken = \"another-token-0123456789\""
            ))
            .contains("not both")
        );
    }

    #[test]
    fn budget_limits_are_checked_by_name() {
        assert_eq!(
            problems("[budget]\nrequests_per_minute = 120\nmax_concurrent_calls = 8"),
            []
        );
        assert!(only("[budget]\nlease_ttl_seconds = 1").starts_with("budget.lease_ttl_seconds"));
        assert!(only("[budget]\nreplicas = 0").starts_with("budget.replicas"));
        assert!(only("[budget]\nkey_prefix = \" \"").starts_with("budget.key_prefix"));
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(problems(""), []);
    }

    #[test]
    fn a_zero_long_poll_is_rejected_as_a_busy_loop() {
        let msg = only("[consumer]\nwait_seconds = 0");
        assert!(
            msg.starts_with("consumer.wait_seconds = 0 (from ") && msg.contains("busy loop"),
            "{msg}"
        );
    }

    #[test]
    fn a_pool_smaller_than_the_slots_plus_background_is_rejected() {
        // 5 slots + readiness + rescue = 7.
        assert_eq!(problems("[database]\npool_size = 7"), []);
        let msg = only("[database]\npool_size = 6");
        assert!(
            msg.starts_with("database.pool_size = 6 (from ")
                && msg.contains("must be at least 7")
                && msg.contains("stuck-job rescue"),
            "{msg}"
        );
        // Without the rescue one connection fewer is enough.
        assert_eq!(
            problems("[database]\npool_size = 6\n[jobs]\nstale_after_seconds = 0"),
            []
        );
        let msg = only("[consumer]\nconcurrency = 20");
        assert!(msg.contains("must be at least 22"), "{msg}");
    }

    #[test]
    fn a_visibility_the_heartbeat_cannot_renew_in_time_is_rejected() {
        // wait 20 s: a renewal may take 30 s, so the visibility must exceed 45 s.
        assert_eq!(problems("[consumer]\nvisibility_timeout = 46"), []);
        let msg = only("[consumer]\nvisibility_timeout = 45");
        assert!(
            msg.starts_with("consumer.visibility_timeout = 45 (from ")
                && msg.contains("renews every 15 s")
                && msg.contains("take 30 s")
                && msg.contains("at least 46"),
            "{msg}"
        );
        // A shorter long poll shortens the call timeout.
        assert_eq!(
            problems("[consumer]\nwait_seconds = 1\nvisibility_timeout = 17"),
            []
        );
    }

    #[test]
    fn visibility_and_retry_delays_stay_within_sqs_twelve_hours() {
        let msg = only("[consumer]\nvisibility_timeout = 43201");
        assert!(msg.contains("must be 6..=43200"), "{msg}");
        let msg = only("[consumer]\nretry_cap_seconds = 43201");
        assert!(msg.contains("..=43200"), "{msg}");
    }
}
