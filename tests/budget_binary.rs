//! The daily cost cap with the real binary (docs/decisions.md, "Daily cost cap"): a job drained
//! by `profile-worker run` against the fake Bedrock stops spending at the cap plus at most what
//! the messages already generating spend, counts nothing failed, and resumes within one hold
//! probe once the cap is raised in `app_config`; the console shows the cap and the pause.

mod support;

use std::time::{Duration, Instant};

use profile_worker::model::JobStatus;
use profile_worker::store::JobStore;
use support::bedrock::FakeBedrock;
use support::daemon::{Stack, http};
use support::pipeline::{COLLECTION, HAIKU_PRICE, message};
use support::redis::{shared_url, unique_prefix};
use support::sqs::eventually;

const HANG_GUARD: Duration = Duration::from_secs(180);
/// The entities of [`COLLECTION`] with qualifying books.
const ENTITIES: [&str; 12] = [
    "author:1",
    "author:2",
    "author:10",
    "author:11",
    "author:12",
    "author:13",
    "author:14",
    "author:20",
    "publisher:2",
    "publisher:3",
    "publisher:4",
    "binder:1",
];
const CONCURRENCY: usize = 2;
/// Most calls one profile of [`COLLECTION`] makes: discovery, biography, three narratives.
const MAX_CALLS_PER_PROFILE: f64 = 5.0;
/// Longest wait between two probes of a held message (`consumer/task.rs`, `HOLD_PROBES`).
const HOLD_PROBE_CAP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_stops_at_the_daily_cap_and_a_raised_cap_resumes_the_job() {
    let stack = Stack::new().await;
    stack.db.exec(COLLECTION).await;
    let store = stack.db.store();
    let fake = FakeBedrock::start().await;
    fake.set_latency(Duration::from_millis(200));
    // Every fake reply uses 100 input and 20 output tokens.
    let per_call = (100.0 * HAIKU_PRICE.0 + 20.0 * HAIKU_PRICE.1) / 1_000_000.0;
    let cap = 10.0 * per_call;
    let job = store
        .create_job(1, ENTITIES.len() as i32, JobStatus::InProgress)
        .await
        .unwrap();
    let (fake_url, redis_url, prefix) = (fake.url(), shared_url(), unique_prefix());
    let cap_setting = cap.to_string();
    let concurrency = CONCURRENCY.to_string();
    let mut daemon = stack.start(&[
        ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &fake_url),
        ("PROFILE_WORKER_GENERATOR__RETRY_BASE_MS", "1"),
        ("PROFILE_WORKER_CONSUMER__CONCURRENCY", &concurrency),
        ("PROFILE_WORKER_CACHE__REDIS_URL", &redis_url),
        ("PROFILE_WORKER_BUDGET__KEY_PREFIX", &prefix),
        ("PROFILE_WORKER_BUDGET__DAILY_COST_USD", &cap_setting),
    ]);
    for entity in ENTITIES {
        stack
            .queue
            .send(&message(Some(&job.id), entity, false))
            .await;
    }

    let spend = || {
        let store = &store;
        async move { store.spend_today().await.unwrap().cost_usd }
    };
    eventually("spend reaches the cap", HANG_GUARD, || async {
        spend().await >= cap
    })
    .await;
    // The messages already generating finish; then nothing more is spent.
    let mut stopped = spend().await;
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = spend().await;
        if now != stopped {
            (stopped, still_since) = (now, Instant::now());
        }
    }
    let in_flight = CONCURRENCY as f64 * MAX_CALLS_PER_PROFILE * per_call;
    assert!(
        stopped >= cap && stopped <= cap + in_flight + 1e-12,
        "spend {stopped} against the cap {cap} plus at most {in_flight} in flight"
    );
    let held = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(held.failed, 0, "nothing counted failed at the cap");
    assert!(
        (held.succeeded as usize) < ENTITIES.len(),
        "messages are held: {held:?}"
    );
    let sent = fake.requests().len();
    // The console says why: the cap in force, and the replica paused on it.
    eventually("the console shows the pause", HANG_GUARD, || async {
        let (status, _, body) = http("GET", &daemon.url("/api/overview")).await;
        let overview: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status == 200
            && overview["spend"]["daily_cap_usd"].as_f64() == Some(cap)
            && overview["spend"]["paused"] == serde_json::json!(["daily_cost_cap"])
    })
    .await;
    assert_eq!(fake.requests().len(), sent, "no call while held at the cap");

    store_cap(&stack, 1.0).await;
    let raised = Instant::now();
    eventually("a held message generates again", HANG_GUARD, || async {
        fake.requests().len() > sent
    })
    .await;
    let resumed_after = raised.elapsed();
    assert!(
        resumed_after <= HOLD_PROBE_CAP + Duration::from_secs(5),
        "resumed {resumed_after:?} after the cap was raised"
    );
    eventually("the job completes", HANG_GUARD, || async {
        store.job(&job.id).await.unwrap().unwrap().status == JobStatus::Completed
    })
    .await;
    let done = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (done.succeeded, done.failed),
        (ENTITIES.len() as i32, 0),
        "{}",
        daemon.logs()
    );

    daemon.signal("TERM");
    let status = tokio::task::spawn_blocking(move || daemon.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// Sets `budget.daily_cost_usd` in `app_config`, which wins over the configuration.
async fn store_cap(stack: &Stack, usd: f64) {
    stack
        .db
        .exec(&format!(
            "INSERT INTO app_config (key, value) VALUES ('budget.daily_cost_usd', '{usd}') \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ))
        .await;
}
