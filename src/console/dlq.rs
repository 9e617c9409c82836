//! The queue panel and the dead-letter tools: depths, a peek at the dead letters, and redrive.
//!
//! **Peek** receives with `VisibilityTimeout=0`, so the messages stay visible and nothing is
//! consumed; the only trace is that each peeked message's `ApproximateReceiveCount` grows by one,
//! which is harmless on a dead-letter queue (it has no redrive policy of its own).
//!
//! **Redrive** is SQS's own `StartMessageMoveTask` (dead-letter queue → the main queue), with its
//! progress from `ListMessageMoveTasks`. Only when the endpoint does not implement that API (moto
//! and other emulators answer an unknown action with a bare 404/500/501, or `InvalidAction`) does
//! the daemon move the messages itself: receive from the dead-letter queue, send to the main queue
//! with the same body and attributes, then delete — as many messages as the dead-letter queue held
//! when the redrive started, so a message that fails again is not moved round in a loop. Any
//! other refusal is reported, never papered
//! over (docs/decisions.md, "Operator console").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::queue::sqs::{classify, receive_count, string_attributes};
use crate::queue::{MAX_BATCH, OutgoingMessage, Queue, QueueDepth, QueueError, SqsQueue};

/// Characters of a dead letter's body shown in previews.
pub const PREVIEW_CHARS: usize = 300;
/// Visibility of the messages the local mover holds while copying them.
const MOVE_VISIBILITY: Duration = Duration::from_secs(60);

/// A queue's depth for the panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depth {
    fn new(url: &str, d: QueueDepth) -> Self {
        Self {
            url: url.to_string(),
            visible: d.visible,
            in_flight: d.in_flight,
            delayed: d.delayed,
        }
    }
}

/// One dead letter as peeked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub receive_count: u32,
    /// String message attributes: `outcome`, `reason`, `original_message_id`, `receive_count`.
    pub attributes: BTreeMap<String, String>,
    /// The body's first [`PREVIEW_CHARS`] characters.
    pub body_preview: String,
    pub body_bytes: usize,
}

