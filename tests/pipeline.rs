//! The profile pipeline in process on real components (PostgreSQL, Redis, BedrockGenerator against
//! the fake Converse server): the worker cases (docs/compatibility.md, "Handling one message"), staleness, narratives and
//! AI connections, Bedrock retries and failed biographies, the API's strict story schema
//! (docs/compatibility.md, "JSON columns") and token accounting (docs/decisions.md).

mod support;

use profile_worker::consumer::Outcome;
use profile_worker::generate::CallKind;
use profile_worker::model::{Job, JobStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use support::bedrock::FakeReply;
use support::pipeline::{HAIKU, HAIKU_PRICE, Harness, body, message};

fn reason_of(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Retry { reason } | Outcome::Failed { reason } | Outcome::Poison { reason } => {
            reason
        }
        other => panic!("expected a failure outcome, got {other:?}"),
    }
}

fn calls(h: &Harness, kind: CallKind) -> usize {
    h.fake.requests_of(kind).len()
}

/// Inserts a profile row for `entity` generated `age` ago (an SQL interval; negative = future).
async fn seed_profile(h: &Harness, entity: &str, age: &str, extra: &str) {
    let (t, id) = entity.split_once(':').unwrap();
    let (columns, values) = match extra {
        "" => (String::new(), String::new()),
        e => {
            let (c, v) = e.split_once('=').unwrap();
            (format!(", {c}"), format!(", '{v}'"))
        }
    };
    h.db.exec(&format!(
        "INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, generated_at, model_version{columns}) \
         VALUES ('{t}', {id}, 'old bio', now() - interval '{age}', 'old-model'{values})"
    ))
    .await;
}

// ---- docs/compatibility.md, "Handling one message": the worker ----

