//! The `Queue` contract, run against `SqsQueue` on moto and against `MemoryQueue`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use profile_worker::queue::{MemoryQueue, OutgoingMessage, Queue, QueueError};
use support::sqs::{TestQueue, moto_url};

const WAIT: Duration = Duration::from_secs(2);
const HIDE: Duration = Duration::from_secs(30);

async fn sqs(max_receive_count: u32) -> Arc<dyn Queue> {
    let t = TestQueue::create(&moto_url(), max_receive_count).await;
    Arc::new(t.connect(WAIT).await)
}

fn memory(max_receive_count: u32) -> Arc<dyn Queue> {
    Arc::new(MemoryQueue::with_dead_letter(max_receive_count))
}

/// Runs one contract check on both adapters.
macro_rules! contract {
    ($check:ident, $max_receive_count:expr) => {
        mod $check {
            #[tokio::test]
            async fn sqs_on_moto() {
                super::$check(super::sqs($max_receive_count).await).await;
            }
            // MemoryQueue keeps its clocks on tokio time: its waits are instant on paused time.
            #[tokio::test(start_paused = true)]
            async fn memory() {
                super::$check(super::memory($max_receive_count)).await;
            }
        }
    };
}

/// Receives until `n` messages arrived (each receive waits up to WAIT; bounded).
async fn receive_n(q: &dyn Queue, n: usize) -> Vec<profile_worker::queue::ReceivedMessage> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(q.receive(n - got.len(), WAIT, HIDE).await.expect("receive"));
    }
    assert_eq!(got.len(), n, "expected {n} messages");
    got
}

async fn send_then_receive_round_trips(q: Arc<dyn Queue>) {
    let sent = OutgoingMessage::new(r#"{"entity_type":"author","entity_id":7}"#)
        .attribute("origin", "contract");
    let id = q.send(&sent).await.expect("send");
    let got = receive_n(q.as_ref(), 1).await.remove(0);
    assert_eq!(got.message_id, id);
    assert_eq!(got.body, sent.body);
    assert_eq!(got.attributes, sent.attributes);
    assert_eq!(got.receive_count, 1);
    assert!(!got.receipt_handle.is_empty());
}
contract!(send_then_receive_round_trips, 5);

async fn received_message_stays_hidden_until_released(q: Arc<dyn Queue>) {
    q.send(&OutgoingMessage::new("hidden")).await.expect("send");
    let first = receive_n(q.as_ref(), 1).await.remove(0);
    let again = q
        .receive(10, Duration::from_secs(1), HIDE)
        .await
        .expect("receive");
    assert!(
        again.is_empty(),
        "a hidden message was delivered again: {again:?}"
    );
    q.change_visibility(&first.receipt_handle, Duration::ZERO)
        .await
        .expect("release");
    let second = receive_n(q.as_ref(), 1).await.remove(0);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt_handle, first.receipt_handle);
}
contract!(received_message_stays_hidden_until_released, 5);

async fn deleted_messages_are_gone(q: Arc<dyn Queue>) {
    let batch: Vec<_> = (0..3)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    assert_eq!(q.send_batch(&batch).await.expect("send_batch"), vec![]);
    let got = receive_n(q.as_ref(), 3).await;
    let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    assert_eq!(q.delete_batch(&receipts).await.expect("delete"), vec![]);
    let depth = q.approximate_depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
    // The receipt of a deleted message is no longer valid.
    let err = q
        .change_visibility(&receipts[0], Duration::ZERO)
        .await
        .expect_err("deleted message");
    assert!(matches!(err, QueueError::ReceiptInvalid(_)), "{err:?}");
}
contract!(deleted_messages_are_gone, 5);

async fn batches_over_ten_are_refused(q: Arc<dyn Queue>) {
    let eleven: Vec<_> = (0..11)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    assert!(matches!(
        q.send_batch(&eleven).await,
        Err(QueueError::Rejected(_))
    ));
    let receipts: Vec<String> = (0..11).map(|i| format!("r{i}")).collect();
    assert!(matches!(
        q.delete_batch(&receipts).await,
        Err(QueueError::Rejected(_))
    ));
    assert_eq!(q.approximate_depth().await.expect("depth").visible, 0);
}
contract!(batches_over_ten_are_refused, 5);

async fn long_poll_returns_when_a_message_arrives(q: Arc<dyn Queue>) {
    let poller = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(1, Duration::from_secs(10), HIDE).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.send(&OutgoingMessage::new("late")).await.expect("send");
    let got = poller.await.expect("join").expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "late");
}
contract!(long_poll_returns_when_a_message_arrives, 5);

async fn depth_counts_visible_and_in_flight(q: Arc<dyn Queue>) {
    q.send(&OutgoingMessage::new("a")).await.expect("send");
    q.send(&OutgoingMessage::new("b")).await.expect("send");
    receive_n(q.as_ref(), 1).await;
    let depth = q.approximate_depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight, depth.delayed), (1, 1, 0));
}
contract!(depth_counts_visible_and_in_flight, 5);

async fn visibility_batch_releases_each_entry(q: Arc<dyn Queue>) {
    let batch: Vec<_> = (0..2)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    q.send_batch(&batch).await.expect("send_batch");
    let got = receive_n(q.as_ref(), 2).await;
    let entries: Vec<_> = got
        .iter()
        .map(|m| (m.receipt_handle.clone(), Duration::ZERO))
        .collect();
    assert_eq!(
        q.change_visibility_batch(&entries).await.expect("batch"),
        vec![]
    );
    let again = receive_n(q.as_ref(), 2).await;
    assert!(again.iter().all(|m| m.receive_count == 2));
}
contract!(visibility_batch_releases_each_entry, 5);

async fn redrives_to_the_dead_letter_queue_after_max_receives(q: Arc<dyn Queue>) {
    assert_eq!(q.max_receive_count(), Some(2));
    let dlq = q.dead_letter_queue().expect("dead-letter queue resolved");
    q.send(&OutgoingMessage::new("doomed")).await.expect("send");
    for attempt in 1..=2 {
        let m = receive_n(q.as_ref(), 1).await.remove(0);
        assert_eq!(m.receive_count, attempt);
        q.change_visibility(&m.receipt_handle, Duration::ZERO)
            .await
            .expect("release");
    }
    let third = q
        .receive(1, Duration::from_secs(1), HIDE)
        .await
        .expect("receive");
    assert!(
        third.is_empty(),
        "redriven message delivered again: {third:?}"
    );
    let dead = receive_n(dlq.as_ref(), 1).await.remove(0);
    assert_eq!(dead.body, "doomed");
}
contract!(redrives_to_the_dead_letter_queue_after_max_receives, 2);