/// Progress of the latest redrive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveStatus {
    /// `sqs` (StartMessageMoveTask) or `local` (the fallback mover).
    pub mode: &'static str,
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`, as SQS spells them.
    pub status: String,
    pub moved: u64,
    pub to_move: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub failure: Option<String>,
}

impl MoveStatus {
    pub fn running(&self) -> bool {
        self.status == "RUNNING" || self.status == "CANCELLING"
    }
}

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead-letter queue is configured (queue.dead_letter_url or a RedrivePolicy)")]
    NoDeadLetterQueue,
    #[error("a redrive is already running ({0} moved so far)")]
    AlreadyRunning(u64),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The main queue and its dead-letter queue, with the state of a local redrive.
#[derive(Clone)]
pub struct DeadLetters {
    queue: Arc<SqsQueue>,
    local: Arc<Mutex<Option<MoveStatus>>>,
}

impl DeadLetters {
    pub fn new(queue: Arc<SqsQueue>) -> Self {
        Self {
            queue,
            local: Arc::default(),
        }
    }

    fn dead_letter(&self) -> Result<&SqsQueue, DlqError> {
        self.queue.dead_letter().ok_or(DlqError::NoDeadLetterQueue)
    }

    /// Depth of the main queue.
    pub async fn queue_depth(&self) -> Result<Depth, QueueError> {
        let d = self.queue.approximate_depth().await?;
        Ok(Depth::new(self.queue.url(), d))
    }

    /// Depth of the dead-letter queue, `None` when there is none.
    pub async fn dead_letter_depth(&self) -> Result<Option<Depth>, QueueError> {
        match self.queue.dead_letter() {
            Some(dl) => Ok(Some(Depth::new(dl.url(), dl.approximate_depth().await?))),
            None => Ok(None),
        }
    }

    /// Up to `limit` dead letters, newest first, without consuming them (see the module doc).
    /// Each receive returns at most 10; receives repeat until `limit` or nothing new arrives.
    pub async fn peek(&self, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
        let dl = self.dead_letter()?;
        let mut seen: BTreeMap<String, DeadLetter> = BTreeMap::new();
        while seen.len() < limit {
            let out = dl
                .client()
                .receive_message()
                .queue_url(dl.url())
                .max_number_of_messages((limit - seen.len()).clamp(1, MAX_BATCH) as i32)
                .wait_time_seconds(0)
                .visibility_timeout(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| classify("ReceiveMessage", e))?;
            let before = seen.len();
            for m in out.messages() {
                let letter = dead_letter(m);
                seen.entry(letter.message_id.clone()).or_insert(letter);
            }
            if seen.len() == before {
                break;
            }
        }
        let mut letters: Vec<DeadLetter> = seen.into_values().collect();
        letters.sort_by_key(|l| std::cmp::Reverse(l.sent_at));
        letters.truncate(limit);
        Ok(letters)
    }

    /// Starts moving every dead letter back to the main queue.
    pub async fn redrive(&self) -> Result<MoveStatus, DlqError> {
        let dl = self.dead_letter()?;
        if let Some(status) = self.status().await?
            && status.running()
        {
            return Err(DlqError::AlreadyRunning(status.moved));
        }
        let source = queue_arn(dl).await?;
        let destination = queue_arn(&self.queue).await?;
        let started = self
            .queue
            .client()
            .start_message_move_task()
            .source_arn(&source)
            .destination_arn(&destination)
            .customize()
            .config_override(single_attempt())
            .send()
            .await;
        match started {
            Ok(_) => Ok(self.status().await?.unwrap_or(MoveStatus {
                mode: "sqs",
                status: "RUNNING".into(),
                moved: 0,
                to_move: None,
                started_at: Some(Utc::now()),
                failure: None,
            })),
            Err(err) if unsupported(&err) => {
                tracing::info!(
                    error = %classify("StartMessageMoveTask", err),
                    "the SQS endpoint does not implement StartMessageMoveTask; moving the dead letters locally"
                );
                Ok(self.start_local())
            }
            Err(err) => Err(classify("StartMessageMoveTask", err).into()),
        }
    }

    /// The latest redrive: the local mover's while it has run in this process, else SQS's.
    pub async fn status(&self) -> Result<Option<MoveStatus>, DlqError> {
        if let Some(local) = self.local_status() {
            return Ok(Some(local));
        }
        let dl = self.dead_letter()?;
        let source = queue_arn(dl).await?;
        let listed = self
            .queue
            .client()
            .list_message_move_tasks()
            .source_arn(&source)
            .max_results(1)
            .customize()
            .config_override(single_attempt())
            .send()
            .await;
        match listed {
            Ok(out) => Ok(out.results().first().map(|t| MoveStatus {
                mode: "sqs",
                status: t.status().unwrap_or("UNKNOWN").to_string(),
                moved: t.approximate_number_of_messages_moved().max(0) as u64,
                to_move: t
                    .approximate_number_of_messages_to_move()
                    .map(|n| n.max(0) as u64),
                started_at: DateTime::from_timestamp_millis(t.started_timestamp()),
                failure: t.failure_reason().map(str::to_string),
            })),
            Err(err) if unsupported(&err) => Ok(None),
            Err(err) => Err(classify("ListMessageMoveTasks", err).into()),
        }
    }

    fn local_status(&self) -> Option<MoveStatus> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_local(&self, update: impl FnOnce(&mut MoveStatus)) {
        let mut guard = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = guard.as_mut() {
            update(status);
        }
    }

    /// Starts the local mover in the background (see the module doc).
    fn start_local(&self) -> MoveStatus {
        let status = MoveStatus {
            mode: "local",
            status: "RUNNING".into(),
            moved: 0,
            to_move: None,
            started_at: Some(Utc::now()),
            failure: None,
        };
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        let this = self.clone();
        tokio::spawn(async move {
            match this.move_locally().await {
                Ok(()) => this.set_local(|s| s.status = "COMPLETED".into()),
                Err(err) => {
                    tracing::warn!(error = %err, "local redrive failed");
                    this.set_local(|s| {
                        s.status = "FAILED".into();
                        s.failure = Some(err.to_string());
                    });
                }
            }
        });
        status
    }

    /// Moves as many messages as the dead-letter queue held at the start, like SQS's own task:
    /// a redriven message that fails again and comes back must not be moved round in a loop.
    async fn move_locally(&self) -> Result<(), DlqError> {
        let dl = self.dead_letter()?;
        let to_move = dl.approximate_depth().await?.visible;
        self.set_local(|s| s.to_move = Some(to_move));
        let mut moved = 0;
        while moved < to_move {
            let want = ((to_move - moved) as usize).min(MAX_BATCH);
            let batch = dl.receive(want, Duration::ZERO, MOVE_VISIBILITY).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let outgoing: Vec<OutgoingMessage> = batch
                .iter()
                .map(|m| OutgoingMessage {
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                })
                .collect();
            let refused = self.queue.send_batch(&outgoing).await?;
            // Only what reached the main queue leaves the dead-letter queue; the rest reappears
            // there when its visibility runs out.
            let sent: Vec<String> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.iter().any(|f| f.index == *i))
                .map(|(_, m)| m.receipt_handle.clone())
                .collect();
            dl.delete_batch(&sent).await?;
            let n = sent.len() as u64;
            moved += n;
            self.set_local(|s| s.moved += n);
            if !refused.is_empty() {
                return Err(DlqError::Queue(QueueError::Rejected(format!(
                    "{} message(s) refused by the main queue: {}",
                    refused.len(),
                    refused[0].message
                ))));
            }
        }
        Ok(())
    }
}

fn dead_letter(m: &aws_sdk_sqs::types::Message) -> DeadLetter {
    let system = m.attributes();
    let body = m.body().unwrap_or_default();
    DeadLetter {
        message_id: m.message_id().unwrap_or_default().to_string(),
        sent_at: system
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis),
        receive_count: receive_count(m).unwrap_or(0),
        attributes: string_attributes(m),
        body_preview: body.chars().take(PREVIEW_CHARS).collect(),
        body_bytes: body.len(),
    }
}

async fn queue_arn(queue: &SqsQueue) -> Result<String, QueueError> {
    let out = queue
        .client()
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify("GetQueueAttributes", e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| QueueError::Rejected(format!("{} has no QueueArn", queue.url())))
}

/// The redrive calls' client settings: one attempt, because an emulator's "not implemented" is a
/// 500 and retrying it only delays the local fallback.
fn single_attempt() -> aws_sdk_sqs::config::Builder {
    aws_sdk_sqs::config::Builder::default()
        .retry_config(RetryConfig::standard().with_max_attempts(1))
}

/// The endpoint does not implement the operation at all (an emulator), as opposed to refusing it.
fn unsupported<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err.code() {
        Some("InvalidAction" | "UnknownOperationException" | "NotImplemented") => true,
        Some(code) if !code.chars().all(|c| c.is_ascii_digit()) => false,
        _ => matches!(status, Some(404 | 500 | 501)),
    }
}
