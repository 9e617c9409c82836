//! The consumer: receives messages with bounded concurrency, keeps each one invisible while its
//! handler runs, and turns the handler's [`Outcome`] into the queue operation of design D1.
//!
//! Shape: one poll loop owns a semaphore of `concurrency` permits. It waits for a free permit,
//! grabs every other free one (up to 10) and asks the queue for that many messages, so nothing
//! waits in memory while its visibility clock runs (D12). Each message runs in a tracked task that
//! spawns the handler (a panic surfaces as a `JoinError`), renews visibility every third of the
//! timeout while the handler runs, then deletes (batched), backs off, or dead-letters it.
//! Shutdown (D11) never drops an in-flight receive; see [`Consumer::run`].

mod backoff;
mod deleter;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use backoff::{retry_ceiling, retry_delay};
use deleter::Deleter;

use crate::config::Config;
use crate::health::{Check, Health};
use crate::metrics::Metrics;
use crate::queue::{MAX_BATCH, OutgoingMessage, Queue, QueueError, ReceivedMessage};

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

/// What became of a delivery (design D1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work committed: delete the message.
    Done,
    /// Nothing to do (fresh profile, cancelled job, no qualifying books): delete the message.
    Skipped,
    /// Transient failure: let the message come back after a backoff.
    Retry { reason: String },
    /// Permanent failure, already recorded by the handler: copy to the dead-letter queue (when
    /// one exists, for inspection and redrive), then delete.
    Failed { reason: String },
    /// The message itself is invalid: send it unchanged to the dead-letter queue (or log it
    /// whole when there is none), then delete. Never retried.
    Poison { reason: String },
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
        }
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
}

impl Stats {
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
        }
    }
}

/// Poll errors back off from this delay, doubling up to [`POLL_BACKOFF_CAP`].
const POLL_BACKOFF_BASE: Duration = Duration::from_millis(250);
const POLL_BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The poll loop proves liveness at least this often even while every permit is busy.
const BEAT_EVERY: Duration = Duration::from_secs(5);
/// Longest reason text copied into a dead-letter message attribute.
const MAX_REASON: usize = 1024;

/// Everything a message task needs, shared behind an `Arc`.
struct Ctx {
    queue: Arc<dyn Queue>,
    dead_letter: Option<Arc<dyn Queue>>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
    max_attempts: u32,
    metrics: Arc<Metrics>,
    deletes: deleter::DeleteSender,
    stats: Stats,
    /// Cancelled when the shutdown grace is over: running handlers are dropped and released.
    hard_stop: CancellationToken,
}

/// The queue consumer. Build with [`Consumer::new`], run with [`Consumer::run`].
pub struct Consumer {
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
    max_attempts: u32,
    metrics: Arc<Metrics>,
    health: Health,
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
        Self {
            queue,
            handler,
            settings,
            max_attempts,
            metrics,
            health,
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
        });
        let beat = self
            .health
            .heartbeat("poll_loop", self.settings.wait + Duration::from_secs(30));
        let deleter = Deleter::spawn(self.queue.clone());
        let ctx = Arc::new(Ctx {
            dead_letter: self.queue.dead_letter_queue(),
            queue: self.queue,
            handler: self.handler,
            settings: self.settings,
            max_attempts: self.max_attempts,
            metrics: self.metrics,
            deletes: deleter.sender(),
            stats: Stats::default(),
            hard_stop: CancellationToken::new(),
        });
        if ctx.dead_letter.is_none() {
            tracing::warn!(
                "no dead-letter queue: poison messages will be logged whole, then deleted"
            );
        }
        tracing::info!(
            concurrency,
            max_attempts = ctx.max_attempts,
            wait_seconds = ctx.settings.wait.as_secs(),
            visibility_seconds = ctx.settings.visibility.as_secs(),
            "consumer started"
        );

        let depth_stop = CancellationToken::new();
        let depth = tokio::spawn(poll_depth(ctx.clone(), reach.clone(), depth_stop.clone()));
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
        poll_loop(&ctx, &reach, &beat, &tasks, concurrency, &shutdown).await;

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

/// Tracks consecutive failed queue calls for the "queue" readiness check.
struct Reachability {
    check: Check,
    failures: AtomicU32,
    unready_after: u32,
}

