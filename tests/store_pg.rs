//! `PgStore` behaviour the memory adapter cannot show: transaction rollback, error
//! classification, pool settings.

mod support;

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use profile_worker::config::DatabaseConfig;
use profile_worker::model::{AiConnectionRow, EntityRef, EntityType, JobStatus};
use profile_worker::store::{
    GenerationUsage, JobStore, Outcome, OutcomeRecord, PgStore, ProfileStore, ProfileUnit,
    ProfileWrite, Store, StoreError,
};
use serde_json::json;
use support::db::TestDb;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let row: Count = diesel::sql_query(sql)
        .get_result(&mut db.conn().await)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    row.n
}

fn author(id: i32) -> EntityRef {
    EntityRef::new(EntityType::Author, id)
}

fn unit(job_id: &str, model_version: String) -> ProfileUnit {
    let mut stories = serde_json::Map::new();
    stories.insert("author:1:author:2".into(), json!({"summary": "new"}));
    ProfileUnit {
        entity: author(1),
        profile: ProfileWrite {
            bio_summary: Some("Bio.".into()),
            personal_stories: json!([]),
            connection_narratives: json!({}),
            relationship_stories: stories,
            ai_connections: vec![json!({"relationship": "family"})],
            model_version,
        },
        ai_connections: vec![
            AiConnectionRow {
                source_type: "author".into(),
                source_id: 1,
                target_type: "author".into(),
                target_id: 2,
                relationship: "family".into(),
                sub_type: Some("MARRIAGE".into()),
                confidence: 0.99,
                evidence: Some("new evidence".into()),
            },
            AiConnectionRow {
                source_type: "author".into(),
                source_id: 1,
                target_type: "author".into(),
                target_id: 3,
                relationship: "scandal".into(),
                sub_type: None,
                confidence: 0.5,
                evidence: None,
            },
        ],
        usage: GenerationUsage {
            model_id: "m".into(),
            calls: 2,
            input_tokens: 10,
            output_tokens: 5,
            latency_ms: 100,
            cost_usd: 0.001,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        },
        job_id: Some(job_id.into()),
        attempt: 1,
    }
}

/// Seeds a user, a job of one entity, one AI connection the unit would raise, and a profile the
/// unit would overwrite.
async fn seeded() -> (TestDb, PgStore, String) {
    let db = TestDb::migrated().await;
    db.exec(
        "INSERT INTO users (id, cognito_sub) VALUES (1, 'admin');
         INSERT INTO ai_connections (source_type, source_id, target_type, target_id, relationship,
             sub_type, confidence, evidence)
         VALUES ('author', 1, 'author', 2, 'family', 'SIBLING', 0.4, 'old evidence');
         INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, relationship_stories,
             generated_at, model_version)
         VALUES ('author', 1, 'Old bio.', '{\"author:1:author:9\": {\"summary\": \"old\"}}',
             '2026-01-01T00:00:00Z', 'old-model');",
    )
    .await;
    let store = db.store();
    let job = store.create_job(1, 1, JobStatus::InProgress).await.unwrap();
    (db, store, job.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_ai_upsert_leaves_no_trace() {
    let (db, store, job_id) = seeded().await;
    let ai_before = store.graph_rows(true, 5000).await.unwrap().ai_connections;
    let profile_before = store.profile(author(1)).await.unwrap();

    // model_version is varchar(100): the profile upsert, which runs after the AI-connection
    // upsert inside the unit, fails on data the test controls.
    let err = store
        .commit_profile(unit(&job_id, "x".repeat(101)))
        .await
        .expect_err("value too long");
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert!(!err.is_transient());

    assert_eq!(
        store.graph_rows(true, 5000).await.unwrap().ai_connections,
        ai_before
    );
    assert_eq!(store.profile(author(1)).await.unwrap(), profile_before);
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM profile_generations").await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM profile_generation_job_items"
        )
        .await,
        0
    );
    let job = store.job(&job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.succeeded, job.failed, job.status),
        (0, 0, JobStatus::InProgress)
    );

    // The same unit with valid data then commits all of it.
    let recorded = store
        .commit_profile(unit(&job_id, "m".into()))
        .await
        .unwrap();
    assert!(recorded.counted && recorded.completed);
    let ai_after = store.graph_rows(true, 5000).await.unwrap().ai_connections;
    assert_eq!(ai_after.len(), 2);
    assert_eq!(ai_after[0].confidence, 0.99);
    assert_eq!(ai_after[0].evidence.as_deref(), Some("new evidence"));
    let profile = store.profile(author(1)).await.unwrap().unwrap();
    assert_eq!(
        profile.relationship_stories,
        Some(
            json!({"author:1:author:9": {"summary": "old"}, "author:1:author:2": {"summary": "new"}})
        )
    );
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM profile_generations").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_json_columns_stay_json() {
    let (db, store, job_id) = seeded().await;
    store
        .commit_profile(unit(&job_id, "m".into()))
        .await
        .unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM entity_profiles WHERE json_typeof(relationship_stories) = 'object' \
             AND json_typeof(ai_connections) = 'array' AND json_typeof(personal_stories) = 'array'"
        )
        .await,
        1
    );
}

