//! The Bedrock call budget shared by all replicas (docs/decisions.md, "Bedrock budget: GCRA in
//! one Lua script"): calls and tokens per minute, concurrent calls held as leases with a TTL, and
//! a call rate learnt from throttling when the account's quota is unknown.
//!
//! [`Budget`] decides through Redis ([`redis::RedisLimiter`], one Lua script, atomic) and, while
//! Redis is unreachable or not configured, on this replica's share ([`local::LocalLimiter`]):
//! `1/n` of every limit, `n` being the live replicas Redis last counted, else `budget.replicas`.
//! It never fails a call: the worst Redis can do is make it budget locally. [`BudgetedGenerator`]
//! applies it around the generator port.

mod generator;
mod local;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use generator::BudgetedGenerator;

use crate::config::{BudgetConfig, CacheConfig};
use crate::health::{Check, Health};
use crate::metrics::Metrics;
use local::LocalLimiter;
use redis::RedisLimiter;

/// The adaptive rate (AIMD on the call rate, docs/decisions.md): where it starts without a
/// configured rate, how hard a throttle cuts it, how fast it grows while calls wait for it.
pub mod adaptive {
    /// Calls per minute the cluster starts at when `budget.requests_per_minute` is 0.
    pub const START_RPM: f64 = 60.0;
    /// A throttled call multiplies the rate by this.
    pub const CUT: f64 = 0.7;
    /// Relative growth per second while calls are held back by the rate.
    pub const GROWTH_PER_SECOND: f64 = 0.01;
    /// At most one cut per this many milliseconds: the calls already sent when the first
    /// throttle answered are throttled too and must not cut again.
    pub const COOLDOWN_MS: f64 = 2000.0;
}

/// Share of a configured per-minute limit that is admitted: a call reaches Bedrock some
/// milliseconds after its admission, and that delay varies, so calls admitted at exactly the quota's
/// pace can put one call too many into one of Bedrock's minutes (measured: 2.5 % throttled with
/// three loaded replicas at exactly 120/min). 2 % leaves 1.2 s of slack in a minute.
const ADMITTED: f64 = 0.98;

/// How often a caller held back by the concurrency cap asks again (a release wakes nobody).
const LEASE_POLL: Duration = Duration::from_millis(25);
/// Longest single sleep before asking again, so a changed rate or a freed lease is seen.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// While falling back, Redis is tried again at most this often (a down Redis costs each try up
/// to `cache.redis_timeout_ms`).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why the budget could not be set up or asked; only the setup error reaches the caller.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("cannot set up the budget's Redis pool: {0}")]
    Setup(#[source] crate::cache::CacheError),
    #[error("Redis: {0}")]
    Redis(String),
}

/// The configured limits; 0 turns one off.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub max_concurrent_calls: u64,
    pub lease_ttl: Duration,
    pub adaptive: bool,
}

impl Limits {
    pub fn from_config(config: &BudgetConfig) -> Self {
        Self {
            requests_per_minute: config.requests_per_minute,
            tokens_per_minute: config.tokens_per_minute,
            max_concurrent_calls: config.max_concurrent_calls,
            lease_ttl: Duration::from_secs(config.lease_ttl_seconds),
            adaptive: config.adaptive,
        }
    }

    /// Calls per minute admitted (0: no limit): the configured rate less the jitter headroom.
    fn rpm(&self) -> f64 {
        self.requests_per_minute as f64 * ADMITTED
    }

    /// Tokens per minute admitted (0: no limit), with the same headroom.
    fn tpm(&self) -> f64 {
        self.tokens_per_minute as f64 * ADMITTED
    }

    /// Where the adaptive rate starts: the configured rate, else [`adaptive::START_RPM`].
    fn start_rpm(&self) -> f64 {
        if self.requests_per_minute > 0 {
            self.rpm()
        } else {
            adaptive::START_RPM
        }
    }

    /// One replica's leases out of `share`: at least one, so no replica stops.
    fn local_leases(&self, share: u64) -> u64 {
        if self.max_concurrent_calls == 0 {
            0
        } else {
            (self.max_concurrent_calls / share.max(1)).max(1)
        }
    }
}

/// What the limiter answered to one request for admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    granted: bool,
    /// Milliseconds until asking again makes sense.
    wait_ms: f64,
    /// Calls per minute admitted now (this replica's share when local); `None` = unlimited.
    rate: Option<f64>,
}

