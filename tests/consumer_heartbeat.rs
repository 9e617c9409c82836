//! Visibility heartbeat on moto: a 10 s handler under a 3 s visibility timeout is delivered once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::consumer::{Consumer, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use support::sqs::{TestQueue, eventually, handler, moto_url, settings};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_longer_than_the_visibility_timeout_is_not_delivered_twice() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    test.send("slow").await;
    let deliveries = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let h = {
        let (deliveries, finished) = (deliveries.clone(), finished.clone());
        handler(move |_d| {
            let (deliveries, finished) = (deliveries.clone(), finished.clone());
            async move {
                deliveries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(10)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };
    // Two permits: the poller keeps receiving while the slow handler runs, so an expired
    // visibility would show up as a second delivery.
    let mut s = settings(2);
    s.visibility = Duration::from_secs(3);
    let metrics = Arc::new(Metrics::new());
    let consumer = Consumer::new(queue, h, s, metrics.clone(), Health::new());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    eventually(
        "handler finished and message deleted",
        Duration::from_secs(60),
        || {
            let finished = finished.clone();
            let test = &test;
            async move { finished.load(Ordering::SeqCst) == 1 && test.counts().await == (0, 0) }
        },
    )
    .await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task");
    assert_eq!(deliveries.load(Ordering::SeqCst), 1);
    assert_eq!((summary.received, summary.done), (1, 1));
    assert!(
        metrics
            .visibility_extensions
            .with_label_values(&["ok"])
            .get()
            >= 3
    );
}