#[tokio::test]
async fn w1_stale_entity_is_generated_and_progress_counts_once() {
    let h = Harness::new().await;
    let job = h.create_job(2, "in_progress").await;
    let msg = message(Some(&job), "author:1", false);

    assert_eq!(h.deliver(&msg).await, Outcome::Done);
    let p = h.profile("author:1").await.expect("profile written");
    assert_eq!(
        p.bio_summary.as_deref(),
        Some("A figure of Victorian literature and publishing.")
    );
    assert_eq!(p.model_version.as_deref(), Some(HAIKU));
    assert_eq!(p.personal_stories.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(calls(&h, CallKind::Discovery), 1);
    assert_eq!(calls(&h, CallKind::Biography), 1);
    assert!(h.fake.requests().iter().all(|r| r.model_id == HAIKU));
    let j = h.job(&job).await;
    assert_eq!(
        (j.succeeded, j.failed, j.status),
        (1, 0, JobStatus::InProgress)
    );

    // Redelivered: the profile is now current, and progress does not move again (docs/decisions.md, "Progress counted once per (job, entity)").
    let before = h.fake.requests().len();
    assert_eq!(h.deliver(&msg).await, Outcome::Skipped);
    assert_eq!(h.fake.requests().len(), before, "no Bedrock call");
    let j = h.job(&job).await;
    assert_eq!((j.succeeded, j.failed), (1, 0));
}

#[tokio::test]
async fn w2_permanent_generation_error_is_a_counted_failure_with_the_error_line() {
    let h = Harness::new().await;
    let job = h.create_job(1, "in_progress").await;
    h.fake.push(CallKind::Biography, [FakeReply::validation()]);

    let outcome = h.deliver_for(&job, "author:1").await;
    let reason = reason_of(&outcome).to_string();
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(reason.contains("ValidationException"), "{reason}");
    assert_eq!(
        calls(&h, CallKind::Biography),
        1,
        "a permanent error is not retried"
    );

    let j = h.job(&job).await;
    assert_eq!((j.succeeded, j.failed), (0, 1));
    assert_eq!(
        j.error_log.as_deref(),
        Some(format!("author:1: {reason}").as_str())
    );
    assert_eq!(
        j.status,
        JobStatus::Completed,
        "a failure counts toward the total"
    );
    assert!(h.profile("author:1").await.is_none(), "nothing written");
    assert_eq!(
        h.rows("SELECT calls, discarded FROM profile_generations")
            .await,
        [json!({"calls": 2, "discarded": true})],
        "only the spend is recorded"
    );
}

/// `entity`, given a profile `age` old, is in a one-entity job: its message is skipped without a
/// Bedrock call and the profile is kept. Returns the job afterwards.
async fn skipped_keeping_the_profile(h: &Harness, entity: &str, age: &str) -> Job {
    seed_profile(h, entity, age, "").await;
    let job = h.create_job(1, "in_progress").await;
    assert_eq!(h.deliver_for(&job, entity).await, Outcome::Skipped);
    assert!(h.fake.requests().is_empty());
    assert_eq!(
        h.profile(entity).await.unwrap().bio_summary.as_deref(),
        Some("old bio")
    );
    h.job(&job).await
}

#[tokio::test]
async fn w3_current_profile_is_skipped_without_calling_bedrock() {
    let h = Harness::new().await;
    // Books were last updated 10 days ago; the profile is 1 day old.
    let j = skipped_keeping_the_profile(&h, "author:1", "1 day").await;
    assert_eq!(
        (j.succeeded, j.failed, j.status),
        (1, 0, JobStatus::Completed)
    );
}

#[tokio::test]
async fn w4_no_qualifying_books_is_skipped_and_counted_a_success() {
    let h = Harness::new().await;
    // Author 30 has only EVALUATING and REMOVED books; its old profile is left alone.
    let j = skipped_keeping_the_profile(&h, "author:30", "400 days").await;
    assert_eq!((j.succeeded, j.failed), (1, 0));
}

#[tokio::test]
async fn w5_cancelled_job_is_skipped_without_bedrock_and_stays_cancelled() {
    let h = Harness::new().await;
    let job = h.create_job(1, "cancelled").await;

    assert_eq!(h.deliver_for(&job, "author:1").await, Outcome::Skipped);
    assert!(
        h.fake.requests().is_empty(),
        "no Bedrock call for a cancelled job"
    );
    assert!(h.profile("author:1").await.is_none());
    let j = h.job(&job).await;
    assert_eq!(j.status, JobStatus::Cancelled);
    assert_eq!((j.succeeded, j.failed), (1, 0), "still counted");
    assert_eq!(h.metrics.jobs_completed.get(), 0);
}

#[tokio::test]
async fn w6_in_progress_job_reaching_its_total_completes() {
    let h = Harness::new().await;
    let job = h.create_job(2, "in_progress").await;

    assert_eq!(h.deliver_for(&job, "author:1").await, Outcome::Done);
    assert!(h.job(&job).await.completed_at.is_none());
    assert_eq!(h.deliver_for(&job, "author:30").await, Outcome::Skipped);
    let j = h.job(&job).await;
    assert_eq!(j.status, JobStatus::Completed);
    assert!(j.completed_at.is_some());
    assert_eq!((j.succeeded, j.failed), (2, 0));
    assert_eq!(h.metrics.jobs_completed.get(), 1);
}

// ---- Staleness (batch messages; a message without a job always regenerates) ----

/// A batch message for `entity` in a job of its own, so the staleness rule applies.
async fn batch(h: &Harness, entity: &str) -> String {
    let job = h.create_job(1000, "in_progress").await;
    message(Some(&job), entity, false)
}

#[tokio::test]
async fn book_updated_after_generation_regenerates() {
    let h = Harness::new().await;
    assert_eq!(h.deliver(&batch(&h, "author:1").await).await, Outcome::Done);
    let first = h.profile("author:1").await.unwrap().generated_at.unwrap();
    assert_eq!(
        h.deliver(&batch(&h, "author:1").await).await,
        Outcome::Skipped
    );

    // Any column of a qualifying book counts (docs/compatibility.md, "Staleness rule").
    h.db.exec("UPDATE books SET edition = 'Second', updated_at = now() + interval '1 second' WHERE id = 1")
        .await;
    h.fake.push(
        CallKind::Biography,
        [FakeReply::text(
            json!({"biography": "Rewritten.", "personal_stories": []}).to_string(),
        )],
    );
    assert_eq!(h.deliver(&batch(&h, "author:1").await).await, Outcome::Done);
    let p = h.profile("author:1").await.unwrap();
    assert_eq!(p.bio_summary.as_deref(), Some("Rewritten."));
    assert!(p.generated_at.unwrap() > first);
}

#[tokio::test]
async fn a_book_leaving_the_entity_does_not_make_it_stale() {
    let h = Harness::new().await;
    assert_eq!(h.deliver(&batch(&h, "author:2").await).await, Outcome::Done);
    h.db.exec("INSERT INTO books (id, title, author_id, status) VALUES (40, 'Late', 2, 'ON_HAND')")
        .await;
    h.db.exec(
        "UPDATE books SET status = 'REMOVED', updated_at = now() + interval '1 hour' WHERE id = 40",
    )
    .await;
    assert_eq!(
        h.deliver(&batch(&h, "author:2").await).await,
        Outcome::Skipped
    );
}

#[tokio::test]
async fn force_regenerates_a_current_profile() {
    let h = Harness::new().await;
    seed_profile(&h, "author:1", "1 day", "").await;
    assert_eq!(
        h.deliver(&batch(&h, "author:1").await).await,
        Outcome::Skipped
    );
    assert!(h.fake.requests().is_empty());

    let job = h.create_job(1, "in_progress").await;
    assert_eq!(
        h.deliver(&message(Some(&job), "author:1", true)).await,
        Outcome::Done
    );
    assert_eq!(calls(&h, CallKind::Biography), 1);
    assert_eq!(
        h.profile("author:1")
            .await
            .unwrap()
            .model_version
            .as_deref(),
        Some(HAIKU)
    );
}

#[tokio::test]
async fn a_message_without_a_job_regenerates_a_current_profile() {
    let h = Harness::new().await;
    seed_profile(&h, "author:1", "1 day", "").await;
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);
    assert_eq!(calls(&h, CallKind::Biography), 1);
    let p = h.profile("author:1").await.unwrap();
    assert_ne!(p.bio_summary.as_deref(), Some("old bio"));

    // The guard still applies: no qualifying books, no generation.
    seed_profile(&h, "author:30", "400 days", "").await;
    assert_eq!(h.deliver(&body("author:30")).await, Outcome::Skipped);
    assert_eq!(calls(&h, CallKind::Biography), 1);
}

#[tokio::test]
async fn model_change_regenerates_only_when_enabled_and_the_model_differs() {
    let off = Harness::new().await;
    seed_profile(&off, "author:1", "1 day", "").await;
    assert_eq!(
        off.deliver(&batch(&off, "author:1").await).await,
        Outcome::Skipped
    );

    let on = Harness::with(|settings, _| settings.model_change = true).await;
    seed_profile(&on, "author:1", "1 day", "").await;
    assert_eq!(
        on.deliver(&batch(&on, "author:1").await).await,
        Outcome::Done
    );
    assert_eq!(
        on.profile("author:1")
            .await
            .unwrap()
            .model_version
            .as_deref(),
        Some(HAIKU)
    );
    let before = on.fake.requests().len();
    assert_eq!(
        on.deliver(&batch(&on, "author:1").await).await,
        Outcome::Skipped,
        "same model now"
    );
    assert_eq!(on.fake.requests().len(), before);
}