impl Reachability {
    fn ok(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("queue reachable again");
        }
        self.check.set(true, "ok");
    }

    fn failed(&self, err: &QueueError) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.unready_after {
            self.check
                .set(false, format!("{n} consecutive queue errors; last: {err}"));
        }
    }
}

async fn poll_loop(
    ctx: &Arc<Ctx>,
    reach: &Reachability,
    beat: &crate::health::Heartbeat,
    tasks: &TaskTracker,
    concurrency: usize,
    shutdown: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut errors: u32 = 0;
    loop {
        beat.beat();
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = tokio::time::sleep(BEAT_EVERY) => continue,
        };
        let mut held = vec![first];
        while held.len() < MAX_BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        tracing::debug!(max = held.len(), "receive request");
        // Deliberately not raced against `shutdown`: dropping this future would leave whatever
        // the server already handed out invisible for the whole visibility timeout.
        let result = ctx
            .queue
            .receive(held.len(), ctx.settings.wait, ctx.settings.visibility)
            .await;
        match result {
            Ok(messages) => {
                errors = 0;
                reach.ok();
                let label = if messages.is_empty() {
                    "empty"
                } else {
                    "messages"
                };
                ctx.metrics
                    .receive_requests
                    .with_label_values(&[label])
                    .inc();
                let n = messages.len() as u64;
                ctx.stats.received.fetch_add(n, Ordering::Relaxed);
                ctx.metrics.messages_received.inc_by(n);
                if shutdown.is_cancelled() {
                    release_all(ctx, messages).await;
                    break;
                }
                start_all(ctx, tasks, messages, held).await;
            }
            Err(err) => {
                drop(held);
                errors += 1;
                reach.failed(&err);
                ctx.metrics
                    .receive_requests
                    .with_label_values(&["error"])
                    .inc();
                let delay = poll_backoff(errors);
                tracing::warn!(error = %err, consecutive = errors, retry_in_ms = delay.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn poll_backoff(consecutive: u32) -> Duration {
    let factor = 2u32.saturating_pow(consecutive.saturating_sub(1).min(16));
    POLL_BACKOFF_BASE
        .saturating_mul(factor)
        .min(POLL_BACKOFF_CAP)
}

/// Starts one task per message, each owning one permit; any surplus is released.
async fn start_all(
    ctx: &Arc<Ctx>,
    tasks: &TaskTracker,
    messages: Vec<ReceivedMessage>,
    mut held: Vec<OwnedSemaphorePermit>,
) {
    let mut surplus = Vec::new();
    for message in messages {
        match held.pop() {
            Some(permit) => {
                tasks.spawn(process(ctx.clone(), message, permit));
            }
            None => surplus.push(message),
        }
    }
    if !surplus.is_empty() {
        release_all(ctx, surplus).await;
    }
}

/// Makes received messages visible again at once, without handling them.
async fn release_all(ctx: &Ctx, messages: Vec<ReceivedMessage>) {
    if messages.is_empty() {
        return;
    }
    tracing::info!(
        count = messages.len(),
        "releasing messages received during shutdown"
    );
    for chunk in messages.chunks(MAX_BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|m| (m.receipt_handle.clone(), Duration::ZERO))
            .collect();
        match ctx.queue.change_visibility_batch(&entries).await {
            Ok(failed) => {
                for f in failed {
                    tracing::warn!(message_id = %chunk[f.index].message_id, code = %f.code, "release refused");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "release failed; messages reappear after their visibility timeout")
            }
        }
        let n = chunk.len() as u64;
        ctx.stats.released.fetch_add(n, Ordering::Relaxed);
        ctx.metrics
            .messages_processed
            .with_label_values(&["released"])
            .inc_by(n);
    }
}

/// How the supervised handler run ended.
enum Ending {
    Finished(Outcome),
    Panicked(String),
    /// The heartbeat found the receipt invalid: another consumer may own the message.
    Lost,
    /// Shutdown grace over: the handler was dropped.
    Released,
}

/// Decrements `in_flight` however the task ends.
struct InFlight(Arc<Ctx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

async fn process(ctx: Arc<Ctx>, message: ReceivedMessage, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    ctx.metrics.in_flight.inc();
    let _in_flight = InFlight(ctx.clone());
    let span = tracing::info_span!(
        "message",
        message_id = %message.message_id,
        receive_count = message.receive_count,
        job_id = tracing::field::Empty,
        entity = tracing::field::Empty,
    );
    async {
        let attempt = message.receive_count.max(1);
        let delivery = Delivery {
            message_id: message.message_id.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
            attempt,
            is_last_attempt: attempt >= ctx.max_attempts,
        };
        let ending = supervise(&ctx, &message, delivery).await;
        // The slot is free as soon as the handler is; acknowledging is quick and batched.
        drop(permit);
        settle(&ctx, &message, attempt, ending).await;
        ctx.metrics
            .message_duration
            .observe(started.elapsed().as_secs_f64());
    }
    .instrument(span)
    .await;
}

/// Runs the handler in its own task (so a panic is contained) while renewing visibility.
async fn supervise(ctx: &Ctx, message: &ReceivedMessage, delivery: Delivery) -> Ending {
    let handler = ctx.handler.clone();
    let mut task = tokio::spawn(
        async move { handler.handle(&delivery).await }.instrument(tracing::Span::current()),
    );
    let period = (ctx.settings.visibility / 3).max(Duration::from_millis(500));
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            joined = &mut task => {
                return match joined {
                    Ok(outcome) => Ending::Finished(outcome),
                    Err(err) if err.is_panic() => Ending::Panicked(panic_text(err.into_panic())),
                    Err(_) => Ending::Released,
                };
            }
            _ = ctx.hard_stop.cancelled() => {
                task.abort();
                return Ending::Released;
            }
            _ = tokio::time::sleep_until(next) => {
                match ctx.queue.change_visibility(&message.receipt_handle, ctx.settings.visibility).await {
                    Ok(()) => {
                        ctx.metrics.visibility_extensions.with_label_values(&["ok"]).inc();
                        next = Instant::now() + period;
                    }
                    Err(QueueError::ReceiptInvalid(detail)) => {
                        task.abort();
                        ctx.metrics.visibility_extensions.with_label_values(&["lost"]).inc();
                        tracing::warn!(%detail, "visibility lost; handler cancelled, outcome not recorded");
                        return Ending::Lost;
                    }
                    Err(err) => {
                        ctx.metrics.visibility_extensions.with_label_values(&["error"]).inc();
                        tracing::warn!(error = %err, "visibility extension failed; trying again");
                        next = Instant::now() + period.min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

fn count(ctx: &Ctx, outcome: &str) {
    let stat = match outcome {
        "done" => &ctx.stats.done,
        "skipped" => &ctx.stats.skipped,
        "retry" => &ctx.stats.retried,
        "failed" => &ctx.stats.failed,
        "poison" => &ctx.stats.poison,
        "released" => &ctx.stats.released,
        _ => &ctx.stats.lost,
    };
    stat.fetch_add(1, Ordering::Relaxed);
    ctx.metrics
        .messages_processed
        .with_label_values(&[outcome])
        .inc();
}

/// Applies the outcome to the queue (design D1).
async fn settle(ctx: &Ctx, message: &ReceivedMessage, attempt: u32, ending: Ending) {
    match ending {
        Ending::Finished(Outcome::Done) => {
            tracing::debug!("done");
            ctx.deletes.delete(message);
            count(ctx, "done");
        }
        Ending::Finished(Outcome::Skipped) => {
            tracing::debug!("skipped");
            ctx.deletes.delete(message);
            count(ctx, "skipped");
        }
        Ending::Finished(Outcome::Retry { reason }) => retry(ctx, message, attempt, &reason).await,
        Ending::Panicked(text) => {
            tracing::error!(panic = %text, "handler panicked; treated as a transient failure");
            retry(ctx, message, attempt, "handler panicked").await;
        }
        Ending::Finished(Outcome::Failed { reason }) => {
            tracing::warn!(%reason, attempt, "message failed");
            if dead_letter(ctx, message, "failed", &reason).await {
                ctx.deletes.delete(message);
                count(ctx, "failed");
            } else {
                retry(ctx, message, attempt, "dead-letter copy failed").await;
            }
        }
        Ending::Finished(Outcome::Poison { reason }) => {
            tracing::error!(%reason, "poison message");
            if dead_letter(ctx, message, "poison", &reason).await {
                ctx.deletes.delete(message);
                count(ctx, "poison");
            } else {
                retry(ctx, message, attempt, "dead-letter copy failed").await;
            }
        }
        Ending::Lost => count(ctx, "lost"),
        Ending::Released => {
            if let Err(err) = ctx
                .queue
                .change_visibility(&message.receipt_handle, Duration::ZERO)
                .await
            {
                tracing::warn!(error = %err, "release failed; message reappears after its visibility timeout");
            }
            tracing::info!("handler cancelled at shutdown; message released");
            count(ctx, "released");
        }
    }
}

/// Hides the message for a jittered exponential backoff so it comes back later.
async fn retry(ctx: &Ctx, message: &ReceivedMessage, attempt: u32, reason: &str) {
    let delay = retry_delay(attempt, ctx.settings.retry_base, ctx.settings.retry_cap);
    if attempt >= ctx.max_attempts {
        tracing::warn!(
            %reason,
            attempt,
            "transient failure on the final attempt; the queue's redrive policy decides what happens next"
        );
    } else {
        tracing::info!(%reason, attempt, retry_in_s = delay.as_secs(), "transient failure; retrying later");
    }
    match ctx
        .queue
        .change_visibility(&message.receipt_handle, delay)
        .await
    {
        Ok(()) => count(ctx, "retry"),
        Err(QueueError::ReceiptInvalid(_)) => count(ctx, "lost"),
        Err(err) => {
            tracing::warn!(error = %err, "could not set the retry delay; message reappears after its visibility timeout");
            count(ctx, "retry");
        }
    }
}

/// Copies the message unchanged to the dead-letter queue. Returns whether the message may now be
/// deleted: true when copied, or when there is no dead-letter queue (a poison body is then
/// logged whole) or the copy is refused for good (body logged whole); false on a transient error.
async fn dead_letter(ctx: &Ctx, message: &ReceivedMessage, outcome: &str, reason: &str) -> bool {
    let Some(dlq) = &ctx.dead_letter else {
        if outcome == "poison" {
            tracing::error!(body = %message.body, "no dead-letter queue; poison body logged whole");
        }
        return true;
    };
    let reason: String = reason.chars().take(MAX_REASON).collect();
    let copy = OutgoingMessage::new(message.body.clone())
        .attribute("outcome", outcome)
        .attribute("reason", reason)
        .attribute("original_message_id", message.message_id.clone())
        .attribute("receive_count", message.receive_count.to_string());
    match dlq.send(&copy).await {
        Ok(id) => {
            tracing::info!(dead_letter_id = %id, outcome, "copied to the dead-letter queue");
            true
        }
        Err(err) if err.is_transient() => {
            tracing::warn!(error = %err, "dead-letter queue unavailable; retrying the message later");
            false
        }
        Err(err) => {
            tracing::error!(error = %err, body = %message.body, "dead-letter queue refused the message; body logged whole");
            true
        }
    }
}

/// Refreshes `queue_messages{state}`; each call also counts toward queue reachability.
async fn poll_depth(ctx: Arc<Ctx>, reach: Arc<Reachability>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.settings.depth_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = ctx.queue.approximate_depth() => r,
        };
        match result {
            Ok(depth) => {
                reach.ok();
                let g = &ctx.metrics.queue_messages;
                g.with_label_values(&["visible"]).set(depth.visible as i64);
                g.with_label_values(&["in_flight"])
                    .set(depth.in_flight as i64);
                g.with_label_values(&["delayed"]).set(depth.delayed as i64);
            }
            Err(err) => {
                reach.failed(&err);
                tracing::debug!(error = %err, "queue depth unavailable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_backoff_doubles_and_caps() {
        assert_eq!(poll_backoff(1), Duration::from_millis(250));
        assert_eq!(poll_backoff(2), Duration::from_millis(500));
        assert_eq!(poll_backoff(4), Duration::from_secs(2));
        assert_eq!(poll_backoff(30), POLL_BACKOFF_CAP);
    }

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_text(Box::new("boom")), "boom");
        assert_eq!(panic_text(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_text(Box::new(7u8)), "non-string panic payload");
    }
}
