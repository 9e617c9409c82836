//! One message's task: run the handler in its own task, keep the message invisible while it
//! runs (and while it is held for a dependency), then settle the outcome.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Ctx, Delivery};
use crate::outcome::message::Ending;
use crate::outcome::{Dependency, Outcome};
use crate::queue::{QueueError, ReceivedMessage};
use crate::retry::{Backoff, Steps};

/// Probes of a held message: from 1 s, doubling to 30 s, jittered so held messages do not
/// hit a recovering dependency together.
const HOLD_PROBES: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)).full_jitter();
/// Longest a message is held after its receipt: SQS refuses visibility beyond 12 h from the
/// receipt, so the message is released before that (see docs/decisions.md).
const MAX_HOLD: Duration = Duration::from_secs(11 * 3600 + 30 * 60);

/// Decrements `in_flight` however the task ends.
struct InFlight(Arc<Ctx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

pub(super) async fn process(ctx: Arc<Ctx>, message: ReceivedMessage, permit: OwnedSemaphorePermit) {
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
            is_last_attempt: attempt >= ctx.side.max_attempts,
        };
        let mut lease = Lease::new(&ctx);
        let ending = run_holding(&ctx, &message, delivery, &mut lease, started).await;
        // The slot is free as soon as the handler is; acknowledging is quick and batched.
        drop(permit);
        let settled = ctx.side.settle(&message, attempt, ending).await;
        ctx.stats.count(&ctx.metrics, settled);
        ctx.metrics
            .message_duration
            .observe(started.elapsed().as_secs_f64());
    }
    .instrument(span)
    .await;
}

/// Runs the handler; while it answers [`Outcome::Hold`] the message stays invisible and the
/// handler runs again after a capped backoff, so a dependency outage spends no receive count.
async fn run_holding(
    ctx: &Ctx,
    message: &ReceivedMessage,
    delivery: Delivery,
    lease: &mut Lease,
    received: Instant,
) -> Ending {
    let mut probes = HOLD_PROBES.steps();
    let mut held: Option<Dependency> = None;
    let ending = loop {
        let ending = supervise(ctx, message, delivery.clone(), lease).await;
        let Ending::Finished(Outcome::Hold { dependency, reason }) = ending else {
            break ending;
        };
        if held.is_none() {
            ctx.metrics.held.inc();
            ctx.stats.held.fetch_add(1, Ordering::Relaxed);
        }
        if held.is_some_and(|d| d != dependency) {
            ctx.pauses
                .release_hold(held.take().expect("checked"), false);
        }
        if held.is_none() {
            ctx.pauses.hold(dependency);
        }
        held = Some(dependency);
        ctx.pauses.pause(dependency, &reason);
        if received.elapsed() >= MAX_HOLD {
            tracing::warn!(
                dependency = dependency.as_str(),
                held_s = received.elapsed().as_secs(),
                "held too long; released to the queue (its receive count is spent)"
            );
            break Ending::Released;
        }
        let delay = probes.next_delay();
        tracing::info!(
            dependency = dependency.as_str(),
            %reason,
            probe = probes.count(),
            retry_in_ms = delay.as_millis() as u64,
            "message held until the dependency answers"
        );
        match lease
            .guard(ctx, message, tokio::time::sleep(delay), true)
            .await
        {
            Ok(()) => {}
            Err(Interrupted::Lost) => break Ending::Lost,
            Err(Interrupted::Stopped) => break Ending::Released,
        }
    };
    if let Some(dependency) = held {
        ctx.metrics.held.dec();
        let answered = matches!(ending, Ending::Finished(_) | Ending::Panicked(_));
        ctx.pauses.release_hold(dependency, answered);
    }
    ending
}

/// Runs the handler in its own task (so a panic is contained) while renewing visibility.
async fn supervise(
    ctx: &Ctx,
    message: &ReceivedMessage,
    delivery: Delivery,
    lease: &mut Lease,
) -> Ending {
    let handler = ctx.handler.clone();
    let mut task = tokio::spawn(
        async move { handler.handle(&delivery).await }.instrument(tracing::Span::current()),
    );
    let deadline = ctx.settings.deadline;
    let run = async {
        tokio::select! {
            out = &mut task => Some(out),
            _ = tokio::time::sleep(deadline) => None,
        }
    };
    let ending = match lease.guard(ctx, message, run, false).await {
        Ok(Some(Ok(outcome))) => Ending::Finished(outcome),
        Ok(Some(Err(err))) if err.is_panic() => Ending::Panicked(panic_text(err.into_panic())),
        Ok(Some(Err(_))) => Ending::Released,
        Ok(None) => {
            task.abort();
            tracing::warn!(
                deadline_s = deadline.as_secs(),
                "handler still running at the message deadline; abandoned, message retried later"
            );
            Ending::Finished(Outcome::Retry {
                reason: format!(
                    "no outcome within consumer.message_deadline_seconds ({} s)",
                    deadline.as_secs()
                ),
            })
        }
        Err(interrupted) => {
            task.abort();
            match interrupted {
                Interrupted::Lost => Ending::Lost,
                Interrupted::Stopped => Ending::Released,
            }
        }
    };
    // A handler run ended, so this slot is not stuck (see `Ctx::slots`).
    ctx.slots.beat();
    ending
}

