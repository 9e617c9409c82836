//! Stale receipts against LocalStack, whose SQS answers them as SQS does: the answers for a
//! deleted, purged or never-issued receipt are recognised, and a handler whose message is gone is
//! abandoned once — nothing written, nothing recorded, no renewal loop. (LocalStack accepts a
//! receipt superseded by a later receive without effect and without error; only the lease's own
//! end, src/consumer/task.rs, protects against that.) scripts/services starts LocalStack when it
//! can be installed; without it these tests print why and pass without running.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::consumer::{Consumer, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::{Queue, QueueError};
use support::sqs::{TestQueue, eventually, handler, settings};
use tokio_util::sync::CancellationToken;

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

    test.send("one").await;
    let second = received(30).await;

    // Deleted: its receipt owns nothing.
    queue
        .delete_batch(std::slice::from_ref(&second.receipt_handle))
        .await
        .expect("DeleteMessageBatch");
    let gone = queue
        .change_visibility(&second.receipt_handle, Duration::from_secs(30))
        .await;
    assert!(
        matches!(gone, Err(QueueError::ReceiptInvalid(_))),
        "{gone:?}"
    );

    // Purged while in flight.
    test.send("two").await;
    let third = received(30).await;
    test.client
        .purge_queue()
        .queue_url(&test.url)
        .send()
        .await
        .expect("PurgeQueue");
    let purged = queue
        .change_visibility(&third.receipt_handle, Duration::from_secs(30))
        .await;
    assert!(
        matches!(purged, Err(QueueError::ReceiptInvalid(_))),
        "{purged:?}"
    );

    // A handle SQS never issued.
    let bogus = queue
        .change_visibility("not-a-receipt-handle", Duration::from_secs(30))
        .await;
    assert!(
        matches!(bogus, Err(QueueError::ReceiptInvalid(_))),
        "{bogus:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_purged_while_handled_abandons_its_handler_once() {
    let Some(endpoint) = localstack() else { return };
    let test = TestQueue::create(&endpoint, 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    test.send("work").await;

    let started = Arc::new(AtomicU32::new(0));
    let written = Arc::new(AtomicU32::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let h = {
        let (started, written, dropped) = (started.clone(), written.clone(), dropped.clone());
        handler(move |_d| {
            let (started, written, dropped) = (started.clone(), written.clone(), dropped.clone());
            async move {
                /// Marks the handler's future as dropped before it finished.
                struct OnDrop(Arc<AtomicBool>, bool);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        if !self.1 {
                            self.0.store(true, Ordering::SeqCst);
                        }
                    }
                }
                let mut guard = OnDrop(dropped, false);
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(300)).await;
                written.fetch_add(1, Ordering::SeqCst);
                guard.1 = true;
                Outcome::Done
            }
        })
    };
    let mut s = settings(1);
    s.visibility = Duration::from_secs(6);
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue, h, s, metrics.clone(), Health::new());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));

    eventually("the handler runs", HANG_GUARD, || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    test.client
        .purge_queue()
        .queue_url(&test.url)
        .send()
        .await
        .expect("PurgeQueue");
    eventually("the handler is abandoned", HANG_GUARD, || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    // Several renewal periods later: no retry loop against the stale receipt.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task");

    let extensions = |result: &str| {
        metrics
            .visibility_extensions
            .with_label_values(&[result])
            .get()
    };
    assert_eq!(summary.lost, 1, "{summary:?}");
    assert_eq!(
        summary.done + summary.retried + summary.failed,
        0,
        "{summary:?}"
    );
    assert_eq!(written.load(Ordering::SeqCst), 0, "nothing written");
    assert_eq!(started.load(Ordering::SeqCst), 1, "handled once");
    assert_eq!(extensions("lost"), 1);
    assert_eq!(extensions("error"), 0, "no renewal loop");
}
