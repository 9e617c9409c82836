//! Batch jobs for operators against real PostgreSQL and moto SQS: `enqueue --all` and
//! `--entity`, send failures lowering the total, `status` (JSON and non-terminal `--watch`),
//! `cancel` exit codes, `jobs`, and the stuck-job rescue.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use profile_worker::jobs::{
    Batch, EnqueueReport, JobsError, RescueRound, RescueSettings, SendFailure, SendRetry,
    enqueue_all, enqueue_batch, enqueue_one, rescue_loop, rescue_once, resolve_owner,
};
use profile_worker::model::{EntityRef, EntityType, Job, JobStatus};
use profile_worker::pipeline::message::{Message, parse};
use profile_worker::queue::{Queue, QueueError};
use profile_worker::store::{JobStore, Outcome, OutcomeRecord, Store};
use support::daemon::{command, run_to_end};
use support::db::{TestDb, add_user};
use support::jobs::{ENTITIES, SendFaults, add_usage, seed_collection};
use support::queue::Intercepted;
use support::sqs::{TestQueue, eventually, moto_url};
use tokio_util::sync::CancellationToken;

const HANG_GUARD: Duration = Duration::from_secs(60);

fn author(id: i32) -> EntityRef {
    EntityRef::new(EntityType::Author, id)
}

/// A fast retry policy: the behaviour under test is which entries are retried, not the waits.
fn quick_retry() -> SendRetry {
    SendRetry {
        attempts: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
    }
}

/// A migrated database seeded with [`seed_collection`], and its store.
async fn seeded() -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::migrated().await;
    seed_collection(&db).await;
    let store: Arc<dyn Store> = Arc::new(db.store());
    (db, store)
}

async fn moto_queue() -> TestQueue {
    TestQueue::create(&moto_url(), 5).await
}

/// Every message now visible in the queue, parsed.
async fn received(queue: &TestQueue) -> Vec<(String, Message)> {
    queue
        .drain()
        .await
        .into_iter()
        .map(|m| {
            let body = m.body().expect("body").to_string();
            let parsed = parse(&body, 65_536).expect("enqueue sends valid messages");
            (body, parsed)
        })
        .collect()
}

async fn collection(store: &dyn Store) -> BTreeSet<EntityRef> {
    store
        .collection_entities()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entity)
        .collect()
}

/// What a report that started a job says; any other report fails the test.
struct Started {
    job: Job,
    entities: usize,
    sent: usize,
    failures: Vec<SendFailure>,
}

