//! The Bedrock call budget shared by all replicas (docs/decisions.md, "Bedrock budget: GCRA in
//! one Lua script"): calls and tokens per minute, concurrent calls held as leases with a TTL, a
//! call rate learnt from throttling when the account's quota is unknown, and the estimated cost
//! of the calls running, which the daily cost cap counts beside the settled spend.
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

/// The adaptive rate (docs/decisions.md, "Adaptive rate"): where it starts without a configured
/// rate, how it grows while calls wait for it, and how a throttle sets it from what Bedrock
/// accepted.
pub mod adaptive {
    /// Calls per minute the cluster starts at when `budget.requests_per_minute` is 0.
    pub const START_RPM: f64 = 60.0;
    /// Relative growth per second while calls are held back, until the first throttle: finds
    /// the quota within a couple of minutes.
    pub const GROWTH_PER_SECOND: f64 = 0.01;
    /// Relative growth per second after a throttle (1 % a minute): probes above the learnt
    /// quota rarely, each probe costing about one throttled call.
    pub const SETTLED_GROWTH_PER_SECOND: f64 = 0.01 / 60.0;
    /// A throttle sets the rate to this share of the calls Bedrock accepted in the last minute.
    pub const KEEP: f64 = 0.98;
    /// One throttle at most halves the rate (when it came from others' traffic or a token quota,
    /// our own count says little).
    pub const MAX_CUT: f64 = 0.5;
    /// At most one cut per this many milliseconds: the calls already sent when the first
    /// throttle answered are throttled too and must not cut again.
    pub const COOLDOWN_MS: f64 = 2000.0;
    /// At most `rate` attempts are sent in any window this long: Bedrock's minute plus a second,
    /// so admission-to-arrival jitter below a second cannot put one call too many in its minute.
    pub const WINDOW_MS: f64 = 61_000.0;
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
/// cancelled), a local lease and reservation are released at once, and a Redis lease and
/// reservation expire after the lease TTL.
pub struct Grant {
    pub source: Source,
    lease: String,
    estimate: u64,
    held: Option<HeldLease>,
    reservation: Reservation,
}

impl Grant {
    /// Whether the call holds a lease or a cost reservation that must be renewed while it runs.
    pub fn needs_renewal(&self) -> bool {
        self.held.is_some() || self.reservation.usd > 0.0
    }
}

/// A running call's estimated cost, counted in this replica's total until dropped (and, when
/// admitted through Redis, in the cluster's until settled).
struct Reservation {
    usd: f64,
    nano: u64,
    total: Arc<AtomicU64>,
}

impl Reservation {
    /// `usd` is finite and not negative.
    fn new(usd: f64, total: &Arc<AtomicU64>) -> Self {
        let nano = (usd * 1e9).round() as u64;
        total.fetch_add(nano, Ordering::Relaxed);
        Self {
            usd,
            nano,
            total: total.clone(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.nano, Ordering::Relaxed);
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
    /// Nano-USD reserved by this replica's running calls (the total while Redis is down).
    reserved: Arc<AtomicU64>,
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
            reserved: Arc::default(),
            metrics,
            check,
        };
        this.report();
        Ok(this)
    }

    /// Waits until the budget admits one call estimated at `tokens` and `usd`, and reserves the
    /// cost while the call runs. Never fails.
    pub async fn acquire(&self, tokens: u64, usd: f64) -> Grant {
        let usd = if usd.is_finite() { usd.max(0.0) } else { 0.0 };
        let started = Instant::now();
        let lease = format!(
            "{}:{}",
            self.replica,
            self.leases.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            let (source, decision) = self.decide(&lease, tokens, usd).await;
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
                    reservation: Reservation::new(usd, &self.reserved),
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
                .settle(
                    &self.limits,
                    &grant.lease,
                    grant.estimate,
                    grant.reservation.usd,
                    spent,
                )
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

    /// Keeps a running call's Redis lease and reservation alive; local ones need nothing.
    pub async fn renew(&self, grant: &Grant) {
        if grant.source != Source::Redis || !grant.needs_renewal() {
            return;
        }
        if let Some(redis) = &self.redis
            && let Err(e) = redis
                .renew(&self.limits, &grant.lease, grant.reservation.usd)
                .await
        {
            tracing::debug!(error = %e, "cannot renew a budget lease");
        }
    }

    /// Estimated USD of the calls admitted and not yet settled: across the cluster through
    /// Redis, this replica's own while Redis is unreachable. The daily cost cap counts it.
    pub async fn reserved_usd(&self) -> f64 {
        if let Some(redis) = &self.redis
            && self.redis_due()
        {
            match redis.reserved().await {
                Ok(usd) => return usd,
                Err(e) => self.fell_back(&e),
            }
        }
        self.reserved.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// How often a running call renews its lease: a third of the TTL.
    pub fn renew_every(&self) -> Duration {
        self.limits.lease_ttl / 3
    }

    /// Asks Redis unless it is down and not due for a probe; otherwise the local share.
    async fn decide(&self, lease: &str, tokens: u64, usd: f64) -> (Source, Decision) {
        if let Some(redis) = &self.redis
            && self.redis_due()
        {
            match redis
                .acquire(&self.limits, lease, tokens, usd, &self.replica)
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
