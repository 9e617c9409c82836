//! The consumer: receives messages with bounded concurrency, keeps each one invisible while its
//! handler runs, and hands the handler's [`Outcome`] to [`crate::outcome`] for the queue side.
//!
//! Shape: one poll loop owns a semaphore of `concurrency` permits. It waits for a free permit,
//! grabs every other free one (up to 10) and asks the queue for that many messages, so nothing
//! waits in memory while its visibility clock runs. Each message runs in a tracked task that
//! spawns the handler (a panic surfaces as a `JoinError`), renews visibility every third of the
//! timeout while the handler runs, then deletes (batched), backs off, or dead-letters it.
//! Shutdown never drops an in-flight receive; see [`Consumer::run`].

mod pause;
mod poll;
mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::health::{Health, Heartbeat};
use crate::metrics::Metrics;
pub use crate::outcome::Outcome;
use crate::outcome::message::{Deleter, QueueSide, Settled};
use crate::queue::Queue;
use crate::retry::Backoff;
pub use pause::Pauses;
use poll::Reachability;

/// Time past the message deadline before a slot counts as stuck: abandoning a run and settling
/// its message take a few queue calls, each bounded by the SDK's timeouts.
const SLOT_MARGIN: Duration = Duration::from_secs(60);

/// Processes one message. The pipeline implements it; tests use instrumented ones.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery. Must be safe to run twice for the same message (at-least-once).
    /// The future may be dropped at any await point (visibility lost, shutdown grace over).
    async fn handle(&self, delivery: &Delivery) -> Outcome;
}

/// One delivery of a message, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub body: String,
    /// The queue's approximate receive count (1 on the first delivery).
    pub receive_count: u32,
    /// Which attempt this is (the receive count, at least 1).
    pub attempt: u32,
    /// This is the last attempt: a transient failure now must be reported as [`Outcome::Failed`].
    pub is_last_attempt: bool,
}

/// Consumer settings, usually from [`ConsumerSettings::from_config`]; tests shorten them.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Messages handled at once.
    pub concurrency: usize,
    /// Long-poll wait of each receive.
    pub wait: Duration,
    /// Visibility kept while a handler runs; renewed every third of it.
    pub visibility: Duration,
    /// Deliveries before a transient failure is final (lowered to the queue's maxReceiveCount).
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Consecutive failed queue calls before the "queue" readiness check fails.
    pub unready_after: u32,
    /// Time in-flight handlers get after shutdown before they are cancelled and released.
    pub grace: Duration,
    /// How often the queue depth gauges are refreshed.
    pub depth_interval: Duration,
    /// Longest one handler run may take before it is abandoned and the message retried.
    pub deadline: Duration,
}

impl ConsumerSettings {
    /// The settings of `[consumer]` and `[shutdown]`, with the depth polled every 15 s.
    pub fn from_config(config: &Config) -> Self {
        let c = &config.consumer;
        Self {
            concurrency: c.concurrency as usize,
            wait: Duration::from_secs(c.wait_seconds.into()),
            visibility: Duration::from_secs(c.visibility_timeout.into()),
            max_attempts: c.max_attempts,
            retry_base: Duration::from_secs(c.retry_base_seconds.into()),
            retry_cap: Duration::from_secs(c.retry_cap_seconds.into()),
            unready_after: c.unready_after,
            grace: Duration::from_secs(config.shutdown.grace_seconds),
            depth_interval: Duration::from_secs(15),
            deadline: Duration::from_secs(c.message_deadline_seconds.into()),
        }
    }

    /// The visibility delay of a transient failure: full jitter below `retry_base · 2^(n−1)`,
    /// at most `retry_cap`, in whole seconds (SQS visibility is in seconds).
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::exponential(self.retry_base, self.retry_cap).full_jitter_seconds()
    }
}

/// Counts of what one [`Consumer::run`] did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub received: u64,
    pub done: u64,
    pub skipped: u64,
    pub retried: u64,
    pub failed: u64,
    pub poison: u64,
    /// Made visible again without an outcome (shutdown).
    pub released: u64,
    /// Abandoned because the visibility heartbeat found the delivery no longer ours.
    pub lost: u64,
    /// Held in process at least once because a dependency was down.
    pub held: u64,
}

#[derive(Default)]
struct Stats {
    received: AtomicU64,
    done: AtomicU64,
    skipped: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    poison: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    held: AtomicU64,
}

impl Stats {
    /// Counts one settled message in the summary and in `messages_processed{outcome}`.
    fn count(&self, metrics: &Metrics, outcome: Settled) {
        let stat = match outcome {
            "done" => &self.done,
            "skipped" => &self.skipped,
            "retry" => &self.retried,
            "failed" => &self.failed,
            "poison" => &self.poison,
            "released" => &self.released,
            _ => &self.lost,
        };
        stat.fetch_add(1, Ordering::Relaxed);
        metrics
            .messages_processed
            .with_label_values(&[outcome])
            .inc();
    }