impl Decision {
    fn granted(rate: Option<f64>) -> Self {
        Self {
            granted: true,
            wait_ms: 0.0,
            rate,
        }
    }

    fn wait(wait_ms: f64, rate: Option<f64>) -> Self {
        Self {
            granted: false,
            wait_ms,
            rate,
        }
    }
}

/// What one admitted call spent: every attempt the adapter made, their tokens, the throttled ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub requests: u32,
    pub tokens: u64,
    pub throttled: u32,
}

/// Where a grant was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Redis,
    Local,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Local => "local",
        }
    }
}

/// One admitted call: settle it with [`Budget::settle`]. Dropped unsettled (the call was
/// cancelled), a local lease is released at once and a Redis lease expires after its TTL.
pub struct Grant {
    pub source: Source,
    lease: String,
    estimate: u64,
    held: Option<HeldLease>,
}

impl Grant {
    /// Whether the call holds a lease that must be renewed while it runs.
    pub fn holds_lease(&self) -> bool {
        self.held.is_some()
    }
}

/// A lease counted in `profile_worker_budget_leases` until dropped.
struct HeldLease {
    metrics: Arc<Metrics>,
    local: Option<Arc<LocalLimiter>>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.metrics.budget_leases.dec();
        if let Some(local) = &self.local {
            local.release();
        }
    }
}

/// Whether the replica budgets through Redis and what it last learnt there.
struct Mode {
    /// Since when Redis has been unreachable (`None`: Redis answers), and why.
    fallback: Option<(Instant, String)>,
    /// When Redis may be tried again during a fallback.
    next_probe: Instant,
    /// Live replicas Redis last counted (this one included).
    live_replicas: Option<u64>,
}

/// The budget of one replica: shared through Redis, its own share without.
pub struct Budget {
    limits: Limits,
    replicas: u64,
    replica: String,
    redis: Option<RedisLimiter>,
    local: Arc<LocalLimiter>,
    mode: Mutex<Mode>,
    leases: AtomicU64,
    metrics: Arc<Metrics>,
    check: Check,
}

impl Budget {
    /// The budget of `config.budget`, shared through `cache.redis_url` when set; reports to the
    /// informational `budget` readiness check (a fallback never makes the replica unready).
    /// `replica` names this process among the live replicas and in its lease ids.
    pub fn new(
        budget: &BudgetConfig,
        cache: &CacheConfig,
        replica: String,
        metrics: Arc<Metrics>,
        health: &Health,
    ) -> Result<Self, BudgetError> {
        let redis = if cache.redis_url.is_empty() {
            None
        } else {
            Some(RedisLimiter::new(cache, budget)?)
        };
        let check = health.check("budget", false);
        let now = Instant::now();
        let this = Self {
            limits: Limits::from_config(budget),
            replicas: budget.replicas.max(1),
            replica,
            mode: Mutex::new(Mode {
                fallback: redis
                    .is_none()
                    .then(|| (now, "no cache.redis_url".to_string())),
                next_probe: now,
                live_replicas: None,
            }),
            redis,
            local: Arc::new(LocalLimiter::new()),
            leases: AtomicU64::new(0),
            metrics,
            check,
        };
        this.report();
        Ok(this)
    }