/// Regression: a relationship story with a NUL (`\u0000`) was stored (a `json` column keeps it)
/// and every later regeneration of the entity failed at the `::jsonb` merge. Replies now pass
/// `generate::hygiene`, which removes it, so the second commit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_model_reply_never_blocks_a_later_regeneration() {
    use profile_worker::generate::hygiene::parse_relationship_story;

    let reply = r#"{"summary": "Met in Rome.\u0000", "details": [{"text": "Wrote\u0000 letters\u0007.",
        "significance": "notable", "tone": "dramatic"}]}"#;
    let story = parse_relationship_story(reply, &Default::default()).expect("a usable story");
    let with_story = |job_id: &str, story: serde_json::Value| {
        let mut u = unit(job_id, "m".into());
        u.profile
            .relationship_stories
            .insert("author:1:author:2".into(), story);
        u
    };

    // What an unsanitised reply did: stored once, then every regeneration refused.
    let (db, store, job_id) = seeded().await;
    db.exec("DELETE FROM entity_profiles").await;
    let raw: serde_json::Value = serde_json::from_str(reply).unwrap();
    store
        .commit_profile(with_story(&job_id, raw.clone()))
        .await
        .expect("a json column stores \\u0000");
    let err = store
        .commit_profile(with_story(&job_id, raw))
        .await
        .expect_err("the jsonb merge refuses \\u0000");
    assert!(!err.is_transient(), "{err}");

    // Through hygiene: both commits succeed and nothing stored holds a NUL.
    let (db, store, job_id) = seeded().await;
    let clean = serde_json::to_value(&story).unwrap();
    for _ in 0..2 {
        store
            .commit_profile(with_story(&job_id, clean.clone()))
            .await
            .expect("a regeneration after a NUL reply commits");
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) AS n FROM entity_profiles \
             WHERE relationship_stories::text LIKE '%Met in Rome.%' \
             AND relationship_stories::text NOT LIKE '%\\u0000%' \
             AND (relationship_stories::jsonb) IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_applied_and_transient() {
    let (db, _, job_id) = seeded().await;
    let store = PgStore::connect(&DatabaseConfig {
        statement_timeout_ms: 200,
        schema: "profile_worker".into(),
        ..db.config()
    })
    .unwrap();
    // Another session holds the job row; the counter UPDATE must wait for it and time out.
    let mut blocker = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM profile_generation_jobs WHERE id = '{job_id}' FOR UPDATE;"
        ))
        .await
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        store.record_outcome(OutcomeRecord {
            job_id: job_id.clone(),
            entity: author(1),
            attempt: 1,
            outcome: Outcome::Succeeded,
        }),
    )
    .await
    .expect("statement timeout fires")
    .expect_err("blocked by the row lock");
    assert!(err.is_transient(), "{err:?}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    // Rolled back: nothing was counted, and a retry now succeeds.
    let recorded = store
        .record_outcome(OutcomeRecord {
            job_id: job_id.clone(),
            entity: author(1),
            attempt: 2,
            outcome: Outcome::Succeeded,
        })
        .await
        .unwrap();
    assert!(recorded.counted && recorded.completed);
}