#[tokio::test]
async fn app_config_model_is_used_and_stored() {
    let h = Harness::new().await;
    h.db.exec("INSERT INTO app_config (key, value) VALUES ('model.entity_profiles', 'sonnet')")
        .await;
    assert_eq!(
        h.deliver(&batch(&h, "author:20").await).await,
        Outcome::Done
    );
    let sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
    assert!(h.fake.requests().iter().all(|r| r.model_id == sonnet));
    assert_eq!(
        h.profile("author:20")
            .await
            .unwrap()
            .model_version
            .as_deref(),
        Some(sonnet)
    );
}

// ---- docs/compatibility.md, "Narratives and relationship stories": narratives and AI connections ----

#[tokio::test]
async fn cross_era_bridge_gets_a_relationship_story_keyed_by_the_pair() {
    let h = Harness::new().await;
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);

    assert_eq!(calls(&h, CallKind::RelationshipStory), 1);
    assert_eq!(calls(&h, CallKind::Narrative), 0, "not a simple narrative");
    let request = &h.fake.requests_of(CallKind::RelationshipStory)[0];
    assert!(
        request.user.contains("Thomas Victorian"),
        "{}",
        request.user
    );
    assert!(
        request.user.contains("cross_era_bridge"),
        "{}",
        request.user
    );

    let p = h.profile("author:1").await.unwrap();
    let key = "author:1:author:2";
    let stories = p.relationship_stories.unwrap();
    assert_eq!(stories.as_object().unwrap().len(), 1);
    assert_eq!(stories[key]["summary"], "A long working relationship.");
    assert_eq!(stories[key]["narrative_style"], "prose-paragraph");
    // Publisher 2 (no era, two edges) has no trigger: only the bridge is narrated.
    assert_eq!(
        p.connection_narratives.unwrap(),
        json!({ key: "A long working relationship." })
    );
}

#[tokio::test]
async fn hub_figure_gets_simple_narratives_capped_at_three() {
    let h = Harness::new().await;
    assert_eq!(h.deliver(&body("publisher:3")).await, Outcome::Done);

    assert_eq!(
        calls(&h, CallKind::Narrative),
        3,
        "five triggered, three allowed"
    );
    assert_eq!(calls(&h, CallKind::RelationshipStory), 0);
    let p = h.profile("publisher:3").await.unwrap();
    let narratives = p.connection_narratives.unwrap();
    let narratives = narratives.as_object().unwrap();
    assert_eq!(narratives.len(), 3);
    for (key, text) in narratives {
        assert!(key.starts_with("publisher:3:author:1"), "{key}");
        assert_eq!(text, "Linked through the collection's books.");
    }
    assert_eq!(p.relationship_stories.unwrap(), json!({}));
}

#[tokio::test]
async fn failed_narratives_do_not_use_up_the_cap() {
    let h = Harness::new().await;
    h.fake.push(
        CallKind::Narrative,
        [FakeReply::validation(), FakeReply::validation()],
    );
    assert_eq!(h.deliver(&body("publisher:3")).await, Outcome::Done);

    assert_eq!(calls(&h, CallKind::Narrative), 5);
    let p = h.profile("publisher:3").await.unwrap();
    assert_eq!(
        p.connection_narratives.unwrap().as_object().unwrap().len(),
        3
    );
}

#[tokio::test]
async fn no_trigger_means_no_narrative_calls_and_empty_objects() {
    let h = Harness::new().await;
    assert_eq!(h.deliver(&body("author:20")).await, Outcome::Done);

    assert_eq!(calls(&h, CallKind::Narrative), 0);
    assert_eq!(calls(&h, CallKind::RelationshipStory), 0);
    let p = h.profile("author:20").await.unwrap();
    assert_eq!(p.connection_narratives.unwrap(), json!({}));
    assert_eq!(p.relationship_stories.unwrap(), json!({}));
}

#[tokio::test]
async fn regeneration_keeps_old_relationship_story_keys() {
    let h = Harness::new().await;
    let old_story = json!({"author:1:binder:9": {"summary": "Kept from before.", "details": [],
        "narrative_style": "bullet-facts"}});
    seed_profile(
        &h,
        "author:1",
        "20 days",
        &format!("relationship_stories={old_story}"),
    )
    .await;
    h.db.exec(
        "UPDATE entity_profiles SET connection_narratives = '{\"author:1:binder:9\": \"old\"}'",
    )
    .await;

    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);
    let p = h.profile("author:1").await.unwrap();
    let stories = p.relationship_stories.unwrap();
    assert_eq!(stories["author:1:binder:9"], old_story["author:1:binder:9"]);
    assert_eq!(
        stories["author:1:author:2"]["summary"],
        "A long working relationship."
    );
    assert_eq!(
        p.connection_narratives.unwrap(),
        json!({"author:1:author:2": "A long working relationship."}),
        "narratives are replaced wholesale"
    );
}

