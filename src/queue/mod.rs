//! The `Queue` port: what the consumer and the `enqueue` CLI need from a message queue.
//!
//! Two adapters: [`SqsQueue`] (Amazon SQS through aws-sdk-sqs; production and local SQS servers)
//! and [`MemoryQueue`] (in-process, for the embedded demo). One contract suite
//! (`tests/queue_contract.rs`) runs against both so they cannot drift.
//!
//! Retries: adapters never retry on their own beyond what the AWS SDK does for one call; a
//! [`QueueError`] says whether the caller may try again ([`QueueError::is_transient`]).

pub mod memory;
pub mod sqs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryQueue;
pub use sqs::SqsQueue;

/// Most entries SQS accepts in one batch call (and most messages in one receive).
pub const MAX_BATCH: usize = 10;

/// Largest message SQS accepts, body and attributes together (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// One delivery of a message, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The queue's id of the message; the same on every delivery.
    pub message_id: String,
    /// Handle of this delivery; needed to delete it or change its visibility.
    pub receipt_handle: String,
    pub body: String,
    /// How many times the message has been received, this delivery included (1 on the first).
    pub receive_count: u32,
    /// String message attributes sent with the message.
    pub attributes: BTreeMap<String, String>,
}

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    /// String message attributes (SQS allows at most 10).
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    /// A message with a body and no attributes.
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds one string attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The size SQS counts against [`MAX_MESSAGE_BYTES`]: the body, and each attribute's name,
    /// data type (`String`) and value, in UTF-8 bytes.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| attribute_size(k, v))
                .sum::<usize>()
    }
}

/// What one string attribute adds to a message's size (see [`OutgoingMessage::size`]).
pub fn attribute_size(name: &str, value: &str) -> usize {
    name.len() + "String".len() + value.len()
}

/// One entry of a batch call that the queue refused; the others succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Position of the entry in the slice the caller passed.
    pub index: usize,
    /// The queue's error code, e.g. `ReceiptHandleIsInvalid`.
    pub code: String,
    pub message: String,
    /// True when the entry itself is wrong (do not resend it unchanged); false for a server-side
    /// problem worth retrying.
    pub sender_fault: bool,
}

/// Approximate message counts, as SQS reports them (eventually consistent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Available for receipt (`ApproximateNumberOfMessages`).
    pub visible: u64,
    /// Received and neither deleted nor visible again (`…NotVisible`).
    pub in_flight: u64,
    /// Sent with a delay not yet elapsed (`…Delayed`).
    pub delayed: u64,
}

/// What went wrong talking to the queue, phrased as what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Network failure, timeout, throttling or a server error: try again later.
    #[error("queue temporarily unavailable (retry later): {0}")]
    Transient(String),
    /// The receipt handle is no longer valid: the message was deleted, or its visibility ran out
    /// and another consumer may own it now. Do not record an outcome for this delivery.
    #[error("receipt handle no longer valid: {0}")]
    ReceiptInvalid(String),
    /// The queue does not exist (wrong name/URL, or deleted). Fix the configuration.
    #[error("queue does not exist: {0}")]
    NotFound(String),
    /// The request itself was refused (bad parameters, permissions, oversized message). Retrying
    /// the same request will fail again.
    #[error("queue refused the request: {0}")]
    Rejected(String),
}

impl QueueError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// A message queue with SQS semantics: at-least-once delivery, visibility timeouts, receipt
/// handles per delivery. Object safe so `app` can hold an `Arc<dyn Queue>`.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Receives up to `max` (1..=10) messages, waiting up to `wait` for the first one (long poll),
    /// and hides them for `visibility`. `Ok(vec![])` means none arrived in time. Not retried by
    /// the adapter (a retried receive can strand messages, see docs/decisions.md, "Shutdown: drain, release, exit 0"); the
    /// caller backs off on error. Never drop the returned future before it completes: the server
    /// may already have handed messages to it.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes up to 10 deliveries by receipt handle. `Ok` means the call went through; the
    /// entries the queue refused are returned (the caller logs them; the messages come back).
    /// The SDK retries transient failures of the call itself.
    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>, QueueError>;

    /// Sets the remaining visibility of one delivery (0 = visible again now). `Ok` means the
    /// queue accepted the new timeout; [`QueueError::ReceiptInvalid`] means this delivery is no
    /// longer ours. The SDK retries transient failures.
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    /// Sets the visibility of up to 10 deliveries; refused entries are returned.
    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError>;

    /// Sends one message; `Ok` carries the new message id once the queue has stored it.
    /// The SDK retries transient failures (a retry after a lost reply may send a duplicate).
    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError>;

    /// Sends up to 10 messages in one call; the entries the queue refused are returned, the
    /// others are stored. More than 10 entries is [`QueueError::Rejected`].
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError>;

    /// Approximate counts of visible, in-flight and delayed messages (one attribute read).
    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError>;

    /// The queue's `maxReceiveCount` when it redrives to a dead-letter queue (read at start-up).
    fn max_receive_count(&self) -> Option<u32>;

    /// The dead-letter queue poison and failed messages are copied to, if one is configured.
    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>>;
}