fn started(report: EnqueueReport) -> Started {
    match report {
        EnqueueReport::Started {
            job,
            entities,
            sent,
            failures,
        } => Started {
            job,
            entities,
            sent,
            failures,
        },
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// `enqueue_batch` of the whole collection for owner 1 with [`quick_retry`]; it must start a job.
async fn enqueue_collection(store: &dyn Store, queue: &dyn Queue, force: bool) -> Started {
    let batch = Batch {
        owner_id: 1,
        force,
        limit: None,
    };
    started(
        enqueue_batch(store, queue, batch, quick_retry())
            .await
            .expect("enqueue_batch"),
    )
}

/// The stored job `id`, which must exist.
async fn fetch_job(store: &dyn Store, id: &str) -> Job {
    store.job(id).await.unwrap().expect("job exists")
}

/// Records a success for every entity of a job, as workers would.
async fn finish(store: &dyn Store, job_id: &str, entities: impl IntoIterator<Item = EntityRef>) {
    for entity in entities {
        store
            .record_outcome(OutcomeRecord {
                job_id: job_id.into(),
                entity,
                attempt: 1,
                outcome: Outcome::Succeeded,
            })
            .await
            .unwrap();
    }
}

// ---- enqueue ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_all_sends_one_message_per_entity_and_reports_the_active_job_after() {
    let (_db, store) = seeded().await;
    let q = moto_queue().await;
    let queue = q.connect(Duration::from_secs(1)).await;
    let owner = resolve_owner(&*store, None).await.unwrap();
    assert_eq!(owner, 1);

    let Started {
        job,
        entities,
        sent,
        failures,
    } = started(enqueue_all(&*store, &queue, owner, false).await.unwrap());
    assert_eq!((entities, sent), (ENTITIES, ENTITIES));
    assert!(failures.is_empty(), "{failures:?}");
    let stored = fetch_job(&*store, &job.id).await;
    assert_eq!(stored.status, JobStatus::InProgress);
    assert_eq!(stored.total_entities, ENTITIES as i32);
    assert_eq!(stored.owner_id, 1);

    let messages = received(&q).await;
    assert_eq!(messages.len(), ENTITIES, "exactly one message per entity");
    let sent_to: BTreeSet<EntityRef> = messages.iter().map(|(_, m)| m.entity).collect();
    assert_eq!(sent_to, collection(&*store).await);
    assert!(
        !sent_to.contains(&author(21)),
        "a sold-only author is not queued"
    );
    for (body, m) in &messages {
        assert_eq!(m.job_id.as_deref(), Some(job.id.as_str()));
        assert!(!m.force);
        assert_eq!(body, &m.body(), "the message module's own wire format");
    }

    // While it runs, a second enqueue returns the same job and sends nothing.
    let again = enqueue_all(&*store, &queue, owner, false).await.unwrap();
    assert_eq!(again, EnqueueReport::Existing(stored.clone()));
    assert_eq!(q.counts().await.0, 0, "nothing new is visible");
    assert_eq!(store.recent_jobs(10).await.unwrap().len(), 1);

    // Once every entity is done the job completes with exact counters.
    finish(&*store, &job.id, sent_to).await;
    let done = fetch_job(&*store, &job.id).await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!((done.succeeded, done.failed), (ENTITIES as i32, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_collection_creates_no_job_and_sends_nothing() {
    let db = TestDb::migrated().await;
    add_user(&db, 1, "admin").await;
    let store = db.store();
    let q = moto_queue().await;
    let queue = q.connect(Duration::from_secs(1)).await;
    let report = enqueue_all(&store, &queue, 1, false).await.unwrap();
    assert_eq!(report, EnqueueReport::Empty);
    assert!(store.recent_jobs(10).await.unwrap().is_empty());
    assert_eq!(q.counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_entries_lower_the_total_so_the_job_still_completes() {
    let (_db, store) = seeded().await;
    let q = moto_queue().await;
    let sqs: Arc<dyn Queue> = Arc::new(q.connect(Duration::from_secs(1)).await);
    let lost = [
        author(3),
        EntityRef::new(EntityType::Publisher, 5),
        EntityRef::new(EntityType::Binder, 8),
    ];
    let flaky = [author(7), EntityRef::new(EntityType::Binder, 2)];
    let faults = SendFaults::default()
        .always(&lost)
        .once(&flaky)
        // The first call fails as a whole but transiently: it is retried.
        .fail_call(1, QueueError::Transient("injected timeout".into()));
    let queue = Intercepted::new(sqs, faults);

    let Started {
        job,
        entities,
        sent,
        failures,
    } = enqueue_collection(&*store, &*queue, true).await;
    assert_eq!(entities, ENTITIES);
    assert_eq!(sent, ENTITIES - lost.len());
    let failed: Vec<EntityRef> = failures.iter().map(|f| f.entity).collect();
    assert_eq!(failed, lost, "failures listed in collection order");
    assert!(
        failures
            .iter()
            .all(|f| f.reason.starts_with("InternalError: injected failure")),
        "{failures:?}"
    );
    assert!(
        queue.hooks.calls() > ENTITIES / 10,
        "failed entries were retried"
    );

    let stored = fetch_job(&*store, &job.id).await;
    assert_eq!(stored, job);
    assert_eq!(stored.status, JobStatus::InProgress);
    assert_eq!(stored.total_entities, (ENTITIES - lost.len()) as i32);
    let log = stored.error_log.clone().unwrap();
    assert!(
        log.contains("enqueue: 3 of 40 message(s) could not be sent")
            && log.contains("author:3, publisher:5, binder:8"),
        "{log}"
    );

    let messages = received(&q).await;
    assert_eq!(messages.len(), ENTITIES - lost.len());
    let sent_to: BTreeSet<EntityRef> = messages.iter().map(|(_, m)| m.entity).collect();
    assert!(
        flaky.iter().all(|e| sent_to.contains(e)),
        "retried entries got through"
    );
    assert!(lost.iter().all(|e| !sent_to.contains(e)));
    assert!(
        messages
            .iter()
            .all(|(body, m)| m.force && body.ends_with(", \"force\": true}"))
    );

    finish(&*store, &job.id, sent_to).await;
    let done = fetch_job(&*store, &job.id).await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.succeeded, (ENTITIES - lost.len()) as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_that_keeps_failing_stops_the_rest_and_lowers_the_total() {
    let (_db, store) = seeded().await;
    let q = moto_queue().await;
    let sqs: Arc<dyn Queue> = Arc::new(q.connect(Duration::from_secs(1)).await);
    let faults =
        SendFaults::default().fail_call(2, QueueError::Rejected("AccessDenied: injected".into()));
    let queue = Intercepted::new(sqs, faults);
    let Started {
        job,
        sent,
        failures,
        ..
    } = enqueue_collection(&*store, &*queue, false).await;
    assert_eq!(sent, 10, "only the first batch went out");
    assert_eq!(failures.len(), ENTITIES - 10);
    assert_eq!(queue.hooks.calls(), 2, "a permanent failure is not retried");
    assert!(failures[0].reason.contains("AccessDenied: injected"));
    assert!(
        failures[10]
            .reason
            .starts_with("not attempted after a failed batch call")
    );
    assert_eq!(job.total_entities, 10);
    assert_eq!(received(&q).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_one_sends_a_message_without_a_job() {
    let q = moto_queue().await;
    let queue = q.connect(Duration::from_secs(1)).await;
    enqueue_one(&queue, author(12)).await.unwrap();
    let messages = received(&q).await;
    assert_eq!(messages.len(), 1);
    let (body, m) = &messages[0];
    assert_eq!(
        body,
        r#"{"job_id": null, "entity_type": "author", "entity_id": 12}"#
    );
    assert_eq!(
        (m.job_id.clone(), m.entity, m.force),
        (None, author(12), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_the_owner_must_be_given() {
    let db = TestDb::migrated().await;
    add_user(&db, 3, "editor").await;
    let store = db.store();
    assert!(matches!(
        resolve_owner(&store, None).await,
        Err(JobsError::NoOwner)
    ));
    assert_eq!(resolve_owner(&store, Some(3)).await.unwrap(), 3);
}

// ---- the binary ------------------------------------------------------------------------

fn cli(db: &TestDb, queue: Option<&TestQueue>) -> Command {
    let mut cmd = command();
    cmd.env("PROFILE_WORKER_DATABASE__URL", &db.url)
        .env("PROFILE_WORKER_LOG__FORMAT", "pretty");
    if let Some(q) = queue {
        cmd.env("PROFILE_WORKER_QUEUE__URL", &q.url)
            .env("PROFILE_WORKER_QUEUE__ENDPOINT_URL", &q.endpoint)
            .env("PROFILE_WORKER_AWS__REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    }
    cmd
}

/// Runs a command that must succeed and print one JSON document.
fn run_json(cmd: Command, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(cmd, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).expect(&out)
}

fn run(mut cmd: Command, args: &[&str]) -> (i32, String, String) {
    run_to_end(cmd.args(args))
}

async fn new_job(store: &dyn Store, total: i32) -> Job {
    store
        .create_job(1, total, JobStatus::InProgress)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_commands_print_the_job_and_the_message() {
    let (db, store) = seeded().await;
    let q = moto_queue().await;

    let v = run_json(cli(&db, Some(&q)), &["enqueue", "--all", "--json"]);
    let job_id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "in_progress");
    assert_eq!(
        (v["sent"].as_u64(), v["existing"].as_bool()),
        (Some(40), Some(false))
    );
    assert_eq!(fetch_job(&*store, &job_id).await.total_entities, 40);

    let (code, out, err) = run(cli(&db, Some(&q)), &["enqueue", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "job {job_id} is already in_progress (0/40 done); nothing sent"
        )),
        "{out}"
    );

    let v = run_json(
        cli(&db, Some(&q)),
        &["enqueue", "--entity", "publisher:4", "--force", "--json"],
    );
    assert_eq!(v["sent"][0]["entity"], "publisher:4");
    assert!(
        v["sent"][0]["message_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(v["unsent"], serde_json::json!([]));
    assert_eq!(q.counts().await.0, 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_entity_takes_several_entities_repeated_or_comma_separated() {
    let db = TestDb::migrated().await;
    let q = moto_queue().await;
    let (code, out, err) = run(
        cli(&db, Some(&q)),
        &[
            "enqueue",
            "--entity",
            "author:3,publisher:4",
            "--entity",
            "binder:8",
            "--entity",
            "author:3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per distinct entity:\n{out}");
    for (line, entity) in lines.iter().zip(["author:3", "publisher:4", "binder:8"]) {
        assert!(
            line.starts_with(&format!("queued {entity} (message ")),
            "{line}"
        );
    }
    let mut got: Vec<Message> = received(&q).await.into_iter().map(|(_, m)| m).collect();
    got.sort_by_key(|m| m.entity);
    let want = [
        author(3),
        EntityRef::new(EntityType::Publisher, 4),
        EntityRef::new(EntityType::Binder, 8),
    ];
    let mut want: Vec<Message> = want
        .into_iter()
        .map(|entity| Message {
            job_id: None,
            entity,
            force: false,
        })
        .collect();
    want.sort_by_key(|m| m.entity);
    assert_eq!(got, want, "one ad-hoc message per entity");

    // A bad entity is a usage error before anything is sent.
    let (code, _, err) = run(
        cli(&db, Some(&q)),
        &["enqueue", "--entity", "author:1,dragon:2"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("dragon:2"), "{err}");
    assert_eq!(
        q.counts().await,
        (0, 3),
        "nothing sent beside the three drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_all_limit_sends_the_first_n_entities_in_collection_order() {
    let (db, store) = seeded().await;
    let q = moto_queue().await;
    let v = run_json(
        cli(&db, Some(&q)),
        &["enqueue", "--all", "--limit", "6", "--json"],
    );
    let job_id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["sent"].as_u64(), v["entities"].as_u64()),
        (Some(6), Some(6))
    );
    let job = fetch_job(&*store, &job_id).await;
    assert_eq!(job.total_entities, 6);

    let first: Vec<EntityRef> = store
        .collection_entities()
        .await
        .unwrap()
        .into_iter()
        .take(6)
        .map(|e| e.entity)
        .collect();
    let mut sent: Vec<EntityRef> = received(&q)
        .await
        .into_iter()
        .map(|(_, m)| {
            assert_eq!(m.job_id.as_deref(), Some(job_id.as_str()));
            m.entity
        })
        .collect();
    sent.sort();
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(sent, expected, "the first six of the deterministic order");
    assert!(
        first
            .windows(2)
            .all(|w| w[0].entity_type != w[1].entity_type || w[0].id < w[1].id),
        "collection order is by id within a type: {first:?}"
    );

    // The job completes with its six; a larger limit is then a new job.
    finish(&*store, &job_id, first).await;
    assert_eq!(
        fetch_job(&*store, &job_id).await.status,
        JobStatus::Completed
    );
    let v = run_json(
        cli(&db, Some(&q)),
        &["enqueue", "--all", "--limit", "1000", "--json"],
    );
    assert_eq!(
        v["sent"].as_u64(),
        Some(ENTITIES as u64),
        "a limit over the collection is all"
    );

    // --limit needs --all, and must be positive.
    for args in [
        &["enqueue", "--entity", "author:1", "--limit", "2"][..],
        &["enqueue", "--all", "--limit", "0"][..],
    ] {
        let (code, _, err) = run(cli(&db, Some(&q)), args);
        assert_eq!(code, 64, "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_all_without_an_admin_asks_for_an_owner() {
    let db = TestDb::migrated().await;
    let q = moto_queue().await;
    let (code, _, err) = run(cli(&db, Some(&q)), &["enqueue", "--all"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("pass --owner-id"), "{err}");
    assert_eq!(q.counts().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_demand_only_the_settings_they_need() {
    let db = TestDb::migrated().await;
    let (code, _, err) = run(command(), &["jobs"]);
    assert_eq!(code, 64);
    assert!(err.contains("database.url"), "{err}");
    // `enqueue --all` needs the queue too; `status` does not.
    let (code, _, err) = run(cli(&db, None), &["enqueue", "--all"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("queue.url") && !err.contains("database.url"),
        "{err}"
    );
    let (code, _, err) = run(cli(&db, None), &["status", "nope"]);
    assert_eq!(code, 3, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_exit_codes_tell_missing_from_already_ended() {
    let (db, store) = seeded().await;
    let job = new_job(&*store, 5).await;

    let (code, out, err) = run(cli(&db, None), &["cancel", &job.id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("job {} cancelled at 0/5", job.id)),
        "{out}"
    );
    assert_eq!(
        fetch_job(&*store, &job.id).await.status,
        JobStatus::Cancelled
    );

    let (code, _, err) = run(cli(&db, None), &["cancel", &job.id]);
    assert_eq!(code, 4);
    assert!(err.contains("already cancelled; nothing changed"), "{err}");

    let (code, _, err) = run(cli(&db, None), &["cancel", "no-such-job"]);
    assert_eq!(code, 3);
    assert!(err.contains("no job with id no-such-job"), "{err}");

    let (_, help, _) = run(command(), &["cancel", "--help"]);
    assert!(
        help.contains("3 no such job; 4 the job had already ended"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_counters_usage_and_errors() {
    let (db, store) = seeded().await;
    let job = new_job(&*store, 4).await;
    finish(&*store, &job.id, [author(1), author(2)]).await;
    store
        .record_outcome(OutcomeRecord {
            job_id: job.id.clone(),
            entity: author(3),
            attempt: 5,
            outcome: Outcome::Failed {
                message: "model refused".into(),
            },
        })
        .await
        .unwrap();
    add_usage(&db, &job.id, 1, 1_000_000, 100_000).await;
    add_usage(&db, &job.id, 2, 500_000, 50_000).await;

    let v = run_json(cli(&db, None), &["status", &job.id, "--json"]);
    assert_eq!(v["job_id"], job.id.as_str());
    assert_eq!(v["status"], "in_progress");
    assert_eq!(
        (
            v["total_entities"].as_i64(),
            v["succeeded"].as_i64(),
            v["failed"].as_i64()
        ),
        (Some(4), Some(2), Some(1))
    );
    assert_eq!(
        (v["processed"].as_i64(), v["remaining"].as_i64()),
        (Some(3), Some(1))
    );
    assert!(v["rate_per_minute"].as_f64().is_some_and(|r| r > 0.0));
    assert!(v["eta_seconds"].is_u64());
    assert_eq!(v["usage"]["profiles"], 2);
    assert_eq!(v["usage"]["calls"], 6);
    assert_eq!(v["usage"]["input_tokens"], 1_500_000);
    assert_eq!(v["usage"]["output_tokens"], 150_000);
    let cost = v["usage"]["estimated_cost_usd"].as_f64().unwrap();
    assert!((cost - 1.8).abs() < 1e-9, "{cost}");
    assert_eq!(v["error_log"], "author:3: model refused");

    let (code, out, _) = run(cli(&db, None), &["status", &job.id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("3/4 (75%)  succeeded 2  failed 1  remaining 1"),
        "{out}"
    );
    assert!(out.contains("est. $1.8000"), "{out}");

    let (code, _, err) = run(cli(&db, None), &["status", "missing"]);
    assert_eq!(code, 3);
    assert!(err.contains("no job with id missing"));
}

/// Starts `status --watch` with stdout piped (not a terminal) and streams its lines.
fn watch(db: &TestDb, job_id: &str, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = cli(db, None);
    cmd.args(["status", job_id, "--watch", "--interval", "0.1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn status --watch");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(HANG_GUARD)
        .expect("a line from status --watch")
}

/// The lines still to come, up to the end of the output.
fn remaining(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(line) = rx.recv_timeout(HANG_GUARD) {
        out.push(line);
    }
    out
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("status --watch did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_without_a_terminal_prints_a_line_per_change_until_completed() {
    let (db, store) = seeded().await;
    let job = new_job(&*store, 3).await;
    let (mut child, lines) = watch(&db, &job.id, &[]);

    let first = next_line(&lines);
    assert!(
        first.contains(&format!("{} in_progress 0/3 succeeded=0 failed=0", job.id)),
        "{first}"
    );
    for (n, id) in (1..=3).enumerate() {
        finish(&*store, &job.id, [author(id)]).await;
        if n < 2 {
            // Each change shows up as its own line before the next one happens.
            let line = next_line(&lines);
            assert!(line.contains(&format!("in_progress {}/3", n + 1)), "{line}");
        }
    }
    assert_eq!(wait_exit(&mut child), 0, "exit 0 once completed");
    let rest = remaining(&lines);
    assert!(
        rest[0].contains("completed 3/3 succeeded=3 failed=0"),
        "{rest:?}"
    );
    assert!(
        rest.iter()
            .any(|l| l == &format!("job {}  completed", job.id)),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("3/3 (100%)")), "{rest:?}");
    assert!(
        !rest
            .iter()
            .any(|l| l.contains('\r') || l.contains('\u{1b}')),
        "no bar codes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_json_ends_with_exit_6_when_the_job_is_cancelled() {
    let (db, store) = seeded().await;
    let job = new_job(&*store, 3).await;
    let (mut child, lines) = watch(&db, &job.id, &["--json"]);
    let first: serde_json::Value = serde_json::from_str(&next_line(&lines)).unwrap();
    assert_eq!(first["status"], "in_progress");
    finish(&*store, &job.id, [author(1)]).await;
    let second: serde_json::Value = serde_json::from_str(&next_line(&lines)).unwrap();
    assert_eq!(second["succeeded"], 1);
    store.cancel_job(&job.id).await.unwrap();
    assert_eq!(wait_exit(&mut child), 6);
    let last: Vec<serde_json::Value> = remaining(&lines)
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON lines only"))
        .collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lists_recent_jobs_newest_first() {
    let (db, store) = seeded().await;
    let (code, out, _) = run(cli(&db, None), &["jobs"]);
    assert_eq!((code, out.as_str()), (0, "no jobs\n"));

    let mut ids = Vec::new();
    for total in [3, 4, 5] {
        ids.push(new_job(&*store, total).await.id);
    }
    store.cancel_job(&ids[0]).await.unwrap();
    let (code, out, err) = run(cli(&db, None), &["jobs", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "two jobs and today's spend: {out}");
    assert!(lines[2].starts_with("today (UTC): est. $0.0000"), "{out}");
    assert!(
        lines[0].starts_with(&ids[2]) && lines[0].contains("0/5"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&ids[1]) && lines[1].contains("in_progress"),
        "{out}"
    );

    let (code, out, _) = run(cli(&db, None), &["jobs", "--json"]);
    assert_eq!(code, 0);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let listed: Vec<&str> = v.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&ids[2], &ids[1], &ids[0]]);
    assert_eq!(v[2]["status"], "cancelled");
}

// ---- rescue ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_fails_a_job_with_a_lost_message_but_not_one_with_a_recent_retry() {
    let (db, store) = seeded().await;
    // Both jobs finished one of two entities; the other message of `lost` never arrives, the
    // other entity of `retrying` failed transiently and is on its way back.
    let lost = new_job(&*store, 2).await;
    let retrying = new_job(&*store, 2).await;
    let live = new_job(&*store, 2).await;
    for job in [&lost, &retrying, &live] {
        finish(&*store, &job.id, [author(1)]).await;
    }
    store
        .record_retry(&retrying.id, author(2), 1, "throttled")
        .await
        .unwrap();
    // Their last progress was ten minutes ago (the live job's just now).
    db.exec(&format!(
        "UPDATE profile_generation_jobs SET updated_at = now() - interval '10 minutes' \
         WHERE id IN ('{}', '{}')",
        lost.id, retrying.id
    ))
    .await;
    let stale_after = Duration::from_secs(300);

    // A message in the queue might be the lost one: the rescue holds off.
    let busy = moto_queue().await;
    busy.send(r#"{"job_id": null, "entity_type": "author", "entity_id": 9}"#)
        .await;
    let busy_queue = busy.connect(Duration::from_secs(1)).await;
    let round = rescue_once(&*store, Some(&busy_queue), stale_after)
        .await
        .unwrap();
    assert!(
        matches!(round, RescueRound::HeldOff(d) if d.visible == 1),
        "{round:?}"
    );
    assert_eq!(
        fetch_job(&*store, &lost.id).await.status,
        JobStatus::InProgress
    );

    // With an empty queue the loop fails exactly the job that can no longer finish.
    let empty = moto_queue().await;
    let empty_queue: Arc<dyn Queue> = Arc::new(empty.connect(Duration::from_secs(1)).await);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rescue_loop(
        store.clone(),
        Some(empty_queue),
        RescueSettings {
            stale_after,
            interval: Duration::from_millis(100),
        },
        shutdown.clone(),
    ));
    eventually("the lost job is failed", HANG_GUARD, || {
        let store = store.clone();
        let id = lost.id.clone();
        async move { fetch_job(&*store, &id).await.status == JobStatus::Failed }
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .unwrap()
        .unwrap();

    let failed = fetch_job(&*store, &lost.id).await;
    assert_eq!((failed.succeeded, failed.total_entities), (1, 2));
    assert!(
        failed
            .error_log
            .unwrap()
            .starts_with("stuck: no progress for 300s and no retry pending"),
    );
    for job in [&retrying, &live] {
        assert_eq!(
            fetch_job(&*store, &job.id).await.status,
            JobStatus::InProgress,
            "job {} must be left alone",
            job.id
        );
    }
}
