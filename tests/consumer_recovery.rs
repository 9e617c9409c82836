//! The SQS endpoint goes away and comes back: the consumer recovers without a restart and the
//! "queue" readiness check follows (uses a moto server of its own).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::consumer::{Consumer, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use support::sqs::{OwnMoto, TestQueue, eventually, handler, settings};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_recovers_when_the_endpoint_comes_back_and_readiness_follows() {
    let port = OwnMoto::free_port();
    let moto = OwnMoto::start(port).await;
    let name = format!("pw-recovery-{}", uuid::Uuid::new_v4().simple());
    let test = TestQueue::create_named(&moto.url(), &name, 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);

    let handled = Arc::new(AtomicU32::new(0));
    let h = {
        let handled = handled.clone();
        handler(move |_d| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };
    let health = Health::new();
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue, h, settings(2), metrics.clone(), health.clone());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    let ready = |want: bool| {
        let health = health.clone();
        move || {
            let health = health.clone();
            async move { health.readiness().ready == want }
        }
    };
    let handled_n = |n: u32| {
        let handled = handled.clone();
        move || {
            let handled = handled.clone();
            async move { handled.load(Ordering::SeqCst) == n }
        }
    };

    eventually("ready", Duration::from_secs(30), ready(true)).await;
    test.send("before").await;
    eventually(
        "first message handled",
        Duration::from_secs(30),
        handled_n(1),
    )
    .await;

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
        handled_n(2),
    )
    .await;
    eventually("ready again", Duration::from_secs(30), ready(true)).await;

    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task");
    assert_eq!(summary.done, 2);
    assert!(metrics.receive_requests.with_label_values(&["error"]).get() >= 2);
}
