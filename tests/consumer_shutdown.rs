//! Graceful drain on moto: short handlers finish, long ones are released at the end of the grace
//! period, and a receive in flight at shutdown returns what it took to the queue at once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::consumer::{at_once, done, probe, start};
use support::sqs::{TestQueue, eventually, moto_url, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_five_in_flight_finishes_short_ones_and_releases_long_ones() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    for body in ["short-1", "short-2", "long-1", "long-2", "long-3"] {
        test.send(body).await;
    }
    let (seen, h) = probe(
        |d| Duration::from_secs(if d.body.starts_with("short") { 1 } else { 300 }),
        done,
    );
    let mut s = settings(5);
    s.grace = Duration::from_secs(3);
    // The consumer must drain within the grace period (its stop guard is 30 s).
    let summary = start(queue, h, s)
        .stop_when("five handlers running", Duration::from_secs(30), || async {
            seen.started.get() == 5
        })
        .await;
    assert_eq!(seen.finished.get(), 2);
    assert_eq!((summary.done, summary.released), (2, 3));
    // Released means visible again at once, not after the 30 s visibility timeout.
    assert_eq!(test.counts().await, (3, 0));
    let mut left: Vec<String> = test
        .drain()
        .await
        .iter()
        .map(|m| m.body().unwrap_or_default().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["long-1", "long-2", "long-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_long_poll_leaves_nothing_invisible() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(5)).await);
    let (seen, h) = probe(at_once, done);
    let mut s = settings(5);
    s.wait = Duration::from_secs(5);
    let mut consumer = start(queue, h, s);
    // Let the first (empty) long poll finish so the next one is certainly in flight.
    eventually("an empty receive", Duration::from_secs(30), || async {
        consumer.receives("empty") >= 1
    })
    .await;
    consumer.cancel();
    for body in ["a", "b", "c"] {
        test.send(body).await;
    }
    // It stops once its receive returns.
    let summary = consumer.stop().await;
    assert_eq!(seen.started.get(), 0, "nothing handled after shutdown");
    assert_eq!(summary.released, summary.received);
    assert_eq!(test.counts().await, (3, 0));
}
