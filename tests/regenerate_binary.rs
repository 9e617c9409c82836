//! The Python API's "regenerate" button against the real binary: the API sends a message without
//! a job and, a few milliseconds later, deletes the entity's profile row to show a loading state.
//! The worker must regenerate even though it may read the still-fresh row before the delete
//! (docs/decisions.md, "A person's regenerate request always regenerates"); a batch message for a
//! fresh profile is still skipped without calling the model.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::SimpleAsyncConnection;
use profile_worker::generate::CallKind;
use profile_worker::model::{EntityRef, JobStatus};
use profile_worker::store::{JobStore, ProfileStore};
use support::bedrock::FakeBedrock;
use support::daemon::Stack;
use support::db::collection_authors;
use support::pipeline::{message, rows};
use support::sqs::eventually;

const HANG_GUARD: Duration = Duration::from_secs(180);

/// `count` authors of the fixture that have qualifying books, each given a profile generated a
/// day after its newest book change (fresh by the staleness rule).
async fn authors_with_fresh_profiles(stack: &Stack, count: usize) -> Vec<EntityRef> {
    let authors = collection_authors(&stack.db.store(), count).await;
    let ids: Vec<String> = authors.iter().map(|e| e.id.to_string()).collect();
    stack
        .db
        .exec(&format!(
            "INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, generated_at, model_version) \
             SELECT 'author', id, 'kept', now() + interval '1 day', 'old' FROM authors \
             WHERE id IN ({})",
            ids.join(", ")
        ))
        .await;
    authors
}

/// The database's clock, which `generated_at` is written with.
async fn db_now(stack: &Stack) -> DateTime<Utc> {
    let now = rows(&stack.db, "SELECT clock_timestamp() AS now").await;
    now[0]["now"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_send_then_delete_sequence_leaves_every_entity_with_a_new_profile() {
    let stack = Stack::with_fixture().await;
    let authors = authors_with_fresh_profiles(&stack, 20).await;
    let fake = FakeBedrock::start().await;
    // Real Bedrock answers in seconds; a little latency keeps the fake from finishing a profile
    // before the API's delete, which would be a different race (the API's own).
    fake.set_latency(Duration::from_millis(100));
    let daemon = stack.start_bedrock(&fake, &[]);
    daemon.wait_ready(HANG_GUARD).await;

    // The API's endpoint, once per entity: send, then delete the row 30 ms later.
    let mut api = stack.db.conn().await;
    let sent_at = db_now(&stack).await;
    for e in &authors {
        stack
            .queue
            .send(&message(None, &e.to_string(), false))
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        api.batch_execute(&format!(
            "DELETE FROM entity_profiles WHERE entity_type = 'author' AND entity_id = {}",
            e.id
        ))
        .await
        .expect("the API's delete");
    }

    let store = stack.db.store();
    eventually("every entity has a profile again", HANG_GUARD, || {
        let store = &store;
        let authors = &authors;
        async move {
            for e in authors {
                if store.profile(*e).await.unwrap().is_none() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for e in &authors {
        let p = store.profile(*e).await.unwrap().unwrap();
        let generated_at = p.generated_at.expect("generated_at set");
        assert!(
            generated_at > sent_at,
            "{e}: generated at {generated_at}, sent at {sent_at}"
        );
        assert_ne!(p.bio_summary.as_deref(), Some("kept"), "{e}");
    }
    assert_eq!(fake.requests_of(CallKind::Biography).len(), 20);
    assert!(
        !daemon.logs().contains("profile is current"),
        "no regenerate request was skipped:\n{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_message_for_a_fresh_profile_is_still_skipped() {
    let stack = Stack::with_fixture().await;
    let authors = authors_with_fresh_profiles(&stack, 1).await;
    stack
        .db
        .exec("INSERT INTO users (id, cognito_sub, role) VALUES (1, 'admin', 'admin')")
        .await;
    let store = stack.db.store();
    let job = store.create_job(1, 1, JobStatus::InProgress).await.unwrap();
    let fake = FakeBedrock::start().await;
    let _daemon = stack.start_bedrock(&fake, &[]);
    stack
        .queue
        .send(&message(Some(&job.id), &authors[0].to_string(), false))
        .await;

    eventually("the job completes", HANG_GUARD, || {
        let store = &store;
        let id = job.id.clone();
        async move { store.job(&id).await.unwrap().unwrap().status == JobStatus::Completed }
    })
    .await;
    let done = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!((done.succeeded, done.failed), (1, 0));
    assert!(
        fake.requests().is_empty(),
        "no Bedrock call for a fresh profile"
    );
    let kept = store.profile(authors[0]).await.unwrap().unwrap();
    assert_eq!(kept.bio_summary.as_deref(), Some("kept"));
}