#[tokio::test]
async fn ai_connections_go_to_the_column_and_the_table() {
    let h = Harness::new().await;
    let discovered = json!({"connections": [
        {"target_type": "author", "target_id": 2, "relationship": "family",
         "sub_type": "marriage", "confidence": 0.9, "evidence": "They married in 1819."},
        {"target_type": "author", "target_id": 999, "relationship": "family"},
        {"target_type": "author", "target_id": 1, "relationship": "friendship"}
    ]});
    h.fake.push(
        CallKind::Discovery,
        [FakeReply::text(discovered.to_string())],
    );
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);

    let column = h.profile("author:1").await.unwrap().ai_connections.unwrap();
    let column = column.as_array().unwrap();
    assert_eq!(
        column.len(),
        1,
        "outside the collection and self links dropped"
    );
    assert_eq!(column[0]["relationship"], "family");
    assert_eq!(column[0]["source_id"], 1);
    assert_eq!(column[0]["target_id"], 2);
    let rows = h
        .rows("SELECT source_type, source_id, target_type, target_id, relationship, sub_type, confidence, evidence FROM ai_connections")
        .await;
    assert_eq!(
        rows,
        [
            json!({"source_type": "author", "source_id": 1, "target_type": "author",
            "target_id": 2, "relationship": "family", "sub_type": "MARRIAGE",
            "confidence": 0.9, "evidence": "They married in 1819."})
        ]
    );

    // Nothing discovered: the column is SQL NULL, not [].
    assert_eq!(h.deliver(&body("author:20")).await, Outcome::Done);
    let null = h
        .rows("SELECT ai_connections IS NULL AS is_null FROM entity_profiles WHERE entity_id = 20")
        .await;
    assert_eq!(null, [json!({"is_null": true})]);
    assert_eq!(h.rows("SELECT 1 FROM ai_connections").await.len(), 1);
}

#[tokio::test]
async fn failed_discovery_does_not_fail_the_profile() {
    let h = Harness::new().await;
    h.fake.push(CallKind::Discovery, [FakeReply::validation()]);
    assert_eq!(h.deliver(&body("author:20")).await, Outcome::Done);
    assert!(
        h.profile("author:20")
            .await
            .unwrap()
            .ai_connections
            .is_none()
    );
}

// ---- Bedrock retries and failed biographies (docs/decisions.md, "A failed biography is never a fresh profile") ----

#[tokio::test]
async fn throttled_twice_then_answered_gives_one_profile() {
    let h = Harness::new().await;
    h.fake.push(
        CallKind::Biography,
        [FakeReply::throttling(), FakeReply::throttling()],
    );
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);

    assert_eq!(calls(&h, CallKind::Biography), 3);
    assert_eq!(h.requests("biography", "throttled"), 2);
    assert_eq!(h.requests("biography", "ok"), 1);
    assert!(h.profile("author:1").await.is_some());
    let usage = h.rows("SELECT calls FROM profile_generations").await;
    // Discovery 1 + biography 3 attempts + relationship story 1.
    assert_eq!(usage, [json!({"calls": 5})]);
}

#[tokio::test]
async fn hanging_bedrock_times_out_and_is_retried() {
    let h = Harness::with(|_, generator| generator.call_timeout_seconds = 1).await;
    h.fake.push(CallKind::Biography, [FakeReply::Hang]);
    assert_eq!(h.deliver(&body("author:20")).await, Outcome::Done);

    assert_eq!(calls(&h, CallKind::Biography), 2);
    assert_eq!(h.requests("biography", "retryable"), 1);
    assert_eq!(h.requests("biography", "ok"), 1);
    assert!(h.profile("author:20").await.is_some());
}

#[tokio::test]
async fn failed_biography_leaves_the_profile_stale_until_the_last_attempt() {
    let h = Harness::new().await;
    seed_profile(&h, "author:1", "20 days", "").await;
    let old = h.profile("author:1").await.unwrap();
    let job = h.create_job(1, "in_progress").await;
    let msg = message(Some(&job), "author:1", false);

    // The model answers without text: a transient failure, the message comes back.
    h.fake.set_default(CallKind::Biography, FakeReply::NoText);
    let outcome = h.deliver_attempt(&msg, 1, false).await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert_eq!(calls(&h, CallKind::Biography), 1);
    assert_eq!(
        h.profile("author:1").await.unwrap(),
        old,
        "old row unchanged"
    );
    let j = h.job(&job).await;
    assert_eq!(
        (j.succeeded, j.failed, j.status),
        (0, 0, JobStatus::InProgress)
    );
    let items = h
        .rows("SELECT outcome, attempts FROM profile_generation_job_items")
        .await;
    assert_eq!(items, [json!({"outcome": "retry", "attempts": 1})]);

    // The last attempt fails the same way: a counted failure with its error line.
    let outcome = h.deliver_attempt(&msg, 2, true).await;
    let reason = reason_of(&outcome).to_string();
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let j = h.job(&job).await;
    assert_eq!(
        (j.succeeded, j.failed, j.status),
        (0, 1, JobStatus::Completed)
    );
    assert_eq!(j.error_log.unwrap(), format!("author:1: {reason}"));
    assert!(reason.contains("no text"), "{reason}");
    assert_eq!(h.profile("author:1").await.unwrap(), old);

    // Still stale: the next message regenerates it.
    h.fake.set_default(
        CallKind::Biography,
        support::bedrock::default_reply(Some(CallKind::Biography)),
    );
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);
    assert_ne!(
        h.profile("author:1").await.unwrap().bio_summary,
        old.bio_summary
    );
}

