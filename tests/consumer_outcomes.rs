//! Outcome handling on real SQS (moto): retries with growing backoff ending in the dead-letter
//! queue, poison straight to the dead-letter queue; plus panics, lost visibility and poison
//! without a dead-letter queue.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use profile_worker::consumer::{Consumer, Delivery, Outcome, Summary};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::{
    BatchFailure, MemoryQueue, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};
use profile_worker::retry::Backoff;
use support::sqs::{TestQueue, eventually, handler, moto_url, settings};
use tokio_util::sync::CancellationToken;

/// Delegates to the real queue, recording every single visibility change; with `lose_receipts`
/// set, visibility changes answer as SQS does once another consumer owns the message; with
/// `unreachable` set, they fail as a network partition does.
struct Recording {
    inner: Arc<dyn Queue>,
    visibility: Mutex<Vec<Duration>>,
    lose_receipts: bool,
    unreachable: bool,
}

impl Recording {
    fn new(inner: Arc<dyn Queue>, lose_receipts: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            visibility: Mutex::default(),
            lose_receipts,
            unreachable: false,
        })
    }

    fn unreachable(inner: Arc<dyn Queue>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            visibility: Mutex::default(),
            lose_receipts: false,
            unreachable: true,
        })
    }
}

#[async_trait]
impl Queue for Recording {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, wait, visibility).await
    }
    async fn delete_batch(&self, r: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.delete_batch(r).await
    }
    async fn change_visibility(&self, r: &str, t: Duration) -> Result<(), QueueError> {
        self.visibility.lock().unwrap().push(t);
        if self.lose_receipts {
            return Err(QueueError::ReceiptInvalid(
                "received by another consumer".into(),
            ));
        }
        if self.unreachable {
            return Err(QueueError::Transient("connection refused".into()));
        }
        self.inner.change_visibility(r, t).await
    }
    async fn change_visibility_batch(
        &self,
        e: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.change_visibility_batch(e).await
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<String, QueueError> {
        self.inner.send(m).await
    }
    async fn send_batch(&self, m: &[OutgoingMessage]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.send_batch(m).await
    }
    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.approximate_depth().await
    }
    fn max_receive_count(&self) -> Option<u32> {
        self.inner.max_receive_count()
    }
    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.inner.dead_letter_queue()
    }
}

/// Runs `consumer` until `done` holds, then stops it and returns its summary.
async fn run_until<F, Fut>(consumer: Consumer, done: F) -> Summary
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    eventually("the expected outcome", Duration::from_secs(60), done).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task")
}

fn attr(m: &aws_sdk_sqs::types::Message, name: &str) -> String {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_else(|| panic!("attribute {name} missing on {m:?}"))
        .to_string()
}

#[tokio::test]
async fn transient_failures_back_off_then_fail_on_the_last_attempt_into_the_dead_letter_queue() {
    let test = TestQueue::create(&moto_url(), 3).await;
    let queue = Recording::new(Arc::new(test.connect(Duration::from_secs(1)).await), false);
    let id = test.send(r#"{"entity_type":"author","entity_id":1}"#).await;
    let seen: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    let h = {
        let seen = seen.clone();
        handler(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((d.attempt, d.is_last_attempt));
                if d.is_last_attempt {
                    Outcome::Failed {
                        reason: "bedrock kept throttling".into(),
                    }
                } else {
                    Outcome::Retry {
                        reason: "throttled".into(),
                    }
                }
            }
        })
    };
    // max_attempts 5 is lowered to the queue's maxReceiveCount of 3.
    let s = settings(2);
    let backoff = Backoff::exponential(s.retry_base, s.retry_cap);
    let consumer = Consumer::new(queue.clone(), h, s, Arc::new(Metrics::new()), Health::new());
    assert_eq!(consumer.max_attempts(), 3);
    let summary = run_until(consumer, || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() >= 3 }
    })
    .await;

    assert_eq!(*seen.lock().unwrap(), [(1, false), (2, false), (3, true)]);
    assert_eq!((summary.retried, summary.failed), (2, 1));
    // Each retry delay stays under its attempt's ceiling, and the ceilings grow.
    let delays = queue.visibility.lock().unwrap().clone();
    assert_eq!(delays.len(), 2, "{delays:?}");
    for (i, d) in delays.iter().enumerate() {
        assert!(*d <= backoff.ceiling(i as u32 + 1), "{delays:?}");
    }
    assert!(backoff.ceiling(2) > backoff.ceiling(1));

    let dead = test.drain_dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].body(),
        Some(r#"{"entity_type":"author","entity_id":1}"#)
    );
    assert_eq!(attr(&dead[0], "outcome"), "failed");
    assert_eq!(attr(&dead[0], "reason"), "bedrock kept throttling");
    assert_eq!(attr(&dead[0], "original_message_id"), id);
    assert_eq!(attr(&dead[0], "receive_count"), "3");
    assert_eq!(test.counts().await, (0, 0));
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_queue_once_with_its_reason() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    let id = test.send("this is not json").await;
    let deliveries = Arc::new(AtomicU32::new(0));
    let h = {
        let deliveries = deliveries.clone();
        handler(move |_d| {
            let deliveries = deliveries.clone();
            async move {
                deliveries.fetch_add(1, Ordering::SeqCst);
                Outcome::Poison {
                    reason: "body is not JSON".into(),
                }
            }
        })
    };
    let consumer = Consumer::new(
        queue,
        h,
        settings(2),
        Arc::new(Metrics::new()),
        Health::new(),
    );
    let summary = run_until(consumer, || async { test.counts().await == (0, 0) }).await;
    assert_eq!(deliveries.load(Ordering::SeqCst), 1);
    assert_eq!(summary.poison, 1);
    let dead = test.drain_dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("this is not json"));
    assert_eq!(attr(&dead[0], "outcome"), "poison");
    assert_eq!(attr(&dead[0], "reason"), "body is not JSON");
    assert_eq!(attr(&dead[0], "original_message_id"), id);
    assert_eq!(attr(&dead[0], "receive_count"), "1");
    assert!(test.drain().await.is_empty(), "poison must not come back");
}

