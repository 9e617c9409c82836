//! Outcome handling on real SQS (moto): retries with growing backoff ending in the dead-letter
//! queue, poison straight to the dead-letter queue; plus panics, lost visibility and poison
//! without a dead-letter queue. The in-memory cases wait only on the consumer's own timers, so
//! they run on paused tokio time.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use profile_worker::consumer::{Consumer, Delivery, Outcome, Summary};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::{MemoryQueue, OutgoingMessage, Queue, QueueDepth, QueueError};
use profile_worker::retry::Backoff;
use prometheus::IntCounterVec;
use support::consumer::{Running, at_once, done, probe, start, start_consumer};
use support::queue::{Hooks, Intercepted};
use support::sqs::{TestQueue, handler, moto_url, settings};

/// How long a case may wait for its outcome (a hang guard).
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Records every single visibility change and, when `fail` is set, answers each with its error
/// instead of the queue.
#[derive(Default)]
struct Renewals {
    asked: Mutex<Vec<Duration>>,
    fail: Option<fn() -> QueueError>,
}

impl Renewals {
    fn failing(fail: fn() -> QueueError) -> Self {
        Self {
            fail: Some(fail),
            ..Self::default()
        }
    }
}

#[async_trait]
impl Hooks for Renewals {
    async fn changing_visibility(&self, timeout: Duration) -> Result<(), QueueError> {
        self.asked.lock().unwrap().push(timeout);
        self.fail.map_or(Ok(()), |fail| Err(fail()))
    }
}

/// A memory queue holding one message with `body`.
async fn memory_queue(body: &str) -> Arc<MemoryQueue> {
    let queue = Arc::new(MemoryQueue::new());
    queue.send(&OutgoingMessage::new(body)).await.unwrap();
    queue
}

/// Waits until `counter{label}` of the consumer's metrics reads 1, then stops it.
async fn stop_at_first(
    consumer: &mut Running,
    counter: fn(&Metrics) -> &IntCounterVec,
    label: &str,
) -> Summary {
    let metrics = consumer.metrics.clone();
    consumer
        .stop_when(label, HANG_GUARD, || {
            std::future::ready(counter(&metrics).with_label_values(&[label]).get() == 1)
        })
        .await
}

fn processed(m: &Metrics) -> &IntCounterVec {
    &m.messages_processed
}

