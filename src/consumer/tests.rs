//! Slots under hung runs, on paused time.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Consumer, ConsumerSettings, Delivery, Handler, Outcome, SLOT_MARGIN};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::queue::{
    BatchFailure, MemoryQueue, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};

/// A queue whose receives work but whose settling calls hang, as on a half-open connection the
/// SDK's timeouts did not catch: a run abandoned at the deadline then cannot give its slot back.
struct SettleHangs(MemoryQueue);

#[async_trait]
impl Queue for SettleHangs {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.0.receive(max, wait, visibility).await
    }
    async fn delete_batch(&self, _: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        pending().await
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        pending().await
    }
    async fn change_visibility_batch(
        &self,
        _: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        pending().await
    }
    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        self.0.send(message).await
    }
    async fn send_batch(&self, m: &[OutgoingMessage]) -> Result<Vec<BatchFailure>, QueueError> {
        self.0.send_batch(m).await
    }
    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        self.0.approximate_depth().await
    }
    fn max_receive_count(&self) -> Option<u32> {
        None
    }
    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        None
    }
}

/// Never answers; counts its runs.
#[derive(Default)]
struct Hangs(AtomicU32);

#[async_trait]
impl Handler for Hangs {
    async fn handle(&self, _: &Delivery) -> Outcome {
        self.0.fetch_add(1, Ordering::SeqCst);
        pending().await
    }
}

const DEADLINE: Duration = Duration::from_secs(5);

/// A run hung past the deadline is abandoned and its slot given back even though settling its
/// message hangs too: the one slot serves every message in turn and `/health` stays true. A slot
/// is pinned only when the consumer's own task cannot run (a handler blocking every runtime
/// thread), which is what the `message_slots` beat reports (docs/reliability.md).
#[tokio::test(start_paused = true)]
async fn a_hung_run_and_a_hung_settle_do_not_pin_the_slot() {
    let queue = MemoryQueue::new();
    for _ in 0..3 {
        queue.send(&OutgoingMessage::new("{}")).await.unwrap();
    }
    let settings = ConsumerSettings {
        concurrency: 1,
        wait: Duration::from_secs(1),
        visibility: Duration::from_secs(600),
        max_attempts: 5,
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(4),
        unready_after: 2,
        grace: Duration::from_secs(1),
        depth_interval: Duration::from_secs(15),
        deadline: DEADLINE,
    };
    let health = Health::new();
    let handler = Arc::new(Hangs::default());
    let consumer = Consumer::new(
        Arc::new(SettleHangs(queue)),
        handler.clone(),
        settings,
        Arc::new(Metrics::new()),
        health.clone(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    tokio::time::sleep(3 * DEADLINE + SLOT_MARGIN + Duration::from_secs(5)).await;
    assert_eq!(health.liveness(), Ok(()));
    assert!(
        handler.0.load(Ordering::SeqCst) >= 3,
        "each message got the slot in turn"
    );
    stop.cancel();
    run.abort();
}