    /// Waits until the budget admits one call estimated at `tokens`. Never fails.
    pub async fn acquire(&self, tokens: u64) -> Grant {
        let started = Instant::now();
        let lease = format!(
            "{}:{}",
            self.replica,
            self.leases.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            let (source, decision) = self.decide(&lease, tokens).await;
            if let Some(rate) = decision.rate {
                self.metrics.budget_rate.set(rate);
            }
            if decision.granted {
                self.metrics
                    .budget_wait_seconds
                    .with_label_values(&[source.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                let held = (self.limits.max_concurrent_calls > 0).then(|| {
                    self.metrics.budget_leases.inc();
                    HeldLease {
                        metrics: self.metrics.clone(),
                        local: (source == Source::Local).then(|| self.local.clone()),
                    }
                });
                return Grant {
                    source,
                    lease,
                    estimate: tokens,
                    held,
                };
            }
            let wait = Duration::from_secs_f64(decision.wait_ms.max(1.0) / 1000.0);
            tokio::time::sleep(wait.min(MAX_SLEEP)).await;
        }
    }

    /// Accounts what an admitted call really spent and releases its lease.
    pub async fn settle(&self, grant: Grant, spent: Spent) {
        if grant.source == Source::Redis
            && let Some(redis) = &self.redis
        {
            match redis
                .settle(&self.limits, &grant.lease, grant.estimate, spent)
                .await
            {
                Ok(rate) => {
                    if let Some(rate) = rate {
                        self.metrics.budget_rate.set(rate);
                    }
                    return;
                }
                Err(e) => self.fell_back(&e),
            }
        }
        self.local
            .settle(&self.limits, self.share(), grant.estimate, spent);
    }

    /// Keeps a running call's Redis lease alive; a local lease needs nothing.
    pub async fn renew(&self, grant: &Grant) {
        if grant.source != Source::Redis || grant.held.is_none() {
            return;
        }
        if let Some(redis) = &self.redis
            && let Err(e) = redis.renew(&self.limits, &grant.lease).await
        {
            tracing::debug!(error = %e, "cannot renew a budget lease");
        }
    }

    /// How often a running call renews its lease: a third of the TTL.
    pub fn renew_every(&self) -> Duration {
        self.limits.lease_ttl / 3
    }

    /// Asks Redis unless it is down and not due for a probe; otherwise the local share.
    async fn decide(&self, lease: &str, tokens: u64) -> (Source, Decision) {
        if let Some(redis) = &self.redis
            && self.redis_due()
        {
            match redis
                .acquire(&self.limits, lease, tokens, &self.replica)
                .await
            {
                Ok(answer) => {
                    self.redis_answered(answer.live_replicas, answer.decision.rate);
                    return (Source::Redis, answer.decision);
                }
                Err(e) => self.fell_back(&e),
            }
        }
        (
            Source::Local,
            self.local.acquire(&self.limits, self.share(), tokens),
        )
    }

    fn redis_due(&self) -> bool {
        let mode = self.mode.lock().expect("budget lock");
        mode.fallback.is_none() || Instant::now() >= mode.next_probe
    }

    /// The number of replicas sharing the budget: as Redis last counted, else configured.
    fn share(&self) -> u64 {
        let mode = self.mode.lock().expect("budget lock");
        mode.live_replicas.unwrap_or(self.replicas).max(1)
    }

    fn redis_answered(&self, live: u64, rate: Option<f64>) {
        let (recovered, changed) = {
            let mut mode = self.mode.lock().expect("budget lock");
            let changed = mode.live_replicas.replace(live) != Some(live);
            (mode.fallback.take(), changed)
        };
        if self.limits.adaptive
            && let Some(rate) = rate
        {
            self.local.follow(rate);
        }
        if let Some((since, _)) = recovered {
            tracing::info!(
                after_s = since.elapsed().as_secs(),
                "budget: Redis answers again; calls are budgeted cluster-wide"
            );
            self.report();
        } else if changed {
            self.report();
        }
    }

    fn fell_back(&self, error: &BudgetError) {
        let first = {
            let mut mode = self.mode.lock().expect("budget lock");
            let now = Instant::now();
            mode.next_probe = now + PROBE_EVERY;
            let first = mode.fallback.is_none();
            if first {
                mode.fallback = Some((now, error.to_string()));
            }
            first
        };
        if first {
            tracing::warn!(
                error = %error,
                share = self.share(),
                "budget: Redis unreachable; budgeting on this replica's share until it answers"
            );
            self.report();
        }
    }

    /// Mirrors the mode in the readiness check and the fallback gauge.
    fn report(&self) {
        let (fallback, live) = {
            let mode = self.mode.lock().expect("budget lock");
            (mode.fallback.clone(), mode.live_replicas)
        };
        match fallback {
            None => {
                self.metrics.budget_fallback.set(0);
                self.check.set(
                    true,
                    format!("shared through Redis ({} live replicas)", live.unwrap_or(1)),
                );
            }
            Some((_, cause)) => {
                self.metrics.budget_fallback.set(1);
                let share = self.share();
                let l = &self.limits;
                self.check.set(
                    false,
                    format!(
                        "fallback ({cause}): this replica takes 1/{share} of the budget \
                         ({} calls/min, {} tokens/min, {} concurrent calls; 0 = no limit)",
                        l.requests_per_minute / share,
                        l.tokens_per_minute / share,
                        l.local_leases(share),
                    ),
                );
            }
        }
    }
}
