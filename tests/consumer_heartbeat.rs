//! Visibility heartbeat on moto: a 10 s handler under a 3 s visibility timeout is delivered once.

mod support;

use std::time::Duration;

use support::consumer::one_held_message;
use support::sqs::moto_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_longer_than_the_visibility_timeout_is_not_delivered_twice() {
    // Two permits: the poller keeps receiving while the slow handler runs, so an expired
    // visibility would show up as a second delivery.
    let (test, seen, mut consumer) = one_held_message(
        &moto_url(),
        "slow",
        Duration::from_secs(10),
        2,
        Duration::from_secs(3),
    )
    .await;
    let summary = consumer
        .stop_when(
            "handler finished and message deleted",
            Duration::from_secs(60),
            || async { seen.finished.get() == 1 && test.counts().await == (0, 0) },
        )
        .await;
    assert_eq!(seen.started.get(), 1);
    assert_eq!((summary.received, summary.done), (1, 1));
    assert!(consumer.extensions("ok") >= 3);
}