#[tokio::test]
async fn unusable_biography_is_transient_and_writes_nothing() {
    let h = Harness::new().await;
    h.fake.push(
        CallKind::Biography,
        [FakeReply::text(
            json!({"biography": "  ", "personal_stories": [{"text": "x",
                "significance": "notable", "tone": "dramatic"}]})
            .to_string(),
        )],
    );
    let outcome = h.deliver(&body("author:20")).await;
    assert_eq!(
        outcome,
        Outcome::Retry {
            reason: "biography generation returned no usable biography".into()
        }
    );
    assert!(h.profile("author:20").await.is_none());
    assert_eq!(
        h.rows("SELECT discarded, calls FROM profile_generations")
            .await,
        [json!({"discarded": true, "calls": 2})],
        "discovery and biography were paid for: recorded, flagged discarded"
    );

    assert_eq!(h.deliver(&body("author:20")).await, Outcome::Done);
}

// ---- docs/compatibility.md, "JSON columns": what the API reads back ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StrictSignificance {
    Revelation,
    Notable,
    Context,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StrictTone {
    Dramatic,
    Scandalous,
    Tragic,
    Intellectual,
    Triumphant,
}

/// The API's `BiographicalFact`, strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct StrictStory {
    text: String,
    #[serde(default)]
    year: Option<i32>,
    significance: StrictSignificance,
    tone: StrictTone,
    #[serde(default)]
    display_in: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StrictStyle {
    ProseParagraph,
    BulletFacts,
    TimelineEvents,
}

/// The API's `RelationshipNarrative`, strictly (our writer always sets the style).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct StrictRelationshipStory {
    summary: String,
    details: Vec<StrictStory>,
    narrative_style: StrictStyle,
}

/// Model output with everything a strict reader chokes on.
fn messy_stories() -> Value {
    json!([
        {"text": "Kept plain.", "year": 1850, "significance": "notable", "tone": "dramatic"},
        {"text": "Extra keys.", "year": null, "significance": "context", "tone": "tragic",
         "source": "wiki", "confidence": 0.3},
        {"text": "Missing tone.", "significance": "notable"},
        {"text": "Bad enum.", "significance": "huge", "tone": "dramatic"},
        {"text": "Year as text.", "year": "1851", "significance": "revelation", "tone": "scandalous"},
        {"text": "Year as words.", "year": "circa 1850", "significance": "notable", "tone": "intellectual"},
        {"text": "Float year.", "year": 1852.5, "significance": "notable", "tone": "intellectual"},
        {"text": "Shown.", "significance": "notable", "tone": "triumphant", "display_in": ["timeline", 3]},
        {"text": "Capitalised.", "significance": "Notable", "tone": "DRAMATIC"},
        {"text": 42, "significance": "notable", "tone": "dramatic"},
        {"significance": "notable", "tone": "dramatic"},
        "not an object",
        null
    ])
}

/// Collects what the pipeline logs while a test holds the returned subscriber as default.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || sink.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn texts(stories: &[StrictStory]) -> Vec<&str> {
    stories.iter().map(|s| s.text.as_str()).collect()
}

fn check_messy_survivors(stories: &[StrictStory]) {
    let kept = texts(stories);
    for must in [
        "Kept plain.",
        "Extra keys.",
        "Year as text.",
        "Year as words.",
        "Shown.",
    ] {
        assert!(kept.contains(&must), "{must} kept: {kept:?}");
    }
    for gone in ["Missing tone.", "Bad enum."] {
        assert!(!kept.contains(&gone), "{gone} dropped: {kept:?}");
    }
    let by_text = |t: &str| stories.iter().find(|s| s.text == t).unwrap();
    assert_eq!(by_text("Year as text.").year, Some(1851));
    assert_eq!(by_text("Year as words.").year, None);
    assert_eq!(
        by_text("Shown.").display_in.as_deref(),
        Some(&["timeline".to_string()][..])
    );
}

#[tokio::test]
async fn stored_stories_always_pass_the_api_strict_schema() {
    let h = Harness::new().await;
    h.fake.push(
        CallKind::Biography,
        [FakeReply::text(format!(
            "```json\n{}\n```",
            json!({"biography": "Messy.", "personal_stories": messy_stories(), "mood": "x"})
        ))],
    );
    h.fake.push(
        CallKind::RelationshipStory,
        [FakeReply::text(
            json!({"summary": "  Bridged eras.  ", "details": messy_stories(),
                   "tone": "warm", "extra": {"nested": true}})
            .to_string(),
        )],
    );
    let logs = LogCapture::default();
    let outcome = {
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        h.deliver(&body("author:1")).await
    };
    assert_eq!(outcome, Outcome::Done);
    // Of the 13 items, whatever was not kept was dropped, and the count is logged.
    let p = h.profile("author:1").await.unwrap();
    let kept = p
        .personal_stories
        .as_ref()
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let logged = logs.text();
    assert!(
        logged.contains(&format!("dropped={}", 13 - kept))
            && logged.contains("personal stories dropped"),
        "{logged}"
    );
    assert!(
        logged.contains("relationship story details dropped"),
        "{logged}"
    );

    let stories: Vec<StrictStory> =
        serde_json::from_value(p.personal_stories.unwrap()).expect("strict personal stories");
    check_messy_survivors(&stories);

    let by_key: std::collections::BTreeMap<String, StrictRelationshipStory> =
        serde_json::from_value(p.relationship_stories.unwrap()).expect("strict stories");
    let story = &by_key["author:1:author:2"];
    assert_eq!(story.summary, "Bridged eras.");
    assert!(matches!(story.narrative_style, StrictStyle::ProseParagraph));
    check_messy_survivors(&story.details);
    assert_eq!(
        p.connection_narratives.unwrap()["author:1:author:2"],
        "Bridged eras."
    );
}

