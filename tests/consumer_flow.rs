//! Back-pressure on fauxqs with 200 messages: never more than `concurrency` handlers at once, and
//! a freed permit is refilled within about one receive round-trip while messages are waiting.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use profile_worker::consumer::{Consumer, Outcome};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::{
    BatchFailure, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};
use support::sqs::{TestQueue, eventually, fauxqs_url, handler, settings};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 200;
const LIMIT: usize = 5;

/// Delegates to the real queue and records how long each receive round-trip took.
struct TimedReceives {
    inner: Arc<dyn Queue>,
    receives: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Queue for TimedReceives {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let started = Instant::now();
        let got = self.inner.receive(max, wait, visibility).await;
        if got.as_ref().is_ok_and(|m| !m.is_empty()) {
            self.receives.lock().unwrap().push(started.elapsed());
        }
        got
    }
    async fn delete_batch(&self, r: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.delete_batch(r).await
    }
    async fn change_visibility(&self, r: &str, t: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(r, t).await
    }
    async fn change_visibility_batch(
        &self,
        e: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.change_visibility_batch(e).await
    }
    async fn send(&self, m: &OutgoingMessage) -> Result<String, QueueError> {
        self.inner.send(m).await
    }
    async fn send_batch(&self, m: &[OutgoingMessage]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.send_batch(m).await
    }
    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.approximate_depth().await
    }
    fn max_receive_count(&self) -> Option<u32> {
        self.inner.max_receive_count()
    }
    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.inner.dead_letter_queue()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_keep_every_permit_busy_and_never_exceed_the_limit() {
    let test = TestQueue::create(&fauxqs_url(), 5).await;
    let sqs: Arc<dyn Queue> = Arc::new(test.connect(Duration::from_secs(1)).await);
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|i| OutgoingMessage::new(format!("{{\"n\":{i}}}")))
            .collect();
        assert_eq!(sqs.send_batch(&batch).await.expect("send_batch"), vec![]);
    }
    let queue = Arc::new(TimedReceives {
        inner: sqs,
        receives: Mutex::default(),
    });

    // (time, in-flight after the event, handlers started so far)
    let events: Arc<Mutex<Vec<(Instant, usize, usize)>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let h = {
        let (events, in_flight, started, finished) = (
            events.clone(),
            in_flight.clone(),
            started.clone(),
            finished.clone(),
        );
        handler(move |_d| {
            let (events, in_flight, started, finished) = (
                events.clone(),
                in_flight.clone(),
                started.clone(),
                finished.clone(),
            );
            async move {
                {
                    let mut ev = events.lock().unwrap();
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    let s = started.fetch_add(1, Ordering::SeqCst) + 1;
                    ev.push((Instant::now(), now, s));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                {
                    let mut ev = events.lock().unwrap();
                    let now = in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
                    ev.push((Instant::now(), now, started.load(Ordering::SeqCst)));
                }
                finished.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
    };

    let consumer = Consumer::new(
        queue.clone(),
        h,
        settings(LIMIT),
        Arc::new(Metrics::new()),
        Health::new(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(stop.clone()));
    eventually("all messages handled", Duration::from_secs(120), || {
        let finished = finished.clone();
        async move { finished.load(Ordering::SeqCst) >= MESSAGES }
    })
    .await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("consumer stops")
        .expect("consumer task");
    assert_eq!(summary.done, MESSAGES as u64);
    assert_eq!(
        summary.received, MESSAGES as u64,
        "no message delivered twice"
    );

    let events = events.lock().unwrap().clone();
    let max_in_flight = events.iter().map(|e| e.1).max().unwrap();
    assert_eq!(
        max_in_flight, LIMIT,
        "in-flight must reach but never exceed the limit"
    );

    // A permit is free from the moment in-flight drops below the limit until it is back at the
    // limit; while messages were still waiting (fewer than 200 started) that must take no more
    // than two receive round-trips (one may be in progress when the permit frees) plus slack
    // for scheduling on a busy machine.
    let rtt = *queue.receives.lock().unwrap().iter().max().unwrap();
    let mut longest = Duration::ZERO;
    let mut below_since: Option<Instant> = None;
    for (at, now, started) in &events {
        if *now < LIMIT && *started < MESSAGES {
            below_since.get_or_insert(*at);
        } else if *now == LIMIT
            && let Some(since) = below_since.take()
        {
            longest = longest.max(at.duration_since(since));
        }
    }
    eprintln!("longest free-permit gap {longest:?}; slowest receive round-trip {rtt:?}");
    let bound = rtt * 2 + Duration::from_millis(250);
    assert!(
        longest <= bound,
        "a permit stayed free {longest:?} while messages waited (receive round-trip up to {rtt:?})"
    );
    eventually("queue empty", Duration::from_secs(10), || async {
        test.counts().await == (0, 0)
    })
    .await;
}
