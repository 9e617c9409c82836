//! Stale receipts against LocalStack, whose SQS answers them as SQS does: the answers for a
//! deleted, purged or never-issued receipt are recognised, and a handler whose message is gone is
//! abandoned once — nothing written, nothing recorded, no renewal loop. (LocalStack accepts a
//! receipt superseded by a later receive without effect and without error; only the lease's own
//! end, src/consumer/task.rs, protects against that.) scripts/services starts LocalStack when it
//! can be installed; without it these tests print why and pass without running.

mod support;

use std::time::Duration;

use profile_worker::queue::{Queue, QueueError};
use support::consumer::one_held_message;
use support::sqs::{TestQueue, eventually};

const HANG_GUARD: Duration = Duration::from_secs(120);

/// LocalStack's endpoint, or `None` (with the reason printed) when scripts/services has none.
fn localstack() -> Option<String> {
    match std::env::var("PW_TEST_LOCALSTACK_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: PW_TEST_LOCALSTACK_URL is empty: LocalStack is not installed or did not start \
                 (scripts/services installs localstack-core[runtime] into tools/localstack)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stale_receipt_answer_is_recognised() {
    let Some(endpoint) = localstack() else { return };
    let test = TestQueue::create(&endpoint, 5).await;
    let queue = test.connect(Duration::from_secs(1)).await;
    let received = |visibility: u64| {
        let queue = &queue;
        async move {
            let got = queue
                .receive(1, Duration::from_secs(2), Duration::from_secs(visibility))
                .await
                .expect("ReceiveMessage");
            got.into_iter().next().expect("a message")
        }
    };

    let stale = |answer: Result<(), QueueError>, what: &str| {
        assert!(
            matches!(answer, Err(QueueError::ReceiptInvalid(_))),
            "{what}: {answer:?}"
        );
    };

    test.send("one").await;
    let deleted = received(30).await;
    queue
        .delete_batch(std::slice::from_ref(&deleted.receipt_handle))
        .await
        .expect("DeleteMessageBatch");
    let answer = queue
        .change_visibility(&deleted.receipt_handle, Duration::from_secs(30))
        .await;
    stale(answer, "deleted: its receipt owns nothing");

    test.send("two").await;
    let purged = received(30).await;
    test.purge().await;
    let answer = queue
        .change_visibility(&purged.receipt_handle, Duration::from_secs(30))
        .await;
    stale(answer, "purged while in flight");

    let answer = queue
        .change_visibility("not-a-receipt-handle", Duration::from_secs(30))
        .await;
    stale(answer, "a handle SQS never issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_purged_while_handled_abandons_its_handler_once() {
    let Some(endpoint) = localstack() else { return };
    let (test, seen, mut consumer) = one_held_message(
        &endpoint,
        "work",
        Duration::from_secs(300),
        1,
        Duration::from_secs(6),
    )
    .await;

    eventually("the handler runs", HANG_GUARD, || async {
        seen.started.get() == 1
    })
    .await;
    test.purge().await;
    eventually("the handler is abandoned", HANG_GUARD, || async {
        seen.abandoned.get() == 1
    })
    .await;
    // Several renewal periods later: no retry loop against the stale receipt.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let summary = consumer.stop().await;

    assert_eq!(summary.lost, 1, "{summary:?}");
    assert_eq!(
        summary.done + summary.retried + summary.failed,
        0,
        "{summary:?}"
    );
    assert_eq!(seen.finished.get(), 0, "nothing written");
    assert_eq!(seen.started.get(), 1, "handled once");
    assert_eq!(seen.abandoned.get(), 1, "abandoned once");
    assert_eq!(consumer.extensions("lost"), 1);
    assert_eq!(consumer.extensions("error"), 0, "no renewal loop");
}