#[tokio::test]
async fn story_without_summary_is_not_stored_and_does_not_use_the_cap() {
    let h = Harness::new().await;
    h.fake.push(
        CallKind::RelationshipStory,
        [FakeReply::text(
            json!({"details": [], "narrative_style": "bullet-facts"}).to_string(),
        )],
    );
    assert_eq!(h.deliver(&body("author:1")).await, Outcome::Done);
    let p = h.profile("author:1").await.unwrap();
    assert_eq!(p.relationship_stories.unwrap(), json!({}));
    assert_eq!(p.connection_narratives.unwrap(), json!({}));
}

// ---- docs/decisions.md, "Token and cost accounting": token and cost accounting ----

#[tokio::test]
async fn token_usage_and_cost_are_recorded_per_profile_and_in_metrics() {
    let h = Harness::new().await;
    let reply = |kind, input, output| {
        let FakeReply::Text { text, .. } = support::bedrock::default_reply(Some(kind)) else {
            unreachable!("defaults are text replies")
        };
        FakeReply::text_with_usage(text, input, output)
    };
    h.fake
        .set_default(CallKind::Discovery, reply(CallKind::Discovery, 1000, 200));
    h.fake
        .set_default(CallKind::Biography, reply(CallKind::Biography, 2000, 300));
    h.fake.set_default(
        CallKind::RelationshipStory,
        reply(CallKind::RelationshipStory, 1500, 250),
    );
    let job = h.create_job(1, "in_progress").await;
    assert_eq!(h.deliver_for(&job, "author:1").await, Outcome::Done);

    let expected_cost = (4500.0 * HAIKU_PRICE.0 + 750.0 * HAIKU_PRICE.1) / 1_000_000.0;
    let rows = h
        .rows("SELECT entity_type, entity_id, job_id, model_id, calls, input_tokens, output_tokens, latency_ms, cost_usd FROM profile_generations")
        .await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["entity_type"], "author");
    assert_eq!(row["entity_id"], 1);
    assert_eq!(row["job_id"], job.as_str());
    assert_eq!(row["model_id"], HAIKU);
    assert_eq!(row["calls"], 3);
    assert_eq!(row["input_tokens"], 4500);
    assert_eq!(row["output_tokens"], 750);
    assert!(row["latency_ms"].as_i64().unwrap() >= 0);
    let cost = row["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - expected_cost).abs() < 1e-12,
        "{cost} vs {expected_cost}"
    );

    let totals = {
        use profile_worker::store::JobStore;
        h.store.job_usage(&job).await.unwrap()
    };
    assert_eq!(
        (
            totals.profiles,
            totals.calls,
            totals.input_tokens,
            totals.output_tokens
        ),
        (1, 3, 4500, 750)
    );

    let scrape = h.metrics.render();
    let metrics = prometheus_parse::Scrape::parse(scrape.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        metrics
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: unexpected {other:?}"),
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from:\n{scrape}"))
    };
    let tokens = "profile_worker_generator_tokens_total";
    assert_eq!(
        value(tokens, &[("model", HAIKU), ("direction", "input")]),
        4500.0
    );
    assert_eq!(
        value(tokens, &[("model", HAIKU), ("direction", "output")]),
        750.0
    );
    let metric_cost = value(
        "profile_worker_generator_cost_usd_total",
        &[("model", HAIKU)],
    );
    assert!((metric_cost - expected_cost).abs() < 1e-12, "{metric_cost}");
}

// ---- docs/decisions.md, "Cost and calls per message" ----

/// Cost of `calls` default fake replies (100 input and 20 output tokens each) on haiku.
fn default_cost(calls: f64) -> f64 {
    calls * (100.0 * HAIKU_PRICE.0 + 20.0 * HAIKU_PRICE.1) / 1_000_000.0
}

#[tokio::test]
async fn a_retried_message_costs_every_attempt_in_the_job_sums() {
    use profile_worker::store::JobStore;
    let h = Harness::new().await;
    let job = h.create_job(1, "in_progress").await;
    let msg = message(Some(&job), "author:1", false);
    h.fake.push(CallKind::Biography, [FakeReply::NoText]);
    let outcome = h.deliver_attempt(&msg, 1, false).await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert_eq!(h.deliver_attempt(&msg, 2, true).await, Outcome::Done);

    // Attempt 1: discovery + biography (no text, 50 input tokens); attempt 2: discovery,
    // biography and author 2's relationship story.
    let totals = h.store.job_usage(&job).await.unwrap();
    assert_eq!(h.fake.requests().len(), 5);
    assert_eq!(
        (totals.profiles, totals.calls, totals.discarded_calls),
        (1, 5, 2)
    );
    assert_eq!(totals.input_tokens, 4 * 100 + 50);
    let no_text = 50.0 * HAIKU_PRICE.0 / 1_000_000.0;
    let expected = default_cost(4.0) + no_text;
    assert!((totals.cost_usd - expected).abs() < 1e-12, "{totals:?}");
    assert!(
        (totals.discarded_cost_usd - default_cost(1.0) - no_text).abs() < 1e-12,
        "{totals:?}"
    );
}

#[tokio::test]
async fn the_call_cap_counts_unusable_narratives_and_keeps_the_profile() {
    let h = Harness::with(|s, _| s.max_calls_per_message = 4).await;
    h.fake
        .set_default(CallKind::Narrative, FakeReply::validation());
    assert_eq!(h.deliver(&body("publisher:3")).await, Outcome::Done);

    // Discovery, biography and two of the hub's narratives; the third is never sent.
    assert_eq!(h.fake.requests().len(), 4);
    assert_eq!(calls(&h, CallKind::Narrative), 2);
    assert_eq!(h.requests("narrative", "stopped"), 1);
    let p = h.profile("publisher:3").await.unwrap();
    assert!(p.bio_summary.is_some());
    assert_eq!(p.connection_narratives.unwrap(), json!({}));
    let rows = h
        .rows("SELECT calls, discarded FROM profile_generations")
        .await;
    assert_eq!(rows, [json!({"calls": 4, "discarded": false})]);
}