#[tokio::test]
async fn poison_without_a_dead_letter_queue_is_deleted() {
    let queue = Arc::new(MemoryQueue::new());
    queue.send(&OutgoingMessage::new("<xml/>")).await.unwrap();
    let h = handler(|_d| async {
        Outcome::Poison {
            reason: "not JSON".into(),
        }
    });
    let consumer = Consumer::new(
        queue.clone(),
        h,
        settings(1),
        Arc::new(Metrics::new()),
        Health::new(),
    );
    let summary = run_until(consumer, || {
        let queue = queue.clone();
        async move { queue.approximate_depth().await.unwrap() == QueueDepth::default() }
    })
    .await;
    assert_eq!(summary.poison, 1);
}

#[tokio::test]
async fn a_panicking_handler_is_retried_like_a_transient_failure() {
    let queue = Arc::new(MemoryQueue::new());
    queue.send(&OutgoingMessage::new("{}")).await.unwrap();
    let h = handler(|d: Delivery| async move {
        if d.attempt == 1 {
            panic!("handler bug");
        }
        Outcome::Done
    });
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(
        queue.clone(),
        h,
        settings(1),
        metrics.clone(),
        Health::new(),
    );
    let summary = run_until(consumer, || {
        let metrics = metrics.clone();
        async move {
            metrics
                .messages_processed
                .with_label_values(&["done"])
                .get()
                == 1
        }
    })
    .await;
    assert_eq!((summary.retried, summary.done, summary.received), (1, 1, 2));
}

/// A run that never answers (a call hung on a half-open connection) is abandoned at the message
/// deadline and retried; the slot is free again and `/health` stays true.
#[tokio::test]
async fn a_handler_past_the_message_deadline_is_abandoned_and_retried() {
    let queue = Arc::new(MemoryQueue::new());
    queue.send(&OutgoingMessage::new("{}")).await.unwrap();
    let h = handler(|d: Delivery| async move {
        if d.attempt == 1 {
            std::future::pending::<()>().await;
        }
        Outcome::Done
    });
    let mut s = settings(1);
    s.deadline = Duration::from_secs(2);
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let consumer = Consumer::new(queue.clone(), h, s, metrics.clone(), health.clone());
    let summary = run_until(consumer, || {
        let metrics = metrics.clone();
        async move {
            metrics
                .messages_processed
                .with_label_values(&["done"])
                .get()
                == 1
        }
    })
    .await;
    assert_eq!((summary.retried, summary.done, summary.received), (1, 1, 2));
    assert_eq!(health.liveness(), Ok(()));
}

#[tokio::test]
async fn lost_visibility_cancels_the_handler_and_records_nothing() {
    let inner = Arc::new(MemoryQueue::new());
    inner.send(&OutgoingMessage::new("{}")).await.unwrap();
    let queue = Recording::new(inner.clone(), true);
    let finished = Arc::new(AtomicU32::new(0));
    let h = {
        let finished = finished.clone();
        handler(move |_d| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };
    let mut s = settings(1);
    s.visibility = Duration::from_secs(3);
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue.clone(), h, s, metrics.clone(), Health::new());
    let summary = run_until(consumer, || {
        let metrics = metrics.clone();
        async move {
            metrics
                .visibility_extensions
                .with_label_values(&["lost"])
                .get()
                == 1
        }
    })
    .await;
    assert_eq!(summary.lost, 1);
    assert_eq!(summary.done, 0);
    assert_eq!(finished.load(Ordering::SeqCst), 0, "handler future dropped");
    // Not acknowledged: the message is still in the queue.
    let depth = inner.approximate_depth().await.unwrap();
    assert_eq!(depth.visible + depth.in_flight, 1);
}

/// Renewals that keep failing: the handler is abandoned before the visibility granted at the
/// receive runs out (another consumer may take the message then), after a few backed-off tries
/// rather than a loop.
#[tokio::test]
async fn renewals_failing_until_the_visibility_runs_out_abandon_the_handler() {
    let inner = Arc::new(MemoryQueue::new());
    inner.send(&OutgoingMessage::new("{}")).await.unwrap();
    let queue = Recording::unreachable(inner.clone());
    let finished = Arc::new(AtomicU32::new(0));
    let h = {
        let finished = finished.clone();
        handler(move |_d| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };
    let mut s = settings(1);
    s.visibility = Duration::from_secs(9);
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue.clone(), h, s, metrics.clone(), Health::new());
    let summary = run_until(consumer, || {
        let metrics = metrics.clone();
        async move {
            metrics
                .visibility_extensions
                .with_label_values(&["lost"])
                .get()
                == 1
        }
    })
    .await;
    assert_eq!((summary.lost, summary.done), (1, 0), "{summary:?}");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "handler future dropped");
    // Renewal period 3 s, visibility 9 s: tries at 3, 4, 6 and 7.5 s, when the lease ends.
    let tries = queue.visibility.lock().unwrap().len();
    assert!((2..=4).contains(&tries), "{tries} renewal tries");
}
