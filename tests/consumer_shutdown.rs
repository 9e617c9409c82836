//! Graceful drain on moto: short handlers finish, long ones are released at the end of the grace
//! period, and a receive in flight at shutdown returns what it took to the queue at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::consumer::{Consumer, Delivery, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use support::sqs::{TestQueue, eventually, handler, moto_url, settings};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_five_in_flight_finishes_short_ones_and_releases_long_ones() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    for body in ["short-1", "short-2", "long-1", "long-2", "long-3"] {
        test.send(body).await;
    }
    let started = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let h = {
        let (started, finished) = (started.clone(), finished.clone());
        handler(move |d: Delivery| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let hold = if d.body.starts_with("short") { 1 } else { 300 };
                tokio::time::sleep(Duration::from_secs(hold)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };
    let mut s = settings(5);
    s.grace = Duration::from_secs(3);
    let consumer = Consumer::new(queue, h, s, Arc::new(Metrics::new()), Health::new());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    eventually("five handlers running", Duration::from_secs(30), || {
        let started = started.clone();
        async move { started.load(Ordering::SeqCst) == 5 }
    })
    .await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer drains within the grace period")
        .expect("consumer task");
    assert_eq!(finished.load(Ordering::SeqCst), 2);
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
    let mut s = settings(5);
    s.wait = Duration::from_secs(5);
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue, h, s, metrics.clone(), Health::new());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    // Let the first (empty) long poll finish so the next one is certainly in flight.
    eventually("an empty receive", Duration::from_secs(30), || {
        let metrics = metrics.clone();
        async move { metrics.receive_requests.with_label_values(&["empty"]).get() >= 1 }
    })
    .await;
    stop.cancel();
    for body in ["a", "b", "c"] {
        test.send(body).await;
    }
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops after its receive returns")
        .expect("consumer task");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        0,
        "nothing handled after shutdown"
    );
    assert_eq!(summary.released, summary.received);
    assert_eq!(test.counts().await, (3, 0));
}