#[tokio::test]
async fn the_call_cap_counts_retried_attempts() {
    let h = Harness::with(|s, _| s.max_calls_per_message = 3).await;
    h.fake
        .set_default(CallKind::Biography, FakeReply::throttling());
    let outcome = h.deliver(&body("author:20")).await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    let reason = reason_of(&outcome);
    assert!(reason.contains("call cap of 3"), "{reason}");
    assert_eq!(
        h.fake.requests().len(),
        3,
        "discovery + two biography attempts"
    );
    assert!(h.profile("author:20").await.is_none());
}

#[tokio::test]
async fn a_force_redelivery_of_a_done_entity_is_not_generated_again() {
    let h = Harness::new().await;
    let job = h.create_job(2, "in_progress").await;
    let msg = message(Some(&job), "author:20", true);
    assert_eq!(h.deliver(&msg).await, Outcome::Done);
    let sent = h.fake.requests().len();
    assert!(sent >= 2);

    assert_eq!(h.deliver_attempt(&msg, 2, false).await, Outcome::Skipped);
    assert_eq!(h.fake.requests().len(), sent, "no call for a done entity");
    let j = h.job(&job).await;
    assert_eq!((j.succeeded, j.failed), (1, 0));
    assert_eq!(h.rows("SELECT 1 FROM profile_generations").await.len(), 1);

    // A failed entity is generated again (a redrive from the dead-letter queue).
    let failed = message(Some(&job), "author:1", true);
    h.fake
        .set_default(CallKind::Biography, FakeReply::validation());
    let outcome = h.deliver_attempt(&failed, 1, true).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    h.fake.set_default(
        CallKind::Biography,
        support::bedrock::default_reply(Some(CallKind::Biography)),
    );
    assert_eq!(h.deliver(&failed).await, Outcome::Done);
    assert!(h.profile("author:1").await.is_some());
}

#[tokio::test]
async fn a_job_cancelled_during_generation_gets_no_further_calls() {
    let h = Harness::new().await;
    let job = h.create_job(1, "in_progress").await;
    // Discovery and biography take long enough for the once-a-second job check to see the
    // cancellation before author 1's relationship story would be sent.
    h.fake.set_latency(std::time::Duration::from_millis(2500));
    let cancel = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        h.db.exec(&format!(
            "UPDATE profile_generation_jobs SET status = 'cancelled' WHERE id = '{job}'"
        ))
        .await;
    };
    let msg = message(Some(&job), "author:1", false);
    let (outcome, ()) = tokio::join!(h.deliver(&msg), cancel);
    assert_eq!(outcome, Outcome::Skipped);
    assert_eq!(h.fake.requests().len(), 2, "discovery and biography only");
    assert_eq!(calls(&h, CallKind::RelationshipStory), 0);
    assert!(h.profile("author:1").await.is_none());
    assert_eq!(
        h.rows("SELECT calls, discarded FROM profile_generations")
            .await,
        [json!({"calls": 2, "discarded": true})]
    );
    assert_eq!(h.job(&job).await.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn concurrent_narratives_keep_the_originals_winners_and_calls() {
    let h = Harness::new().await;
    h.fake.reply_when_prompt_contains(
        CallKind::Narrative,
        "connected to Hub Author B (",
        FakeReply::validation(),
    );
    assert_eq!(h.deliver(&body("publisher:3")).await, Outcome::Done);

    // Sequentially: A, B (fails), C, D — three winners after four calls; E is never asked.
    let asked: Vec<String> = h
        .fake
        .requests_of(CallKind::Narrative)
        .iter()
        .map(|r| {
            ["A", "B", "C", "D", "E"]
                .into_iter()
                .find(|l| r.user.contains(&format!("connected to Hub Author {l} (")))
                .expect("a hub author")
                .to_string()
        })
        .collect();
    let mut sorted = asked.clone();
    sorted.sort();
    assert_eq!(sorted, ["A", "B", "C", "D"], "{asked:?}");
    assert_eq!(asked[3], "D", "D only after the first wave: {asked:?}");
    let p = h.profile("publisher:3").await.unwrap();
    let mut keys: Vec<String> = p
        .connection_narratives
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "publisher:3:author:10",
            "publisher:3:author:12",
            "publisher:3:author:13"
        ]
    );
}

