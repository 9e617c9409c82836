//! Batched acknowledgement: deletes are grouped into `DeleteMessageBatch` calls of up to 10,
//! waiting at most [`LINGER`] for companions, so acknowledging never lags by more than a few ms.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::{MAX_BATCH, Queue, ReceivedMessage};
use crate::retry::Backoff;

/// Longest a delete waits for others to share its batch call.
const LINGER: Duration = Duration::from_millis(10);
/// Attempts of one batch call on transient errors (on top of the SDK's own retries).
const ATTEMPTS: u32 = 3;
/// Waits between those attempts: 100 ms, then 200 ms.
const BACKOFF: Backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));

/// (message id for logs, receipt handle)
type Entry = (String, String);

/// The batching task; [`Deleter::flush`] sends what is pending and waits for every call.
pub(crate) struct Deleter {
    tx: mpsc::UnboundedSender<Entry>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Cheap handle message tasks use to ask for a delete.
#[derive(Clone)]
pub(crate) struct DeleteSender(mpsc::UnboundedSender<Entry>);

impl DeleteSender {
    pub(crate) fn delete(&self, message: &ReceivedMessage) {
        // The receiver lives until `flush`, which runs after every message task has ended.
        let _ = self
            .0
            .send((message.message_id.clone(), message.receipt_handle.clone()));
    }
}

impl Deleter {
    pub(crate) fn spawn(queue: Arc<dyn Queue>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(queue, rx, stop.clone()));
        Self { tx, stop, task }
    }

    pub(crate) fn sender(&self) -> DeleteSender {
        DeleteSender(self.tx.clone())
    }

    /// Sends every pending delete and waits for the calls to finish.
    pub(crate) async fn flush(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "delete batcher ended abnormally");
        }
    }
}

async fn run(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    stop: CancellationToken,
) {
    let calls = TaskTracker::new();
    loop {
        let first = tokio::select! {
            got = rx.recv() => match got { Some(e) => e, None => break },
            _ = stop.cancelled() => match rx.try_recv() { Ok(e) => e, Err(_) => break },
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) if stop.is_cancelled() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(e)) => batch.push(e),
                    _ => break,
                },
            }
        }
        calls.spawn(delete(queue.clone(), batch));
    }
    calls.close();
    calls.wait().await;
}

async fn delete(queue: Arc<dyn Queue>, batch: Vec<Entry>) {
    let receipts: Vec<String> = batch.iter().map(|(_, r)| r.clone()).collect();
    let result = BACKOFF
        .retry(
            ATTEMPTS,
            |attempt| {
                let queue = queue.clone();
                let receipts = &receipts;
                async move {
                    let result = queue.delete_batch(receipts).await;
                    if let Err(err) = &result
                        && err.is_transient()
                        && attempt < ATTEMPTS
                    {
                        tracing::debug!(error = %err, attempt, "delete batch failed; retrying");
                    }
                    result
                }
            },
            |err| err.is_transient(),
        )
        .await;
    match result {
        Ok(failed) => {
            for f in failed {
                tracing::warn!(
                    message_id = %batch[f.index].0,
                    code = %f.code,
                    detail = %f.message,
                    "delete refused; the message will be delivered again"
                );
            }
        }
        Err(err) => {
            tracing::error!(error = %err, count = batch.len(), "delete batch failed; these messages will be delivered again");
        }
    }
}
