//! Running a [`Consumer`] in a test: start it in the background with its own metrics and health,
//! read them while it runs, stop it and take its summary; and [`probe`], a handler that counts
//! what happens to each delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use profile_worker::consumer::{Consumer, ConsumerSettings, Delivery, Handler, Outcome, Summary};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::queue::Queue;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sqs::{TestQueue, eventually, handler, settings};

/// How long a stopped consumer may take to drain (a hang guard, not a timing assertion).
const STOP_GUARD: Duration = Duration::from_secs(30);

/// A consumer running on its own task until [`Running::stop`].
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub health: Health,
    stop: CancellationToken,
    task: JoinHandle<Summary>,
}

/// Starts a consumer of `queue` with fresh metrics and health.
pub fn start(
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
) -> Running {
    let (metrics, health) = (Arc::new(Metrics::new()), Health::new());
    let consumer = Consumer::new(queue, handler, settings, metrics.clone(), health.clone());
    start_consumer(consumer, metrics, health)
}

/// Starts `consumer`, built by the test with these `metrics` and `health`.
pub fn start_consumer(consumer: Consumer, metrics: Arc<Metrics>, health: Health) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(stop.clone()));
    Running {
        metrics,
        health,
        stop,
        task,
    }
}

impl Running {
    /// Asks the consumer to stop without waiting for it.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Asks the consumer to stop (if not yet asked) and returns its summary once it has drained (the metrics and
    /// health stay readable).
    pub async fn stop(&mut self) -> Summary {
        self.stop.cancel();
        tokio::time::timeout(STOP_GUARD, &mut self.task)
            .await
            .expect("consumer stops")
            .expect("consumer task")
    }

    /// Waits (at most `limit`) until `cond` holds, then stops the consumer.
    pub async fn stop_when<F, Fut>(&mut self, what: &str, limit: Duration, cond: F) -> Summary
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually(what, limit, cond).await;
        self.stop().await
    }

    /// `messages_processed_total{outcome}`.
    pub fn processed(&self, outcome: &str) -> u64 {
        self.metrics
            .messages_processed
            .with_label_values(&[outcome])
            .get()
    }

    /// `visibility_extensions_total{result}`.
    pub fn extensions(&self, result: &str) -> u64 {
        self.metrics
            .visibility_extensions
            .with_label_values(&[result])
            .get()
    }

    /// `receive_requests_total{result}`.
    pub fn receives(&self, result: &str) -> u64 {
        self.metrics
            .receive_requests
            .with_label_values(&[result])
            .get()
    }
}

/// One message `body` on a fresh queue at `endpoint`, handled by a [`probe`] that holds it for
/// `hold`, under `permits` permits and a visibility of `visibility`.
pub async fn one_held_message(
    endpoint: &str,
    body: &str,
    hold: Duration,
    permits: usize,
    visibility: Duration,
) -> (TestQueue, Probe, Running) {
    let test = TestQueue::create(endpoint, 5).await;
    let queue = Arc::new(test.connect(Duration::from_secs(1)).await);
    test.send(body).await;
    let (seen, h) = probe(move |_| hold, done);
    let consumer = start(
        queue,
        h,
        ConsumerSettings {
            visibility,
            ..settings(permits)
        },
    );
    (test, seen, consumer)
}

/// A count shared between a handler and the test.
#[derive(Clone, Default)]
pub struct Count(Arc<AtomicU32>);

impl Count {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What [`probe`]'s handler saw: deliveries `started`, runs `finished`, and runs `abandoned`
/// (their future dropped before it finished: cancelled by the consumer).
#[derive(Clone, Default)]
pub struct Probe {
    pub started: Count,
    pub finished: Count,
    pub abandoned: Count,
}

/// A handler that counts each delivery, holds it for `hold(delivery)` and answers
/// `outcome(delivery)`.
pub fn probe(
    hold: impl Fn(&Delivery) -> Duration + Send + Sync + 'static,
    outcome: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static,
) -> (Probe, Arc<dyn Handler>) {
    /// Counts the run as abandoned unless it was disarmed at the end.
    struct Armed(Option<Count>);
    impl Drop for Armed {
        fn drop(&mut self) {
            if let Some(abandoned) = &self.0 {
                abandoned.add();
            }
        }
    }

    let seen = Probe::default();
    let (hold, outcome) = (Arc::new(hold), Arc::new(outcome));
    let h = {
        let seen = seen.clone();
        handler(move |d: Delivery| {
            let (seen, hold, outcome) = (seen.clone(), hold.clone(), outcome.clone());
            async move {
                let mut armed = Armed(Some(seen.abandoned.clone()));
                seen.started.add();
                let hold = hold(&d);
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                seen.finished.add();
                armed.0 = None;
                outcome(&d)
            }
        })
    };
    (seen, h)
}

/// No hold: the handler answers at once.
pub fn at_once(_: &Delivery) -> Duration {
    Duration::ZERO
}

pub fn done(_: &Delivery) -> Outcome {
    Outcome::Done
}