/// Generates every entity of the 264-entity fixture in one job, prompt caching on or off, with
/// the fake counting tokens from the prompts by Bedrock's caching rules; returns the fake's bill,
/// the job's usage as `status` shows it and the number of profiles.
async fn generate_fixture(
    caching: bool,
) -> (
    support::bedrock::Billed,
    profile_worker::store::UsageTotals,
    usize,
) {
    use profile_worker::store::{JobStore, ProfileStore};
    let h = Harness::on_fixture(|_, g| {
        if !caching {
            g.prompt_cache.clear();
        }
    })
    .await;
    let config = profile_worker::config::defaults().generator;
    let price = config.prices[HAIKU];
    let min = config.prompt_cache[HAIKU].min_tokens;
    h.fake.bill_by_prompt(
        &[(HAIKU, u64::from(min))],
        &[(
            HAIKU,
            [
                price.input,
                price.output,
                price.cache_read.unwrap(),
                price.cache_write.unwrap(),
            ],
        )],
    );
    let entities = h.store.collection_entities().await.unwrap();
    assert_eq!(entities.len(), 264);
    let job = h.create_job(entities.len() as i32, "in_progress").await;
    for e in &entities {
        let outcome = h
            .deliver(&message(Some(&job), &e.entity.to_string(), true))
            .await;
        assert_eq!(outcome, Outcome::Done, "{}", e.entity);
    }
    assert_eq!(h.job(&job).await.status, JobStatus::Completed);
    let usage = h.store.job_usage(&job).await.unwrap();
    (h.fake.billed(), usage, entities.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_caching_halves_the_billed_input_and_status_matches_the_bill() {
    let (bill_off, usage_off, profiles) = generate_fixture(false).await;
    let (bill_on, usage_on, _) = generate_fixture(true).await;
    let price = profile_worker::config::defaults().generator.prices[HAIKU];
    // Input tokens billed, cache reads and writes weighed by their price against the input's.
    let billed_input = |u: &profile_worker::store::UsageTotals| {
        (u.input_tokens as f64
            + u.cache_read_tokens as f64 * price.cache_read.unwrap() / price.input
            + u.cache_write_tokens as f64 * price.cache_write.unwrap() / price.input)
            / profiles as f64
    };
    assert_eq!(
        (usage_off.cache_read_tokens, usage_off.cache_write_tokens),
        (0, 0)
    );
    assert!(usage_on.cache_read_tokens > 0 && usage_on.cache_write_tokens > 0);
    let (off, on) = (billed_input(&usage_off), billed_input(&usage_on));
    assert!(
        on <= 0.5 * off,
        "billed input tokens per profile: {on:.0} with caching, {off:.0} without"
    );
    // The job's cost as `status` shows it is what the fake billed, to the cent; so are the tokens.
    for (bill, usage) in [(bill_off, &usage_off), (bill_on, &usage_on)] {
        assert_eq!(
            (
                bill.input_tokens,
                bill.output_tokens,
                bill.cache_read_tokens,
                bill.cache_write_tokens
            ),
            (
                usage.input_tokens as u64,
                usage.output_tokens as u64,
                usage.cache_read_tokens as u64,
                usage.cache_write_tokens as u64
            )
        );
        assert_eq!(
            format!("{:.2}", bill.cost_usd),
            format!("{:.2}", usage.cost_usd),
            "{bill:?} vs {usage:?}"
        );
        assert!((bill.cost_usd - usage.cost_usd).abs() < 1e-9);
    }
    eprintln!(
        "billed input tokens per profile: {off:.0} without caching, {on:.0} with ({:.0} %); \
         cost ${:.4} vs ${:.4}",
        100.0 * on / off,
        usage_off.cost_usd,
        usage_on.cost_usd
    );
}

#[tokio::test]
async fn the_daily_cost_cap_holds_messages_until_it_is_raised() {
    use profile_worker::outcome::Dependency;
    use profile_worker::store::JobStore;
    let h = Harness::new().await;
    let job = h.create_job(2, "in_progress").await;
    // Below one profile's cost: the first message is generated (nothing spent yet), then the cap
    // is reached.
    h.db.exec("INSERT INTO app_config (key, value) VALUES ('budget.daily_cost_usd', '0.0001')")
        .await;
    assert_eq!(h.deliver_for(&job, "author:20").await, Outcome::Done);
    let spent = h.store.spend_today().await.unwrap().cost_usd;
    assert!((spent - default_cost(2.0)).abs() < 1e-12, "{spent}");
    let sent = h.fake.requests().len();

    let msg = message(Some(&job), "author:1", false);
    for (attempt, last) in [(1, false), (2, true)] {
        let outcome = h.deliver_attempt(&msg, attempt, last).await;
        assert!(
            matches!(
                outcome,
                Outcome::Hold {
                    dependency: Dependency::DailyCostCap,
                    ..
                }
            ),
            "held, even on the last attempt: {outcome:?}"
        );
    }
    assert_eq!(h.fake.requests().len(), sent, "no call at the cap");
    let j = h.job(&job).await;
    assert_eq!((j.succeeded, j.failed), (1, 0), "nothing counted failed");
    assert_eq!(h.store.spend_today().await.unwrap().cost_usd, spent);
    assert_eq!(h.metrics.daily_cap_usd.get(), 0.0001);
    assert_eq!(h.metrics.spend_today_usd.get(), spent);

    h.db.exec("UPDATE app_config SET value = '1' WHERE key = 'budget.daily_cost_usd'")
        .await;
    assert_eq!(h.deliver(&msg).await, Outcome::Done, "a raised cap resumes");
    let j = h.job(&job).await;
    assert_eq!(
        (j.succeeded, j.failed, j.status),
        (2, 0, JobStatus::Completed)
    );
}

// ---- The message contract at the handler ----

#[tokio::test]
async fn invalid_bodies_are_poison_and_unknown_keys_are_ignored() {
    let h = Harness::new().await;
    for bad in [
        "not json",
        "[]",
        r#"{"entity_type": "author"}"#,
        r#"{"entity_type": "dragon", "entity_id": 1}"#,
        r#"{"entity_type": "author", "entity_id": 0}"#,
    ] {
        let outcome = h.deliver(bad).await;
        assert!(
            matches!(outcome, Outcome::Poison { .. }),
            "{bad}: {outcome:?}"
        );
    }
    assert!(h.fake.requests().is_empty());
    let with_owner = r#"{"job_id": null, "entity_type": "author", "entity_id": 20, "owner_id": 1}"#;
    assert_eq!(h.deliver(with_owner).await, Outcome::Done);
}
