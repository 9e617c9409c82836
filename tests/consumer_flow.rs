//! Back-pressure on fauxqs with 200 messages: never more than `concurrency` handlers at once, and
//! a freed permit is refilled within about one receive round-trip while messages are waiting.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profile_worker::consumer::Outcome;
use profile_worker::queue::{OutgoingMessage, Queue, QueueError, ReceivedMessage};
use support::consumer::start;
use support::queue::{Hooks, Intercepted};
use support::sqs::{TestQueue, eventually, fauxqs_url, handler, settings};

const MESSAGES: usize = 200;
const LIMIT: usize = 5;

/// Records how long each receive round-trip that brought messages took.
#[derive(Default)]
struct TimedReceives(Mutex<Vec<Duration>>);

impl Hooks for TimedReceives {
    fn received(&self, took: Duration, answer: &Result<Vec<ReceivedMessage>, QueueError>) {
        if answer.as_ref().is_ok_and(|m| !m.is_empty()) {
            self.0.lock().unwrap().push(took);
        }
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
    let queue = Intercepted::new(sqs, TimedReceives::default());

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

    let summary = start(queue.clone(), h, settings(LIMIT))
        .stop_when("all messages handled", Duration::from_secs(120), || {
            std::future::ready(finished.load(Ordering::SeqCst) >= MESSAGES)
        })
        .await;
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
    let rtt = *queue.hooks.0.lock().unwrap().iter().max().unwrap();
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