    fn summary(&self) -> Summary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Summary {
            received: get(&self.received),
            done: get(&self.done),
            skipped: get(&self.skipped),
            retried: get(&self.retried),
            failed: get(&self.failed),
            poison: get(&self.poison),
            released: get(&self.released),
            lost: get(&self.lost),
            held: get(&self.held),
        }
    }
}

/// Everything a message task needs, shared behind an `Arc`.
struct Ctx {
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
    metrics: Arc<Metrics>,
    /// Applies each ending to its message; holds the attempt limit in force.
    side: QueueSide,
    stats: Stats,
    /// Cancelled when the shutdown grace is over: running handlers are dropped and released.
    hard_stop: CancellationToken,
    /// Cancelled at shutdown: held messages are released at once.
    stop: CancellationToken,
    /// Which dependencies are down; receiving waits while a handler dependency is.
    pauses: Pauses,
    /// Beats whenever a slot is free or a handler run ends; stale (and `/health` false) only
    /// when every slot has been busy with one run for longer than the message deadline.
    slots: Heartbeat,
}

/// The queue consumer. Build with [`Consumer::new`], run with [`Consumer::run`].
pub struct Consumer {
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
    max_attempts: u32,
    metrics: Arc<Metrics>,
    health: Health,
    pauses: Pauses,
}

impl Consumer {
    /// Prepares a consumer; the effective attempt limit is `max_attempts` lowered to the queue's
    /// `maxReceiveCount` (so the final attempt happens before SQS redrives), with a warning.
    pub fn new(
        queue: Arc<dyn Queue>,
        handler: Arc<dyn Handler>,
        settings: ConsumerSettings,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Self {
        let max_attempts = match queue.max_receive_count() {
            Some(limit) if limit < settings.max_attempts => {
                tracing::warn!(
                    configured = settings.max_attempts,
                    max_receive_count = limit,
                    "consumer.max_attempts lowered to the queue's maxReceiveCount"
                );
                limit
            }
            _ => settings.max_attempts,
        }
        .max(1);
        let pauses = Pauses::new(health.check("paused", true), metrics.clone());
        Self {
            queue,
            handler,
            settings,
            max_attempts,
            metrics,
            health,
            pauses,
        }
    }

    /// The attempt limit in force (see [`Consumer::new`]).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Consumes until `shutdown` is cancelled, then drains: no new receive is issued, an
    /// in-flight receive is allowed to finish and what it returns is made visible again at once;
    /// running handlers get `grace`, after which they are dropped and their messages made visible
    /// again; pending deletes are flushed. Returns what was done.
    pub async fn run(self, shutdown: CancellationToken) -> Summary {
        let concurrency = self.settings.concurrency.max(1);
        self.metrics.concurrency_limit.set(concurrency as i64);
        let reach = Arc::new(Reachability {
            check: self.health.check("queue", true),
            failures: AtomicU32::new(0),
            unready_after: self.settings.unready_after.max(1),
            pauses: self.pauses.clone(),
        });
        let beat = self
            .health
            .heartbeat("poll_loop", self.settings.wait + Duration::from_secs(30));
        let slots = self
            .health
            .heartbeat("message_slots", self.settings.deadline + SLOT_MARGIN);
        let deleter = Deleter::spawn(self.queue.clone());
        let side = QueueSide {
            queue: self.queue.clone(),
            dead_letter: self.queue.dead_letter_queue(),
            deletes: deleter.sender(),
            retry: self.settings.retry_backoff(),
            max_attempts: self.max_attempts,
        };
        let ctx = Arc::new(Ctx {
            queue: self.queue,
            handler: self.handler,
            settings: self.settings,
            metrics: self.metrics,
            side,
            stats: Stats::default(),
            hard_stop: CancellationToken::new(),
            stop: shutdown.clone(),
            pauses: self.pauses.clone(),
            slots,
        });
        if ctx.side.dead_letter.is_none() {
            tracing::warn!(
                "no dead-letter queue: poison messages will be logged whole, then deleted"
            );
        }
        tracing::info!(
            concurrency,
            max_attempts = ctx.side.max_attempts,
            wait_seconds = ctx.settings.wait.as_secs(),
            visibility_seconds = ctx.settings.visibility.as_secs(),
            "consumer started"
        );

        let depth_stop = CancellationToken::new();
        let depth = tokio::spawn(poll::poll_depth(
            ctx.clone(),
            reach.clone(),
            depth_stop.clone(),
        ));
        let grace = tokio::spawn({
            let shutdown = shutdown.clone();
            let hard_stop = ctx.hard_stop.clone();
            let grace = ctx.settings.grace;
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                hard_stop.cancel();
            }
        });

        let tasks = TaskTracker::new();
        poll::poll_loop(&ctx, &reach, &beat, &tasks, concurrency, &shutdown).await;

        tasks.close();
        tracing::info!(
            in_flight = tasks.len(),
            "receiving stopped; draining in-flight messages"
        );
        tasks.wait().await;
        grace.abort();
        depth_stop.cancel();
        let _ = depth.await;
        deleter.flush().await;
        let summary = ctx.stats.summary();
        tracing::info!(?summary, "consumer stopped");
        summary
    }
}
