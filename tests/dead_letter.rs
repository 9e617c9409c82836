//! Nothing is lost at the dead-letter queue (moto): a copy the dead-letter queue refuses never
//! leads to a delete (the queue's own redrive moves the message intact), and a dead-letter queue
//! that does not exist stops start-up with the setting to fix.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::config::QueueConfig;
use profile_worker::consumer::{Consumer, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::{QueueError, SqsQueue};
use support::daemon::Stack;
use support::sqs::{TestQueue, aws, eventually, handler, moto_url, settings};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_the_dead_letter_queue_refuses_is_never_deleted() {
    // The dead-letter queue takes at most 1 KiB; the poison body is 2 KiB, so every copy is
    // refused (InvalidParameterValue), as SQS refuses a body and attributes over 256 KiB.
    let name = format!("pw-test-{}", uuid::Uuid::new_v4().simple());
    let test = TestQueue::create_with_dlq_limit(&moto_url(), &name, 2, Some(1024)).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    let body = format!("not json {}", "x".repeat(2048));
    test.send(&body).await;

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
        settings(1),
        Arc::new(Metrics::new()),
        Health::new(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));

    // SQS's redrive (maxReceiveCount 2) moves the message itself once it was received twice.
    let dead = std::sync::Mutex::new(Vec::new());
    eventually("the queue redrives the message", HANG_GUARD, || {
        let dead = &dead;
        let test = &test;
        async move {
            let got = test.drain_dead_letters().await;
            let mut dead = dead.lock().unwrap();
            dead.extend(got);
            !dead.is_empty()
        }
    })
    .await;
    let dead = dead.into_inner().unwrap();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task");

    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()), "moved intact");
    assert_eq!(
        deliveries.load(Ordering::SeqCst),
        2,
        "handled on each delivery"
    );
    assert_eq!(summary.poison, 0, "never settled as poison: {summary:?}");
    assert_eq!(summary.retried, 2, "{summary:?}");
    assert_eq!(test.counts().await, (0, 0));
}

async fn connect(config: QueueConfig) -> Result<SqsQueue, QueueError> {
    SqsQueue::connect(
        &profile_worker::aws::sdk_config(&aws()).await,
        &config,
        Duration::from_secs(1),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_that_does_not_exist_is_a_start_up_error_naming_the_setting() {
    let test = TestQueue::create(&moto_url(), 3).await;

    // The RedrivePolicy names a queue that was deleted.
    test.client
        .delete_queue()
        .queue_url(&test.dlq_url)
        .send()
        .await
        .expect("DeleteQueue");
    let err = connect(test.queue_config())
        .await
        .err()
        .expect("a missing dead-letter queue");
    assert!(matches!(err, QueueError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("RedrivePolicy"), "{err}");
    assert!(err.to_string().contains("queue.dead_letter_url"), "{err}");

    // queue.dead_letter_url names a queue that does not exist.
    let mut config = test.queue_config();
    config.dead_letter_url = test.dlq_url.replace("-dlq", "-missing-dlq");
    let err = connect(config.clone())
        .await
        .err()
        .expect("a missing dead-letter queue");
    assert!(matches!(err, QueueError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("queue.dead_letter_url"), "{err}");

    // Not a queue URL at all.
    config.dead_letter_url = "dlq".into();
    let err = connect(config).await.err().expect("not a queue URL");
    assert!(err.to_string().contains("queue.dead_letter_url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exits_at_start_up_when_its_dead_letter_queue_is_missing() {
    let stack = Stack::new().await;
    let missing = stack.queue.dlq_url.replace("-dlq", "-missing-dlq");
    let mut daemon = stack.start(&[("PROFILE_WORKER_QUEUE__DEAD_LETTER_URL", &missing)]);
    let status = daemon.wait(HANG_GUARD);
    assert!(!status.success(), "exits with an error");
    assert!(
        daemon.logs().contains("queue.dead_letter_url"),
        "{}",
        daemon.logs()
    );
}