fn extensions(m: &Metrics) -> &IntCounterVec {
    &m.visibility_extensions
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
    let queue = Intercepted::new(
        Arc::new(test.connect(Duration::from_secs(1)).await),
        Renewals::default(),
    );
    let id = test.send(r#"{"entity_type":"author","entity_id":1}"#).await;
    let seen: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    let h = {
        let seen = seen.clone();
        handler(move |d: Delivery| {
            seen.lock().unwrap().push((d.attempt, d.is_last_attempt));
            let outcome = if d.is_last_attempt {
                Outcome::Failed {
                    reason: "bedrock kept throttling".into(),
                }
            } else {
                Outcome::Retry {
                    reason: "throttled".into(),
                }
            };
            std::future::ready(outcome)
        })
    };
    // max_attempts 5 is lowered to the queue's maxReceiveCount of 3.
    let s = settings(2);
    let backoff = Backoff::exponential(s.retry_base, s.retry_cap);
    let (metrics, health) = (Arc::new(Metrics::new()), Health::new());
    let consumer = Consumer::new(queue.clone(), h, s, metrics.clone(), health.clone());
    assert_eq!(consumer.max_attempts(), 3);
    let summary = start_consumer(consumer, metrics, health)
        .stop_when("three deliveries", HANG_GUARD, || {
            std::future::ready(seen.lock().unwrap().len() >= 3)
        })
        .await;

    assert_eq!(*seen.lock().unwrap(), [(1, false), (2, false), (3, true)]);
    assert_eq!((summary.retried, summary.failed), (2, 1));
    // Each retry delay stays under its attempt's ceiling, and the ceilings grow.
    let delays = queue.hooks.asked.lock().unwrap().clone();
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
    let (seen, h) = probe(at_once, |_| Outcome::Poison {
        reason: "body is not JSON".into(),
    });
    let summary = start(queue, h, settings(2))
        .stop_when("the queue is empty", HANG_GUARD, || async {
            test.counts().await == (0, 0)
        })
        .await;
    assert_eq!(seen.started.get(), 1);
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

#[tokio::test(start_paused = true)]
async fn poison_without_a_dead_letter_queue_is_deleted() {
    let queue = memory_queue("<xml/>").await;
    let h = handler(|_d| async {
        Outcome::Poison {
            reason: "not JSON".into(),
        }
    });
    let summary = start(queue.clone(), h, settings(1))
        .stop_when("the queue is empty", HANG_GUARD, || async {
            queue.approximate_depth().await.unwrap() == QueueDepth::default()
        })
        .await;
    assert_eq!(summary.poison, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_retried_like_a_transient_failure() {
    let queue = memory_queue("{}").await;
    let h = handler(|d: Delivery| async move {
        if d.attempt == 1 {
            panic!("handler bug");
        }
        Outcome::Done
    });
    let summary = stop_at_first(&mut start(queue, h, settings(1)), processed, "done").await;
    assert_eq!((summary.retried, summary.done, summary.received), (1, 1, 2));
}

/// A run that never answers (a call hung on a half-open connection) is abandoned at the message
/// deadline and retried; the slot is free again and `/health` stays true.
#[tokio::test(start_paused = true)]
async fn a_handler_past_the_message_deadline_is_abandoned_and_retried() {
    let queue = memory_queue("{}").await;
    let h = handler(|d: Delivery| async move {
        if d.attempt == 1 {
            std::future::pending::<()>().await;
        }
        Outcome::Done
    });
    let mut s = settings(1);
    s.deadline = Duration::from_secs(2);
    let mut consumer = start(queue, h, s);
    let summary = stop_at_first(&mut consumer, processed, "done").await;
    assert_eq!((summary.retried, summary.done, summary.received), (1, 1, 2));
    assert_eq!(consumer.health.liveness(), Ok(()));
}

/// Every visibility change hangs, as on a half-open connection the SDK's timeouts missed.
struct VisibilityHangs;

#[async_trait]
impl Hooks for VisibilityHangs {
    async fn changing_visibility(&self, _timeout: Duration) -> Result<(), QueueError> {
        std::future::pending().await
    }
}

/// A run hung past the deadline gives its slot back before its message is settled, so a settle
/// call that hangs too pins nothing: one slot serves every message in turn and `/health` stays
/// true. (`message_slots` fails only when the consumer's own tasks cannot run.)
#[tokio::test(start_paused = true)]
async fn a_hung_run_and_a_hung_settle_do_not_pin_the_slot() {
    let memory = Arc::new(MemoryQueue::new());
    for _ in 0..3 {
        memory.send(&OutgoingMessage::new("{}")).await.unwrap();
    }
    let queue = Intercepted::new(memory, VisibilityHangs);
    let (seen, h) = probe(|_| Duration::from_secs(3600), done);
    let mut s = settings(1);
    s.visibility = Duration::from_secs(600);
    s.deadline = Duration::from_secs(5);
    let consumer = start(queue, h, s);
    // Past three deadlines and the slots beat's limit (deadline + 60 s) after the first.
    tokio::time::sleep(Duration::from_secs(3 * 5 + 65 + 5)).await;
    assert_eq!(consumer.health.liveness(), Ok(()));
    assert_eq!(seen.started.get(), 3, "each message got the slot in turn");
    consumer.cancel();
}

/// Runs a handler that never finishes on a one-message memory queue whose renewals `renewals`
/// answers, under `visibility`, until a visibility is lost; the handler must have been dropped
/// unfinished. Returns the queue and the memory queue beneath it.
async fn abandoned(
    renewals: Renewals,
    visibility: Duration,
) -> (Arc<Intercepted<Renewals>>, Arc<MemoryQueue>) {
    let inner = memory_queue("{}").await;
    let queue = Intercepted::new(inner.clone(), renewals);
    let (seen, h) = probe(|_| Duration::from_secs(60), done);
    let mut s = settings(1);
    s.visibility = visibility;
    let summary = stop_at_first(&mut start(queue.clone(), h, s), extensions, "lost").await;
    assert_eq!((summary.lost, summary.done), (1, 0), "{summary:?}");
    assert_eq!(seen.finished.get(), 0, "handler future dropped");
    assert_eq!(seen.abandoned.get(), 1, "handler future dropped");
    (queue, inner)
}

#[tokio::test(start_paused = true)]
async fn lost_visibility_cancels_the_handler_and_records_nothing() {
    // SQS's answer once another consumer owns the message.
    let lost = || QueueError::ReceiptInvalid("received by another consumer".into());
    let (_, inner) = abandoned(Renewals::failing(lost), Duration::from_secs(3)).await;
    // Not acknowledged: the message is still in the queue.
    let depth = inner.approximate_depth().await.unwrap();
    assert_eq!(depth.visible + depth.in_flight, 1);
}

/// Renewals that keep failing: the handler is abandoned before the visibility granted at the
/// receive runs out (another consumer may take the message then), after a few backed-off tries
/// rather than a loop.
#[tokio::test(start_paused = true)]
async fn renewals_failing_until_the_visibility_runs_out_abandon_the_handler() {
    // A network partition.
    let unreachable = || QueueError::Transient("connection refused".into());
    let (queue, _) = abandoned(Renewals::failing(unreachable), Duration::from_secs(9)).await;
    // Renewal period 3 s, visibility 9 s: tries at 3, 4, 6 and 7.5 s, when the lease ends.
    let tries = queue.hooks.asked.lock().unwrap().len();
    assert!((2..=4).contains(&tries), "{tries} renewal tries");
}
