//! `MemoryQueue`: an in-process [`Queue`] with SQS semantics (visibility timeouts, receipt
//! handles per delivery, receive counts, redrive to a dead-letter queue) for the embedded demo.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    BatchFailure, MAX_BATCH, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};

/// An in-memory queue; clones share the same messages.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken whenever a message may have become receivable, so long polls return at once.
    changed: Notify,
    redrive: Option<(u32, MemoryQueue)>,
}

#[derive(Default)]
struct State {
    messages: Vec<Stored>,
}

struct Stored {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

impl MemoryQueue {
    /// A queue without a dead-letter queue: messages are redelivered forever.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue that moves a message to its own in-memory dead-letter queue when it is received
    /// after `max_receive_count` deliveries (SQS redrive semantics).
    pub fn with_dead_letter(max_receive_count: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                redrive: Some((max_receive_count.max(1), MemoryQueue::new())),
                ..Shared::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("memory queue lock")
    }

    fn push(&self, message: &OutgoingMessage) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().messages.push(Stored {
            id: id.clone(),
            body: message.body.clone(),
            attributes: message.attributes.clone(),
            receive_count: 0,
            visible_at: Instant::now(),
            receipt: None,
        });
        self.shared.changed.notify_waiters();
        id
    }

    /// Takes what is receivable now; moves messages past the redrive limit to the DLQ.
    fn take(&self, max: usize, visibility: Duration) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        {
            let mut state = self.lock();
            let mut i = 0;
            while i < state.messages.len() && out.len() < max {
                if state.messages[i].visible_at > now {
                    i += 1;
                    continue;
                }
                if let Some((limit, _)) = &self.shared.redrive
                    && state.messages[i].receive_count >= *limit
                {
                    dead.push(state.messages.remove(i));
                    continue;
                }
                let m = &mut state.messages[i];
                m.receive_count += 1;
                m.visible_at = now + visibility;
                let receipt = uuid::Uuid::new_v4().to_string();
                m.receipt = Some(receipt.clone());
                out.push(ReceivedMessage {
                    message_id: m.id.clone(),
                    receipt_handle: receipt,
                    body: m.body.clone(),
                    receive_count: m.receive_count,
                    attributes: m.attributes.clone(),
                });
                i += 1;
            }
        }
        if let Some((_, dlq)) = &self.shared.redrive {
            for m in dead {
                dlq.push(&OutgoingMessage {
                    body: m.body,
                    attributes: m.attributes,
                });
            }
        }
        out
    }

    /// When the next invisible message becomes visible, if any.
    fn next_visible(&self) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .messages
            .iter()
            .map(|m| m.visible_at)
            .filter(|t| *t > now)
            .min()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = Instant::now() + wait;
        let max = max.clamp(1, MAX_BATCH);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let got = self.take(max, visibility);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            let wake = self.next_visible().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::Rejected(format!(
                "DeleteMessageBatch of {} entries; at most {MAX_BATCH}",
                receipts.len()
            )));
        }
        let mut state = self.lock();
        // Deleting a message that is already gone succeeds, as on SQS.
        state
            .messages
            .retain(|m| !m.receipt.as_ref().is_some_and(|r| receipts.contains(r)));
        Ok(Vec::new())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let now = Instant::now();
        {
            let mut state = self.lock();
            let Some(m) = state
                .messages
                .iter_mut()
                .find(|m| m.receipt.as_deref() == Some(receipt))
            else {
                return Err(QueueError::ReceiptInvalid(format!(
                    "no message holds receipt {receipt}"
                )));
            };
            if m.visible_at <= now {
                return Err(QueueError::ReceiptInvalid(format!(
                    "message {} is not in flight",
                    m.id
                )));
            }
            m.visible_at = now + timeout;
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        if entries.len() > MAX_BATCH {
            return Err(QueueError::Rejected(format!(
                "ChangeMessageVisibilityBatch of {} entries; at most {MAX_BATCH}",
                entries.len()
            )));
        }
        let mut failed = Vec::new();
        for (index, (receipt, timeout)) in entries.iter().enumerate() {
            if let Err(e) = self.change_visibility(receipt, *timeout).await {
                failed.push(BatchFailure {
                    index,
                    code: "ReceiptHandleIsInvalid".into(),
                    message: e.to_string(),
                    sender_fault: true,
                });
            }
        }
        Ok(failed)
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        Ok(self.push(message))
    }

    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        if messages.len() > MAX_BATCH {
            return Err(QueueError::Rejected(format!(
                "SendMessageBatch of {} entries; at most {MAX_BATCH}",
                messages.len()
            )));
        }
        for m in messages {
            self.push(m);
        }
        Ok(Vec::new())
    }

    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        let now = Instant::now();
        let state = self.lock();
        let visible = state
            .messages
            .iter()
            .filter(|m| m.visible_at <= now)
            .count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: state.messages.len() as u64 - visible,
            delayed: 0,
        })
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.shared.redrive.as_ref().map(|(limit, _)| *limit)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.shared
            .redrive
            .as_ref()
            .map(|(_, dlq)| Arc::new(dlq.clone()) as Arc<dyn Queue>)
    }
}
