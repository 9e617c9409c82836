//! The queue side of the outcome policy: delete, hide for a backoff, or dead-letter.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::{OutgoingMessage, Queue, QueueError, ReceivedMessage};
use crate::retry::Backoff;

use super::Outcome;
pub(crate) use super::deleter::{DeleteSender, Deleter};

/// Longest reason text copied into a dead-letter message attribute.
const MAX_REASON: usize = 1024;

/// How the supervised handler run ended.
pub(crate) enum Ending {
    Finished(Outcome),
    Panicked(String),
    /// The heartbeat found the receipt invalid: another consumer may own the message.
    Lost,
    /// Shutdown grace over: the handler was dropped.
    Released,
}

/// What settling did, as the `messages_processed{outcome}` label.
pub(crate) type Settled = &'static str;

/// Everything the queue side needs.
pub(crate) struct QueueSide {
    pub queue: Arc<dyn Queue>,
    pub dead_letter: Option<Arc<dyn Queue>>,
    pub deletes: DeleteSender,
    /// Visibility delay of a transient failure, by attempt.
    pub retry: Backoff,
    pub max_attempts: u32,
}

impl QueueSide {
    /// Applies the ending to the message; returns what to count.
    pub async fn settle(&self, message: &ReceivedMessage, attempt: u32, ending: Ending) -> Settled {
        match ending {
            Ending::Finished(Outcome::Done) => {
                tracing::debug!("done");
                self.deletes.delete(message);
                "done"
            }
            Ending::Finished(Outcome::Skipped) => {
                tracing::debug!("skipped");
                self.deletes.delete(message);
                "skipped"
            }
            Ending::Finished(Outcome::Retry { reason }) => {
                self.retry(message, attempt, &reason).await
            }
            Ending::Panicked(text) => {
                tracing::error!(panic = %text, "handler panicked; treated as a transient failure");
                self.retry(message, attempt, "handler panicked").await
            }
            Ending::Finished(Outcome::Failed { reason }) => {
                tracing::warn!(%reason, attempt, "message failed");
                self.dead_letter_then_delete(message, attempt, "failed", &reason)
                    .await
            }
            Ending::Finished(Outcome::Poison { reason }) => {
                tracing::error!(%reason, "poison message");
                self.dead_letter_then_delete(message, attempt, "poison", &reason)
                    .await
            }
            Ending::Lost => "lost",
            // The consumer holds these itself; one reaching here is handed back unsettled.
            Ending::Released | Ending::Finished(Outcome::Hold { .. }) => {
                if let Err(err) = self
                    .queue
                    .change_visibility(&message.receipt_handle, Duration::ZERO)
                    .await
                {
                    tracing::warn!(error = %err, "release failed; message reappears after its visibility timeout");
                }
                tracing::info!("handler cancelled at shutdown; message released");
                "released"
            }
        }
    }

    async fn dead_letter_then_delete(
        &self,
        message: &ReceivedMessage,
        attempt: u32,
        outcome: Settled,
        reason: &str,
    ) -> Settled {
        if self.dead_letter(message, outcome, reason).await {
            self.deletes.delete(message);
            outcome
        } else {
            self.retry(message, attempt, "dead-letter copy failed")
                .await
        }
    }

    /// Hides the message for a jittered exponential backoff so it comes back later.
    async fn retry(&self, message: &ReceivedMessage, attempt: u32, reason: &str) -> Settled {
        let delay = self.retry.delay(attempt);
        if attempt >= self.max_attempts {
            tracing::warn!(
                %reason,
                attempt,
                "transient failure on the final attempt; the queue's redrive policy decides what happens next"
            );
        } else {
            tracing::info!(%reason, attempt, retry_in_s = delay.as_secs(), "transient failure; retrying later");
        }
        match self
            .queue
            .change_visibility(&message.receipt_handle, delay)
            .await
        {
            Ok(()) => "retry",
            Err(QueueError::ReceiptInvalid(_)) => "lost",
            Err(err) => {
                tracing::warn!(error = %err, "could not set the retry delay; message reappears after its visibility timeout");
                "retry"
            }
        }
    }

    /// Copies the message unchanged to the dead-letter queue. Returns whether the message may
    /// now be deleted: true when copied, or when there is no dead-letter queue (a poison body is
    /// then logged whole) or the copy is refused for good (body logged whole); false on a
    /// transient error.
    async fn dead_letter(&self, message: &ReceivedMessage, outcome: &str, reason: &str) -> bool {
        let Some(dlq) = &self.dead_letter else {
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
}
