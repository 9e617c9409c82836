//! The receive side: the poll loop, queue reachability, releasing what cannot be handled, and
//! the queue depth gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Ctx;
use super::task::process;
use crate::health::{Check, Heartbeat};
use crate::outcome::Dependency;
use crate::queue::{MAX_BATCH, QueueError, ReceivedMessage};
use crate::retry::Backoff;
use crate::shutdown::Every;

/// Poll errors back off from 250 ms, doubling up to 10 s.
const POLL_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(250), Duration::from_secs(10));
/// The poll loop proves liveness at least this often even while every permit is busy.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Tracks consecutive failed queue calls for the "queue" readiness check.
pub(super) struct Reachability {
    pub(super) check: Check,
    pub(super) failures: AtomicU32,
    pub(super) unready_after: u32,
    pub(super) pauses: super::Pauses,
}

impl Reachability {
    fn ok(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("queue reachable again");
        }
        self.pauses.resume(Dependency::Queue);
        self.check.set(true, "ok");
    }

    fn failed(&self, err: &QueueError) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.unready_after {
            self.check
                .set(false, format!("{n} consecutive queue errors; last: {err}"));
            self.pauses.pause(Dependency::Queue, &err.to_string());
        }
    }
}

pub(super) async fn poll_loop(
    ctx: &Arc<Ctx>,
    reach: &Reachability,
    beat: &Heartbeat,
    tasks: &TaskTracker,
    concurrency: usize,
    shutdown: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut errors = POLL_BACKOFF.steps();
    loop {
        beat.beat();
        if permits.available_permits() > 0 {
            ctx.slots.beat();
        }
        if ctx.pauses.blocks_receiving() {
            // A dependency is down: receive nothing until a held message finds it back.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ctx.pauses.unblocked() => {}
                _ = tokio::time::sleep(BEAT_EVERY) => {}
            }
            continue;
        }
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = tokio::time::sleep(BEAT_EVERY) => continue,
        };
        if ctx.pauses.blocks_receiving() {
            continue;
        }
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
                errors.reset();
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
                let delay = errors.next_delay();
                reach.failed(&err);
                ctx.metrics
                    .receive_requests
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %err, consecutive = errors.count(), retry_in_ms = delay.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
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

/// Refreshes `queue_messages{state}`; each call also counts toward queue reachability.
pub(super) async fn poll_depth(ctx: Arc<Ctx>, reach: Arc<Reachability>, stop: CancellationToken) {
    let mut every = Every::new(ctx.settings.depth_interval, stop);
    while let Some(result) = every.round(ctx.queue.approximate_depth()).await {
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