/// Why a guarded wait ended early.
enum Interrupted {
    /// The receipt no longer owns the message.
    Lost,
    /// Shutdown (grace over, or any shutdown while only waiting).
    Stopped,
}

/// Keeps one message invisible: renews its visibility every third of the timeout, each call
/// bounded by a timeout shorter than that period, across handler runs and hold waits.
///
/// Ownership ends when SQS says the receipt is stale, or when renewals kept failing until the
/// last visibility granted is about to run out (another consumer may receive the message then):
/// the handler is abandoned and its outcome not recorded.
struct Lease {
    period: Duration,
    next: Instant,
    /// When the last visibility granted runs out (at the latest: measured from before the call).
    expires: Instant,
    /// Failed renewals in a row: the next try backs off instead of hammering the queue.
    failures: Steps,
}

impl Lease {
    /// A lease starting now; the receive that granted the first visibility happened just before.
    fn new(ctx: &Ctx) -> Self {
        let period = crate::config::renewal_period(ctx.settings.visibility);
        let now = Instant::now();
        Self {
            period,
            next: now + period,
            expires: now + ctx.settings.visibility,
            failures: Backoff::exponential(Duration::from_secs(1), period).steps(),
        }
    }

    /// Awaits `work` while renewing visibility; `soft_stop` also ends the wait at shutdown (a
    /// held message is released at once instead of waiting for the grace).
    async fn guard<F: Future>(
        &mut self,
        ctx: &Ctx,
        message: &ReceivedMessage,
        work: F,
        soft_stop: bool,
    ) -> Result<F::Output, Interrupted> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = ctx.hard_stop.cancelled() => return Err(Interrupted::Stopped),
                _ = ctx.stop.cancelled(), if soft_stop => return Err(Interrupted::Stopped),
                _ = tokio::time::sleep_until(self.next) => {
                    if !self.renew(ctx, message).await {
                        return Err(Interrupted::Lost);
                    }
                }
            }
        }
    }

    /// One renewal; false when the message is no longer ours.
    async fn renew(&mut self, ctx: &Ctx, message: &ReceivedMessage) -> bool {
        let extensions = &ctx.metrics.visibility_extensions;
        let asked = Instant::now();
        let call = ctx
            .queue
            .change_visibility(&message.receipt_handle, ctx.settings.visibility);
        let result = match tokio::time::timeout(self.period / 2, call).await {
            Ok(result) => result,
            Err(_) => Err(QueueError::Transient(format!(
                "no answer within {} ms",
                (self.period / 2).as_millis()
            ))),
        };
        match result {
            Ok(()) => {
                extensions.with_label_values(&["ok"]).inc();
                self.failures.reset();
                self.expires = asked + ctx.settings.visibility;
                self.next = Instant::now() + self.period;
                true
            }
            // A deleted queue owns nothing either.
            Err(QueueError::ReceiptInvalid(detail) | QueueError::NotFound(detail)) => {
                extensions.with_label_values(&["lost"]).inc();
                tracing::warn!(%detail, "visibility lost; handler cancelled, outcome not recorded");
                false
            }
            Err(err) => {
                extensions.with_label_values(&["error"]).inc();
                let delay = self.failures.next_delay();
                // The next try must still come before the visibility runs out (with room for
                // the call's own timeout); otherwise the message is no longer safely ours.
                let last_chance = self.expires.checked_sub(self.period / 2);
                let next = Instant::now() + delay;
                match last_chance {
                    Some(limit) if Instant::now() < limit => {
                        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "visibility extension failed; trying again");
                        self.next = next.min(limit);
                        true
                    }
                    _ => {
                        extensions.with_label_values(&["lost"]).inc();
                        tracing::warn!(error = %err, "visibility could not be renewed before it ran out; handler cancelled, outcome not recorded");
                        false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_text(Box::new("boom")), "boom");
        assert_eq!(panic_text(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_text(Box::new(7u8)), "non-string panic payload");
    }
}
