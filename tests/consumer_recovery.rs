//! The SQS endpoint goes away and comes back: the consumer recovers without a restart and the
//! "queue" readiness check follows (uses a moto server of its own).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::consumer::{at_once, done, probe, start};
use support::sqs::{OwnMoto, TestQueue, eventually, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_recovers_when_the_endpoint_comes_back_and_readiness_follows() {
    let port = OwnMoto::free_port();
    let moto = OwnMoto::start(port).await;
    let name = format!("pw-recovery-{}", uuid::Uuid::new_v4().simple());
    let test = TestQueue::create_named(&moto.url(), &name, 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    let (seen, h) = probe(at_once, done);
    let mut consumer = start(queue, h, settings(2));
    let health = consumer.health.clone();
    let ready = |want: bool| {
        let health = health.clone();
        move || std::future::ready(health.readiness().ready == want)
    };
    let finished = &seen.finished;
    let handled = |n: u32| move || std::future::ready(finished.get() == n);

    eventually("ready", Duration::from_secs(30), ready(true)).await;
    test.send("before").await;
    eventually("first message handled", Duration::from_secs(30), handled(1)).await;

    moto.stop();
    eventually(
        "unready while SQS is down",
        Duration::from_secs(60),
        ready(false),
    )
    .await;
    let detail = health.readiness().checks["queue"].detail.clone();
    assert!(detail.contains("consecutive queue errors"), "{detail}");
    assert!(
        health.liveness().is_ok(),
        "the poll loop stays alive while SQS is down"
    );

    let _moto = OwnMoto::start(port).await;
    // moto keeps no state across restarts: re-create the same queue (same URL).
    let again = TestQueue::create_named(&test.endpoint, &name, 5).await;
    assert_eq!(again.url, test.url);
    again.send("after").await;
    eventually(
        "message handled after recovery",
        Duration::from_secs(60),
        handled(2),
    )
    .await;
    eventually("ready again", Duration::from_secs(30), ready(true)).await;

    let summary = consumer.stop().await;
    assert_eq!(summary.done, 2);
    assert!(consumer.receives("error") >= 2);
}
