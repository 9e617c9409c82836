//! The queue side of the outcome policy: delete, hide for a backoff, or dead-letter.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::{
    MAX_MESSAGE_BYTES, OutgoingMessage, Queue, QueueError, ReceivedMessage, attribute_size,
};
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
    /// now be deleted: true only when copied, or when there is no dead-letter queue at all (a
    /// poison body is then logged whole). A copy that fails — transiently or for good — never
    /// leads to a delete: the message takes the retry path, and one the dead-letter queue keeps
    /// refusing reaches it through the queue's own redrive policy after `maxReceiveCount`
    /// deliveries (docs/reliability.md).
    async fn dead_letter(&self, message: &ReceivedMessage, outcome: &str, reason: &str) -> bool {
        let Some(dlq) = &self.dead_letter else {
            if outcome == "poison" {
                tracing::error!(body = %message.body, "no dead-letter queue; poison body logged whole");
            }
            return true;
        };
        let copy = dead_letter_copy(message, outcome, reason);
        if copy.attributes.len() < 4 {
            tracing::warn!(
                %reason,
                kept = ?copy.attributes.keys().collect::<Vec<_>>(),
                body_bytes = message.body.len(),
                "dead-letter attributes trimmed to fit the body within SQS's 256 KiB; reason logged here"
            );
        }
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
                tracing::error!(
                    error = %err,
                    body = %message.body,
                    "dead-letter queue refused the copy; body logged whole, message kept for the queue's redrive policy"
                );
                false
            }
        }
    }
}

/// The dead-letter copy: the body unchanged, plus `outcome`, `reason`, `original_message_id` and
/// `receive_count` attributes. The body is never cut; when body and attributes together would
/// exceed [`MAX_MESSAGE_BYTES`], the ids go first, then the reason is shortened, then `outcome`
/// goes (the log line names what was dropped). Attribute values keep only characters SQS accepts.
pub(crate) fn dead_letter_copy(
    message: &ReceivedMessage,
    outcome: &str,
    reason: &str,
) -> OutgoingMessage {
    let reason: String = sqs_text(reason).chars().take(MAX_REASON).collect();
    let mut copy = OutgoingMessage::new(message.body.clone())
        .attribute("outcome", outcome)
        .attribute("reason", reason.clone())
        .attribute("original_message_id", sqs_text(&message.message_id))
        .attribute("receive_count", message.receive_count.to_string());
    for optional in ["receive_count", "original_message_id"] {
        if copy.size() > MAX_MESSAGE_BYTES {
            copy.attributes.remove(optional);
        }
    }
    if copy.size() > MAX_MESSAGE_BYTES {
        copy.attributes.remove("reason");
        let room = MAX_MESSAGE_BYTES.saturating_sub(copy.size() + attribute_size("reason", ""));
        let mut cut = room.min(reason.len());
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        if room > 0 && cut > 0 {
            copy.attributes
                .insert("reason".into(), reason[..cut].to_string());
        }
    }
    if copy.size() > MAX_MESSAGE_BYTES {
        copy.attributes.clear();
    }
    copy
}

/// `text` with every character SQS refuses in a message (outside `#x9 | #xA | #xD | #x20-#xD7FF
/// | #xE000-#xFFFD | #x10000-#x10FFFF`) replaced by U+FFFD.
fn sqs_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t'
            | '\n'
            | '\r'
            | '\u{20}'..='\u{D7FF}'
            | '\u{E000}'..='\u{FFFD}'
            | '\u{10000}'.. => c,
            _ => '\u{FFFD}',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(body: String) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m-1".into(),
            receipt_handle: "r".into(),
            body,
            receive_count: 2,
            attributes: Default::default(),
        }
    }

    #[test]
    fn a_small_body_keeps_every_attribute() {
        let copy = dead_letter_copy(&received("{}".into()), "poison", "bad\u{0}");
        assert_eq!(copy.body, "{}");
        assert_eq!(copy.attributes["outcome"], "poison");
        assert_eq!(copy.attributes["reason"], "bad\u{FFFD}");
        assert_eq!(copy.attributes["original_message_id"], "m-1");
        assert_eq!(copy.attributes["receive_count"], "2");
    }

    #[test]
    fn a_large_body_is_kept_whole_and_the_attributes_shrink_to_fit() {
        let reason = "r".repeat(500);
        for body_bytes in [
            MAX_MESSAGE_BYTES - 2048,
            MAX_MESSAGE_BYTES - 100,
            MAX_MESSAGE_BYTES - 40,
            MAX_MESSAGE_BYTES - 19,
            MAX_MESSAGE_BYTES - 5,
            MAX_MESSAGE_BYTES,
        ] {
            let body = "x".repeat(body_bytes);
            let copy = dead_letter_copy(&received(body.clone()), "poison", &reason);
            assert_eq!(copy.body, body, "the body is never cut");
            assert!(
                copy.size() <= MAX_MESSAGE_BYTES,
                "{body_bytes}: {}",
                copy.size()
            );
            let room = MAX_MESSAGE_BYTES - body_bytes;
            if room >= 2048 {
                assert_eq!(copy.attributes.len(), 4);
            } else if room >= 40 {
                assert_eq!(copy.attributes["outcome"], "poison");
                assert!(reason.starts_with(&copy.attributes["reason"]));
                assert!(!copy.attributes["reason"].is_empty());
            } else if room >= 19 {
                assert_eq!(
                    copy.attributes.get("outcome").map(String::as_str),
                    Some("poison")
                );
            }
        }
    }
}