#[tokio::test]
async fn an_unreachable_database_is_transient() {
    let store = PgStore::connect(&DatabaseConfig {
        pool_size: 2,
        statement_timeout_ms: 1000,
        ..support::db::config_for("postgres://postgres@127.0.0.1:1/nothing")
    })
    .expect("the pool builds without connecting");
    let err = store.ping().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_status_reports_size_and_use() {
    let db = TestDb::migrated().await;
    let store = db.store();
    store.ping().await.unwrap();
    let status = store.pool_status().expect("PgStore has a pool");
    assert_eq!(status.max, 12);
    assert_eq!((status.idle, status.in_use), (1, 0));
}

/// Rows of `rollup` that differ from the same sums computed from the `profile_generations` rows
/// matching `filter`, grouped by `key`, in either direction.
async fn rollup_mismatches(db: &TestDb, rollup: &str, key: &str, filter: &str) -> i64 {
    let sums = format!(
        "SELECT {key}, count(*)::int8, sum(calls)::int8, sum(input_tokens)::int8, \
         sum(output_tokens)::int8, round(sum(cost_usd)::numeric, 9) \
         FROM profile_generations WHERE {filter} GROUP BY 1"
    );
    let kept = format!("SELECT *, round(cost_usd::numeric, 9) FROM {rollup}",);
    let kept = kept.replace(
        "*, round",
        &format!(
            "{key_col}, profiles, calls, input_tokens, output_tokens, round",
            key_col = rollup_key(rollup)
        ),
    );
    let sql = format!(
        "SELECT count(*)::int8 AS n FROM (({sums} EXCEPT {kept}) UNION ALL ({kept} EXCEPT {sums})) d"
    );
    let mut conn = db.conn().await;
    let row: Count = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    row.n
}

fn rollup_key(rollup: &str) -> &'static str {
    if rollup == "job_usage" {
        "job_id"
    } else {
        "day"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_rollups_equal_the_sums_of_their_generations() {
    let db = TestDb::migrated().await;
    // Eight sessions insert at once, into three jobs and ad-hoc (no job).
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let url = db.url.clone();
        writers.spawn(async move {
            let mut conn = diesel_async::AsyncPgConnection::establish(&url)
                .await
                .unwrap();
            profile_worker::store::connection::use_schema(&mut conn, support::db::SCHEMA)
                .await
                .unwrap();
            for i in 0..25usize {
                let job = ["'a'", "'b'", "'c'", "NULL"][(w + i) % 4];
                conn.batch_execute(&format!(
                    "INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, \
                     calls, input_tokens, output_tokens, latency_ms, cost_usd) \
                     VALUES ('author', {i}, {job}, 'm', {calls}, {input}, {output}, 10, {cost})",
                    calls = 1 + i % 5,
                    input = 1000 * (w + 1) + i,
                    output = 100 + i,
                    cost = 0.001 * (w * 25 + i) as f64,
                ))
                .await
                .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let jobs = rollup_mismatches(&db, "job_usage", "job_id", "job_id IS NOT NULL").await;
    assert_eq!(jobs, 0, "job_usage differs from the sums per job");
    let day = "(created_at AT TIME ZONE 'UTC')::date";
    let days = rollup_mismatches(&db, "daily_usage", day, "true").await;
    assert_eq!(days, 0, "daily_usage differs from the sums per UTC day");
    let store = db.store();
    assert_eq!(store.job_usage("a").await.unwrap().profiles, 50);
    assert_eq!(store.job_usage("none").await.unwrap(), Default::default());
}
