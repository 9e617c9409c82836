//! The real binary end to end: the golden collection in a fresh PostgreSQL database, a job of 30
//! entities enqueued through moto the way boto3 sends them, the fake Bedrock answering Converse.
//! The job completes with exact counters, profiles, AI connections and usage rows are written,
//! a poison message lands in the dead-letter queue with its reason, and SIGTERM exits 0.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use profile_worker::generate::CallKind;
use profile_worker::model::{CollectionEntity, EntityType, JobStatus};
use profile_worker::pipeline::message::Message;
use profile_worker::store::{JobStore, ProfileStore};
use serde_json::json;
use support::bedrock::{FakeBedrock, FakeReply};
use support::daemon::{Stack, http};
use support::pipeline::{HAIKU, HAIKU_PRICE, rows, with_owner_id};
use support::sqs::eventually;

const HANG_GUARD: Duration = Duration::from_secs(180);

fn attribute(
    attrs: Option<&std::collections::HashMap<String, MessageAttributeValue>>,
    name: &str,
) -> String {
    attrs
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_else(|| panic!("dead letter has no {name} attribute"))
        .to_string()
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        })
        .unwrap_or_else(|| panic!("{name} {labels:?} not exported"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_entities_through_moto_and_the_real_binary_complete_the_job() {
    let stack = Stack::with_fixture().await;
    let store = stack.db.store();
    let fake = FakeBedrock::start().await;

    // Every profile discovers the same two personal ties (a self link is dropped).
    let discovered = json!({"connections": [
        {"target_type": "author", "target_id": 1, "relationship": "family", "confidence": 0.8,
         "evidence": "Cousins."},
        {"target_type": "author", "target_id": 2, "relationship": "friendship", "confidence": 0.6,
         "evidence": "Corresponded."}
    ]});
    fake.set_default(CallKind::Discovery, FakeReply::text(discovered.to_string()));

    // 30 entities of the collection: authors, publishers and binders.
    let universe = store.collection_entities().await.unwrap();
    let of = |t: EntityType, n: usize| -> Vec<CollectionEntity> {
        universe
            .iter()
            .filter(|e| e.entity.entity_type == t)
            .take(n)
            .cloned()
            .collect()
    };
    let mut entities = of(EntityType::Author, 25);
    let ad_hoc = entities.pop().expect("enough authors").entity;
    entities.extend(of(EntityType::Publisher, 4));
    entities.extend(of(EntityType::Binder, 2));
    assert_eq!(entities.len(), 30);
    // One of them already has a current profile (skipped, still a success) …
    let fresh = entities[3].entity;
    // … and one has no qualifying book left (skipped, still a success).
    let unowned = entities[5].entity;
    stack
        .db
        .exec(&format!(
            "INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, generated_at, model_version) \
             VALUES ('{}', {}, 'kept', now() + interval '1 day', 'old');
             UPDATE books SET status = 'SOLD' WHERE author_id = {};
             INSERT INTO users (id, cognito_sub, role) VALUES (1, 'admin', 'admin');",
            fresh.entity_type, fresh.id, unowned.id
        ))
        .await;
    let job = store
        .create_job(1, 30, JobStatus::InProgress)
        .await
        .expect("job created");

    // Every third body from an older producer, with owner_id.
    for (i, e) in entities.iter().enumerate() {
        let body = Message {
            job_id: Some(job.id.clone()),
            entity: e.entity,
            force: false,
        }
        .body();
        if i % 3 == 0 {
            stack.queue.send(&with_owner_id(&body, 1)).await;
        } else {
            stack.queue.send(&body).await;
        }
    }
    let body = Message {
        job_id: None,
        entity: ad_hoc,
        force: false,
    };
    stack.queue.send(&body.body()).await;
    let poison = r#"{"job_id": null, "entity_type": "author", "entity_id": "seven"}"#;
    stack.queue.send(poison).await;

    let daemon = stack.start_bedrock(&fake, &[("PROFILE_WORKER_GENERATOR__RETRY_BASE_MS", "1")]);

    eventually("the job completes", HANG_GUARD, || {
        let store = &store;
        let id = job.id.clone();
        async move { store.job(&id).await.unwrap().unwrap().status == JobStatus::Completed }
    })
    .await;
    eventually("the queue is drained", HANG_GUARD, || {
        let q = &stack.queue;
        async move { q.counts().await == (0, 0) }
    })
    .await;
    eventually("the ad-hoc profile is written", HANG_GUARD, || {
        let store = &store;
        async move { store.profile(ad_hoc).await.unwrap().is_some() }
    })
    .await;

    let done = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (done.succeeded, done.failed),
        (30, 0),
        "log:\n{}",
        daemon.logs()
    );
    assert!(done.completed_at.is_some());
    assert_eq!(done.error_log, None);

    // Profiles: 28 generated for the job + the ad-hoc one; the current one untouched; none for
    // the entity without books.
    let generated: Vec<_> = entities
        .iter()
        .map(|e| e.entity)
        .filter(|e| *e != fresh && *e != unowned)
        .chain([ad_hoc])
        .collect();
    assert_eq!(generated.len(), 29);
    for e in &generated {
        let p = store
            .profile(*e)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{e} profiled"));
        assert_eq!(p.model_version.as_deref(), Some(HAIKU), "{e}");
        assert!(p.bio_summary.is_some(), "{e}");
        assert!(
            p.ai_connections.is_some(),
            "{e}: discovered connections stored"
        );
    }
    assert_eq!(
        store
            .profile(fresh)
            .await
            .unwrap()
            .unwrap()
            .bio_summary
            .as_deref(),
        Some("kept")
    );
    assert!(store.profile(unowned).await.unwrap().is_none());

    // AI connections: each generated entity is now linked to author 1 (author 1 itself to 2).
    let ai = rows(
        &stack.db,
        "SELECT source_type || ':' || source_id AS a, target_type || ':' || target_id AS b \
         FROM ai_connections WHERE relationship IN ('family', 'friendship')",
    )
    .await;
    let pairs: BTreeSet<(String, String)> = ai
        .iter()
        .map(|r| {
            (
                r["a"].as_str().unwrap().into(),
                r["b"].as_str().unwrap().into(),
            )
        })
        .collect();
    for e in &generated {
        let me = e.to_string();
        let other = if me == "author:1" {
            "author:2"
        } else {
            "author:1"
        };
        let (a, b) = if me.as_str() < other {
            (me.clone(), other.to_string())
        } else {
            (other.to_string(), me.clone())
        };
        assert!(pairs.contains(&(a, b)), "{me} linked to {other}");
    }

    // Usage: one row per generated profile, summing to every call the fake answered.
    let usage = rows(
        &stack.db,
        "SELECT count(*) AS profiles, sum(calls) AS calls, sum(input_tokens) AS input, \
         sum(output_tokens) AS output, count(job_id) AS with_job FROM profile_generations",
    )
    .await;
    let answered = fake.requests().len() as i64;
    assert_eq!(
        usage[0],
        json!({"profiles": 29, "calls": answered, "input": answered * 100,
               "output": answered * 20, "with_job": 28})
    );

    // Metrics on the side server.
    let (status, _, body) = http("GET", &daemon.url("/metrics")).await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    let processed = "profile_worker_messages_processed_total";
    assert_eq!(metric(&scrape, processed, &[("outcome", "done")]), 29.0);
    assert_eq!(metric(&scrape, processed, &[("outcome", "skipped")]), 2.0);
    assert_eq!(metric(&scrape, processed, &[("outcome", "poison")]), 1.0);
    assert_eq!(
        metric(&scrape, "profile_worker_jobs_completed_total", &[]),
        1.0
    );
    let tokens = "profile_worker_generator_tokens_total";
    assert_eq!(
        metric(&scrape, tokens, &[("model", HAIKU), ("direction", "input")]),
        (answered * 100) as f64
    );
    assert_eq!(
        metric(
            &scrape,
            tokens,
            &[("model", HAIKU), ("direction", "output")]
        ),
        (answered * 20) as f64
    );
    let cost = metric(
        &scrape,
        "profile_worker_generator_cost_usd_total",
        &[("model", HAIKU)],
    );
    let expected = answered as f64 * (100.0 * HAIKU_PRICE.0 + 20.0 * HAIKU_PRICE.1) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");

    // The poison message, whole, with why.
    let dead = stack.queue.drain_dead_letters().await;
    assert_eq!(dead.len(), 1, "only the poison message is dead-lettered");
    assert_eq!(dead[0].body(), Some(poison));
    assert_eq!(attribute(dead[0].message_attributes(), "outcome"), "poison");
    let reason = attribute(dead[0].message_attributes(), "reason");
    assert!(reason.contains("entity_id"), "{reason}");

    daemon.terminate_off_runtime(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_comes_back_through_sqs_and_permanent_one_is_counted_and_dead_lettered() {
    let stack = Stack::new().await;
    stack.db.exec(support::pipeline::COLLECTION).await;
    let store = stack.db.store();
    let fake = FakeBedrock::start().await;
    let job = store.create_job(1, 2, JobStatus::InProgress).await.unwrap();
    let daemon = stack.start_bedrock(
        &fake,
        &[
            ("PROFILE_WORKER_GENERATOR__RETRY_BASE_MS", "1"),
            ("PROFILE_WORKER_CONSUMER__RETRY_BASE_SECONDS", "1"),
        ],
    );
    let job_state = |id: String| {
        let store = &store;
        async move { store.job(&id).await.unwrap().unwrap() }
    };

    // A biography without text: the message comes back through SQS and then succeeds.
    fake.push(CallKind::Biography, [FakeReply::NoText]);
    stack
        .queue
        .send(&support::pipeline::message(
            Some(&job.id),
            "author:20",
            false,
        ))
        .await;
    eventually("the retried message succeeds", HANG_GUARD, || {
        let state = job_state(job.id.clone());
        async move { state.await.succeeded == 1 }
    })
    .await;
    assert_eq!(fake.requests_of(CallKind::Biography).len(), 2);
    assert!(
        store
            .profile("author:20".parse().unwrap())
            .await
            .unwrap()
            .is_some()
    );

    // A ValidationException: one attempt, a counted failure, and a copy in the DLQ.
    fake.push(CallKind::Biography, [FakeReply::validation()]);
    let failing = support::pipeline::message(Some(&job.id), "author:1", false);
    stack.queue.send(&failing).await;
    eventually("the job completes", HANG_GUARD, || {
        let state = job_state(job.id.clone());
        async move { state.await.status == JobStatus::Completed }
    })
    .await;
    let done = job_state(job.id.clone()).await;
    assert_eq!((done.succeeded, done.failed), (1, 1));
    let line = done.error_log.unwrap();
    assert!(
        line.starts_with("author:1: generator failed: biography call to ")
            && line.contains("ValidationException")
            && !line.contains('\n'),
        "{line}"
    );
    assert_eq!(fake.requests_of(CallKind::Biography).len(), 3, "no retry");
    assert!(
        store
            .profile("author:1".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    eventually("the failed message is dead-lettered", HANG_GUARD, || {
        let q = &stack.queue;
        async move { q.counts().await == (0, 0) }
    })
    .await;
    let dead = stack.queue.drain_dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(failing.as_str()));
    assert_eq!(attribute(dead[0].message_attributes(), "outcome"), "failed");
    assert!(line.ends_with(&attribute(dead[0].message_attributes(), "reason")));

    let (_, _, body) = http("GET", &daemon.url("/metrics")).await;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    let processed = "profile_worker_messages_processed_total";
    for (outcome, n) in [("retry", 1.0), ("done", 1.0), ("failed", 1.0)] {
        assert_eq!(
            metric(&scrape, processed, &[("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }

    daemon.terminate_off_runtime(Duration::from_secs(60)).await;
}
