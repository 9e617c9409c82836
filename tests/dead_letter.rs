//! Nothing is lost at the dead-letter queue (moto): a copy the dead-letter queue refuses never
//! leads to a delete (the queue's own redrive moves the message intact), and a dead-letter queue
//! that does not exist stops start-up with the setting to fix.

mod support;

use std::sync::Arc;
use std::time::Duration;

use profile_worker::config::QueueConfig;
use profile_worker::consumer::Outcome;
use profile_worker::queue::{QueueError, SqsQueue};
use support::consumer::{at_once, probe, start};
use support::daemon::Stack;
use support::sqs::{TestQueue, aws, eventually, moto_url, settings};

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

    let (seen, h) = probe(at_once, |_| Outcome::Poison {
        reason: "body is not JSON".into(),
    });
    let mut consumer = start(queue, h, settings(1));

    // SQS's redrive (maxReceiveCount 2) moves the message itself once it was received twice.
    let dead = std::sync::Mutex::new(Vec::new());
    eventually("the queue redrives the message", HANG_GUARD, || async {
        let got = test.drain_dead_letters().await;
        let mut dead = dead.lock().unwrap();
        dead.extend(got);
        !dead.is_empty()
    })
    .await;
    let dead = dead.into_inner().unwrap();
    let summary = consumer.stop().await;

    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()), "moved intact");
    assert_eq!(seen.started.get(), 2, "handled on each delivery");
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

/// Connecting with `config` fails: its dead-letter queue is not found.
async fn missing_dead_letter_queue(config: QueueConfig) -> QueueError {
    let err = connect(config)
        .await
        .err()
        .expect("a missing dead-letter queue");
    assert!(matches!(err, QueueError::NotFound(_)), "{err}");
    err
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
    let err = missing_dead_letter_queue(test.queue_config()).await;
    assert!(err.to_string().contains("RedrivePolicy"), "{err}");
    assert!(err.to_string().contains("queue.dead_letter_url"), "{err}");

    // queue.dead_letter_url names a queue that does not exist.
    let mut config = test.queue_config();
    config.dead_letter_url = test.dlq_url.replace("-dlq", "-missing-dlq");
    let err = missing_dead_letter_queue(config.clone()).await;
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
