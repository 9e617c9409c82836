//! One message's task: run the handler in its own task, keep the message invisible while it
//! runs, then settle the outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Ctx, Delivery};
use crate::outcome::message::Ending;
use crate::queue::{QueueError, ReceivedMessage};

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
        let ending = supervise(&ctx, &message, delivery).await;
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

/// Runs the handler in its own task (so a panic is contained) while renewing visibility.
async fn supervise(ctx: &Ctx, message: &ReceivedMessage, delivery: Delivery) -> Ending {
    let handler = ctx.handler.clone();
    let mut task = tokio::spawn(
        async move { handler.handle(&delivery).await }.instrument(tracing::Span::current()),
    );
    let period = crate::config::renewal_period(ctx.settings.visibility);
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
