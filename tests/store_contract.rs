//! One contract suite for every `Store` adapter: each case below runs against `PgStore` (a fresh
//! PostgreSQL database) and `MemoryStore`, both loaded with the same sample collection.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use profile_worker::model::{
    AiConnectionRow, AuthorRow, EntityRef, EntityType, Job, JobStatus, OrgRow,
};
use profile_worker::store::{
    BookRecord, CancelOutcome, GenerationUsage, MemoryStore, Outcome, OutcomeRecord, ProfileUnit,
    ProfileWrite, Recorded, Store,
};
use serde_json::json;
use support::db::TestDb;

// ---- the sample collection -------------------------------------------------------------

const T1: &str = "2026-01-10T10:00:00Z";
const T2: &str = "2026-01-20T10:00:00Z";
const T3: &str = "2026-02-01T10:00:00Z";

/// (id, name, birth, death)
const AUTHORS: &[(i32, &str, Option<i32>, Option<i32>)] = &[
    (1, "Charles Dickens", Some(1812), Some(1870)),
    (2, "George Eliot", Some(1819), Some(1880)),
    (3, "Nobody Owned", None, None),
];
/// (id, name, founded, closed)
const PUBLISHERS: &[(i32, &str, Option<i32>)] = &[
    (1, "Chapman & Hall", Some(1830)),
    (2, "Smith, Elder & Co.", Some(1816)),
];
const BINDERS: &[(i32, &str, Option<i32>, Option<i32>)] = &[
    (1, "Riviere", Some(1829), Some(1939)),
    (2, "Zaehnsdorf", None, None),
];
/// (id, title, author, publisher, binder, status, year_start, updated_at)
type SampleBook = (
    i32,
    &'static str,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    &'static str,
    Option<i32>,
    &'static str,
);
const BOOKS: &[SampleBook] = &[
    (
        10,
        "Bleak House",
        Some(1),
        Some(1),
        Some(1),
        "ON_HAND",
        Some(1853),
        T1,
    ),
    (
        11,
        "Oliver Twist",
        Some(1),
        Some(2),
        None,
        "IN_TRANSIT",
        Some(1838),
        T2,
    ),
    (
        12,
        "Sketches by Boz",
        Some(1),
        Some(1),
        None,
        "ON_HAND",
        None,
        T1,
    ),
    (
        13,
        "Middlemarch",
        Some(2),
        Some(2),
        Some(1),
        "ON_HAND",
        Some(1871),
        T1,
    ),
    (
        14,
        "Sold Copy",
        Some(3),
        Some(1),
        Some(2),
        "SOLD",
        Some(1850),
        T3,
    ),
    (
        15,
        "Under Evaluation",
        Some(1),
        None,
        Some(2),
        "EVALUATING",
        Some(1800),
        T3,
    ),
];
/// (source, target, relationship[/sub_type], confidence, evidence), as [`ai`] reads them.
const AI: &[(&str, &str, &str, f64, &str)] = &[
    (
        "author:1",
        "author:2",
        "friendship/MENTOR",
        0.6,
        "old evidence",
    ),
    (
        "author:1",
        "publisher:1",
        "collaboration",
        0.9,
        "published him",
    ),
];
/// (id, role): user 1 owns the sample jobs; the lowest admin is 4.
const USERS: &[(i32, &str)] = &[(1, "editor"), (2, "viewer"), (4, "admin"), (7, "admin")];
/// (id, status, total, created seconds ago, updated seconds ago)
const JOBS: &[(&str, &str, i32, i64, i64)] = &[
    ("stuck-old", "in_progress", 5, 10_800, 7_200),
    ("stuck-retry", "in_progress", 5, 10_800, 7_200),
    ("pending-old", "pending", 5, 10_800, 7_200),
    ("fresh", "in_progress", 5, 10_800, 10),
];

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().expect("timestamp")
}

fn sql_int(v: Option<i32>) -> String {
    v.map_or("NULL".into(), |v| v.to_string())
}

fn sql_str(v: Option<&str>) -> String {
    v.map_or("NULL".into(), |v| format!("'{}'", v.replace('\'', "''")))
}

fn sample_sql() -> String {
    let mut sql = String::new();
    for (id, role) in USERS {
        sql += &format!(
            "INSERT INTO users (id, cognito_sub, role) VALUES ({id}, 'sub-{id}', '{role}');\n"
        );
    }
    for (id, name, birth, death) in AUTHORS {
        sql += &format!(
            "INSERT INTO authors (id, name, birth_year, death_year) VALUES ({id}, {}, {}, {});\n",
            sql_str(Some(name)),
            sql_int(*birth),
            sql_int(*death)
        );
    }
    for (id, name, founded) in PUBLISHERS {
        sql += &format!(
            "INSERT INTO publishers (id, name, founded_year) VALUES ({id}, {}, {});\n",
            sql_str(Some(name)),
            sql_int(*founded)
        );
    }
    for (id, name, founded, closed) in BINDERS {
        sql += &format!(
            "INSERT INTO binders (id, name, founded_year, closed_year) VALUES ({id}, {}, {}, {});\n",
            sql_str(Some(name)),
            sql_int(*founded),
            sql_int(*closed)
        );
    }
    for (id, title, a, p, b, status, year, updated) in BOOKS {
        sql += &format!(
            "INSERT INTO books (id, title, author_id, publisher_id, binder_id, status, year_start, \
             updated_at) VALUES ({id}, {}, {}, {}, {}, '{status}', {}, '{updated}');\n",
            sql_str(Some(title)),
            sql_int(*a),
            sql_int(*p),
            sql_int(*b),
            sql_int(*year)
        );
    }
    for (source, target, rel, conf, ev) in AI {
        let row = ai(source, target, rel, *conf, ev);
        sql += &format!(
            "INSERT INTO ai_connections (source_type, source_id, target_type, target_id, \
             relationship, sub_type, confidence, evidence) \
             VALUES ('{}', {}, '{}', {}, '{}', {}, {conf}, {});\n",
            row.source_type,
            row.source_id,
            row.target_type,
            row.target_id,
            row.relationship,
            sql_str(row.sub_type.as_deref()),
            sql_str(Some(ev))
        );
    }
    for (id, status, total, created, updated) in JOBS {
        sql += &format!(
            "INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities, created_at, \
             updated_at) VALUES ('{id}', '{status}', 1, {total}, now() - interval '{created} seconds', \
             now() - interval '{updated} seconds');\n"
        );
    }
    sql += "INSERT INTO app_config (key, value) VALUES ('model.entity_profiles', 'sonnet');\n";
    sql
}

async fn pg_sample() -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::migrated().await;
    db.exec(&sample_sql()).await;
    let store = Arc::new(db.store());
    (db, store)
}

fn memory_sample() -> Arc<dyn Store> {
    let store = MemoryStore::new();
    for (id, role) in USERS {
        store.add_user_with_role(*id, role);
    }
    for (id, name, birth, death) in AUTHORS {
        store.add_author(AuthorRow {
            id: *id,
            name: (*name).into(),
            birth_year: *birth,
            death_year: *death,
            tier: None,
            image_url: None,
        });
    }
    for (id, name, founded) in PUBLISHERS {
        store.add_publisher(OrgRow {
            id: *id,
            name: (*name).into(),
            tier: None,
            image_url: None,
            founded_year: *founded,
            closed_year: None,
        });
    }
    for (id, name, founded, closed) in BINDERS {
        store.add_binder(OrgRow {
            id: *id,
            name: (*name).into(),
            tier: None,
            image_url: None,
            founded_year: *founded,
            closed_year: *closed,
        });
    }
    for (id, title, a, p, b, status, year, updated) in BOOKS {
        store.add_book(BookRecord {
            id: *id,
            title: (*title).into(),
            author_id: *a,
            publisher_id: *p,
            binder_id: *b,
            status: (*status).into(),
            year_start: *year,
            updated_at: ts(updated),
        });
    }
    for (source, target, rel, conf, ev) in AI {
        store.add_ai_connection(ai(source, target, rel, *conf, ev));
    }
    let now = Utc::now();
    for (id, status, total, created, updated) in JOBS {
        store.add_job(Job {
            id: (*id).into(),
            status: status.parse().unwrap(),
            owner_id: 1,
            total_entities: *total,
            succeeded: 0,
            failed: 0,
            error_log: None,
            completed_at: None,
            created_at: now - chrono::Duration::seconds(*created),
            updated_at: now - chrono::Duration::seconds(*updated),
        });
    }
    store.set_app_config("model.entity_profiles", "sonnet");
    Arc::new(store)
}

/// Runs each named case against both adapters.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_db, store) = super::pg_sample().await;
                    super::$case(store).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::memory_sample()).await;
                }
            )*
        }
    };
}

contract!(
    entities_by_type_and_id,
    qualifying_books_in_prompt_order,
    latest_book_update_ignores_non_qualifying_books,
    collection_entities_in_type_then_id_order,
    graph_rows_are_ordered_limited_and_referenced,
    model_setting_comes_from_app_config,
    job_create_read_cancel,
    default_owner_is_the_lowest_admin,
    same_outcome_twice_counts_once,
    unknown_job_records_nothing,
    cancelled_job_stays_cancelled,
    completed_job_is_never_reopened,
    retries_do_not_count_and_never_undo_a_terminal_outcome,
    commit_profile_writes_profile_usage_and_progress,
    relationship_stories_keep_old_keys,
    ai_connection_upserts_follow_the_original,
    reduce_job_total_can_complete_a_job,
    stuck_jobs_are_failed_once_unless_a_retry_is_pending,
    concurrent_duplicate_outcomes_count_exactly_once,
);

// ---- helpers --------------------------------------------------------------------------

fn author(id: i32) -> EntityRef {
    EntityRef::new(EntityType::Author, id)
}

/// An AI connection row from `"type:id"` ends and `"relationship"` or `"relationship/SUB_TYPE"`
/// (compact, so that a case's rows read one a line).
fn ai(source: &str, target: &str, rel: &str, conf: f64, ev: &str) -> AiConnectionRow {
    let end = |e: &str| {
        let (kind, id) = e.split_once(':').expect("type:id");
        (kind.to_string(), id.parse::<i32>().expect("numeric id"))
    };
    let ((source_type, source_id), (target_type, target_id)) = (end(source), end(target));
    let (relationship, sub_type) = match rel.split_once('/') {
        Some((rel, sub)) => (rel.to_string(), Some(sub.to_string())),
        None => (rel.to_string(), None),
    };
    AiConnectionRow {
        source_type,
        source_id,
        target_type,
        target_id,
        relationship,
        sub_type,
        confidence: conf,
        evidence: Some(ev.into()),
    }
}

fn unit(entity: EntityRef, job_id: Option<&str>) -> ProfileUnit {
    ProfileUnit {
        entity,
        profile: ProfileWrite {
            bio_summary: Some(format!("Biography of {entity}.")),
            personal_stories: json!([{"text": "A story", "year": 1850, "significance": "high", "tone": "warm"}]),
            connection_narratives: json!({format!("{entity}:publisher:1"): "Published together."}),
            relationship_stories: serde_json::Map::new(),
            ai_connections: Vec::new(),
            model_version: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        },
        ai_connections: Vec::new(),
        usage: GenerationUsage {
            model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
            calls: 3,
            input_tokens: 1200,
            output_tokens: 300,
            latency_ms: 4500,
            cost_usd: 0.00216,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        },
        job_id: job_id.map(Into::into),
        attempt: 1,
    }
}

fn outcome(job_id: &str, entity: EntityRef, failure: Option<&str>) -> OutcomeRecord {
    OutcomeRecord {
        job_id: job_id.into(),
        entity,
        attempt: 1,
        outcome: match failure {
            None => Outcome::Succeeded,
            Some(m) => Outcome::Failed { message: m.into() },
        },
    }
}

/// Records an outcome ([`outcome`]) and returns what it counted.
async fn record(
    store: &dyn Store,
    job_id: &str,
    entity: EntityRef,
    failure: Option<&str>,
) -> Recorded {
    store
        .record_outcome(outcome(job_id, entity, failure))
        .await
        .expect("outcome recorded")
}

async fn new_job(store: &dyn Store, total: i32) -> Job {
    store
        .create_job(1, total, JobStatus::InProgress)
        .await
        .expect("job created")
}

async fn job(store: &dyn Store, id: &str) -> Job {
    store.job(id).await.unwrap().expect("job exists")
}

const COUNTED: Recorded = Recorded {
    counted: true,
    completed: false,
};
const COMPLETED: Recorded = Recorded {
    counted: true,
    completed: true,
};
const NOTHING: Recorded = Recorded {
    counted: false,
    completed: false,
};

// ---- reads ----------------------------------------------------------------------------

async fn entities_by_type_and_id(store: Arc<dyn Store>) {
    let dickens = store.entity(author(1)).await.unwrap().unwrap();
    assert_eq!(dickens.name, "Charles Dickens");
    assert_eq!(
        (dickens.birth_year, dickens.death_year),
        (Some(1812), Some(1870))
    );
    let publisher = store
        .entity(EntityRef::new(EntityType::Publisher, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(publisher.name, "Chapman & Hall");
    assert_eq!(
        (publisher.founded_year, publisher.closed_year),
        (Some(1830), None)
    );
    let binder = store
        .entity(EntityRef::new(EntityType::Binder, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (binder.founded_year, binder.closed_year),
        (Some(1829), Some(1939))
    );
    assert!(store.entity(author(99)).await.unwrap().is_none());
}

async fn qualifying_books_in_prompt_order(store: Arc<dyn Store>) {
    let ids =
        |books: Vec<profile_worker::model::Book>| books.iter().map(|b| b.id).collect::<Vec<_>>();
    // year_start ascending, NULL last; SOLD and EVALUATING excluded.
    assert_eq!(
        ids(store.qualifying_books(author(1)).await.unwrap()),
        [11, 10, 12]
    );
    assert_eq!(
        ids(store
            .qualifying_books(EntityRef::new(EntityType::Binder, 1))
            .await
            .unwrap()),
        [10, 13]
    );
    assert!(store.qualifying_books(author(3)).await.unwrap().is_empty());
    assert!(
        store
            .qualifying_books(EntityRef::new(EntityType::Binder, 2))
            .await
            .unwrap()
            .is_empty()
    );
    let books = store.qualifying_books(author(2)).await.unwrap();
    assert_eq!(books[0].title, "Middlemarch");
    assert_eq!(books[0].year_start, Some(1871));
}

async fn latest_book_update_ignores_non_qualifying_books(store: Arc<dyn Store>) {
    assert_eq!(
        store.latest_book_update(author(1)).await.unwrap(),
        Some(ts(T2))
    );
    assert_eq!(
        store
            .latest_book_update(EntityRef::new(EntityType::Publisher, 1))
            .await
            .unwrap(),
        Some(ts(T1))
    );
    assert_eq!(store.latest_book_update(author(3)).await.unwrap(), None);
}

async fn collection_entities_in_type_then_id_order(store: Arc<dyn Store>) {
    let listed: Vec<String> = store
        .collection_entities()
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e.entity, e.name))
        .collect();
    assert_eq!(
        listed,
        [
            "author:1 Charles Dickens",
            "author:2 George Eliot",
            "publisher:1 Chapman & Hall",
            "publisher:2 Smith, Elder & Co.",
            "binder:1 Riviere",
        ]
    );
}

async fn graph_rows_are_ordered_limited_and_referenced(store: Arc<dyn Store>) {
    let rows = store.graph_rows(true, 5000).await.unwrap();
    let ids = |v: Vec<i32>| v;
    assert_eq!(
        ids(rows.books.iter().map(|b| b.id).collect()),
        [10, 11, 12, 13]
    );
    assert_eq!(rows.books[0].binder_id, Some(1));
    assert_eq!(ids(rows.authors.iter().map(|a| a.id).collect()), [1, 2]);
    assert_eq!(rows.authors[0].birth_year, Some(1812));
    assert_eq!(ids(rows.publishers.iter().map(|p| p.id).collect()), [1, 2]);
    assert_eq!(ids(rows.binders.iter().map(|b| b.id).collect()), [1]);
    assert_eq!(rows.binders[0].closed_year, Some(1939));
    assert_eq!(rows.ai_connections.len(), 2);
    assert_eq!(rows.ai_connections[0].relationship, "friendship");
    assert_eq!(rows.ai_connections[1].relationship, "collaboration");

    let limited = store.graph_rows(true, 2).await.unwrap();
    assert_eq!(ids(limited.books.iter().map(|b| b.id).collect()), [10, 11]);
    assert_eq!(ids(limited.authors.iter().map(|a| a.id).collect()), [1]);
    assert_eq!(
        ids(limited.publishers.iter().map(|p| p.id).collect()),
        [1, 2]
    );

    let no_binders = store.graph_rows(false, 5000).await.unwrap();
    assert!(no_binders.binders.is_empty());
    assert_eq!(no_binders.books.len(), 4);
}

async fn model_setting_comes_from_app_config(store: Arc<dyn Store>) {
    assert_eq!(
        store.model_setting().await.unwrap().as_deref(),
        Some("sonnet")
    );
}

// ---- jobs -----------------------------------------------------------------------------

async fn job_create_read_cancel(store: Arc<dyn Store>) {
    let created = store.create_job(1, 3, JobStatus::Pending).await.unwrap();
    assert!(uuid::Uuid::parse_str(&created.id).is_ok(), "{}", created.id);
    assert_eq!(
        (
            created.status,
            created.total_entities,
            created.succeeded,
            created.failed
        ),
        (JobStatus::Pending, 3, 0, 0)
    );
    assert_eq!(job(&*store, &created.id).await, created);
    assert_eq!(store.active_job().await.unwrap().unwrap().id, created.id);
    let recent = store.recent_jobs(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].id, created.id);

    let err = store
        .create_job(999, 1, JobStatus::InProgress)
        .await
        .expect_err("unknown owner");
    assert!(!err.is_transient(), "{err}");

    match store.cancel_job(&created.id).await.unwrap() {
        CancelOutcome::Cancelled(job) => {
            assert_eq!(job.status, JobStatus::Cancelled);
            assert!(job.completed_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.cancel_job(&created.id).await.unwrap(),
        CancelOutcome::AlreadyTerminal(JobStatus::Cancelled)
    );
    assert_eq!(
        store.cancel_job("no-such-job").await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_ne!(store.active_job().await.unwrap().unwrap().id, created.id);
}

async fn default_owner_is_the_lowest_admin(store: Arc<dyn Store>) {
    assert_eq!(store.default_owner().await.unwrap(), Some(4));
}

async fn same_outcome_twice_counts_once(store: Arc<dyn Store>) {
    let j = new_job(&*store, 3).await;
    let e2 = author(2);
    let p1 = EntityRef::new(EntityType::Publisher, 1);
    assert_eq!(record(&*store, &j.id, author(1), None).await, COUNTED);
    assert_eq!(record(&*store, &j.id, author(1), None).await, NOTHING);
    assert_eq!(
        record(&*store, &j.id, e2, Some("Bedrock error")).await,
        COUNTED
    );
    assert_eq!(record(&*store, &j.id, e2, Some("again")).await, NOTHING);
    // A success after a counted failure of the same entity does not count either.
    assert_eq!(record(&*store, &j.id, e2, None).await, NOTHING);
    let mid = job(&*store, &j.id).await;
    assert_eq!(
        (mid.succeeded, mid.failed, mid.status),
        (1, 1, JobStatus::InProgress)
    );
    assert_eq!(mid.error_log.as_deref(), Some("author:2: Bedrock error"));

    assert_eq!(record(&*store, &j.id, p1, Some("boom")).await, COMPLETED);
    let done = job(&*store, &j.id).await;
    assert_eq!((done.succeeded, done.failed), (1, 2));
    assert_eq!(done.status, JobStatus::Completed);
    assert!(done.completed_at.is_some());
    assert_eq!(
        done.error_log.as_deref(),
        Some("author:2: Bedrock error\npublisher:1: boom")
    );
}

async fn unknown_job_records_nothing(store: Arc<dyn Store>) {
    assert_eq!(
        store
            .record_outcome(outcome("prod-test-001", author(1), Some("x")))
            .await
            .unwrap(),
        NOTHING
    );
    store
        .record_retry("prod-test-001", author(1), 1, "throttled")
        .await
        .unwrap();
    let recorded = store
        .commit_profile(unit(
            author(1),
            Some("an-unknown-job-id-that-is-longer-than-36-chars"),
        ))
        .await
        .unwrap();
    assert_eq!(recorded, NOTHING);
    assert!(
        store.profile(author(1)).await.unwrap().is_some(),
        "profile still written"
    );
    assert!(store.job("prod-test-001").await.unwrap().is_none());
}

async fn cancelled_job_stays_cancelled(store: Arc<dyn Store>) {
    // docs/compatibility.md, "Handling one message": counting continues, the status does not change.
    let j = new_job(&*store, 1).await;
    assert!(matches!(
        store.cancel_job(&j.id).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert_eq!(record(&*store, &j.id, author(1), None).await, COUNTED);
    let after = job(&*store, &j.id).await;
    assert_eq!((after.status, after.succeeded), (JobStatus::Cancelled, 1));
}

async fn completed_job_is_never_reopened(store: Arc<dyn Store>) {
    // docs/compatibility.md, "Handling one message", and completion happens once.
    let j = new_job(&*store, 1).await;
    assert_eq!(record(&*store, &j.id, author(1), None).await, COMPLETED);
    let completed_at = job(&*store, &j.id).await.completed_at;
    assert!(completed_at.is_some());
    assert_eq!(
        store
            .record_outcome(outcome(&j.id, author(2), Some("late")))
            .await
            .unwrap(),
        COUNTED
    );
    assert!(matches!(
        store.cancel_job(&j.id).await.unwrap(),
        CancelOutcome::AlreadyTerminal(JobStatus::Completed)
    ));
    let after = job(&*store, &j.id).await;
    assert_eq!(
        (after.status, after.succeeded, after.failed),
        (JobStatus::Completed, 1, 1)
    );
    assert_eq!(after.completed_at, completed_at);
}

async fn retries_do_not_count_and_never_undo_a_terminal_outcome(store: Arc<dyn Store>) {
    let j = new_job(&*store, 2).await;
    store
        .record_retry(&j.id, author(1), 1, "throttled")
        .await
        .unwrap();
    store
        .record_retry(&j.id, author(1), 2, "throttled again")
        .await
        .unwrap();
    let after_retries = job(&*store, &j.id).await;
    assert_eq!((after_retries.succeeded, after_retries.failed), (0, 0));
    assert_eq!(record(&*store, &j.id, author(1), None).await, COUNTED);
    store
        .record_retry(&j.id, author(1), 3, "redelivered")
        .await
        .unwrap();
    assert_eq!(record(&*store, &j.id, author(1), None).await, NOTHING);
    assert_eq!(job(&*store, &j.id).await.succeeded, 1);
}

// ---- the profile unit of work ---------------------------------------------------------

async fn commit_profile_writes_profile_usage_and_progress(store: Arc<dyn Store>) {
    let j = new_job(&*store, 2).await;
    let before = Utc::now() - chrono::Duration::seconds(5);
    let mut u = unit(author(1), Some(&j.id));
    u.profile.ai_connections = vec![json!({"source_type": "author", "source_id": 1,
        "target_type": "author", "target_id": 2, "relationship": "family"})];
    u.profile
        .relationship_stories
        .insert("author:1:author:2".into(), json!({"summary": "Friends."}));
    assert_eq!(store.commit_profile(u.clone()).await.unwrap(), COUNTED);

    let p = store.profile(author(1)).await.unwrap().unwrap();
    assert_eq!(p.bio_summary.as_deref(), Some("Biography of author:1."));
    assert_eq!(p.personal_stories, Some(u.profile.personal_stories.clone()));
    assert_eq!(
        p.connection_narratives,
        Some(u.profile.connection_narratives.clone())
    );
    assert_eq!(
        p.relationship_stories,
        Some(json!({"author:1:author:2": {"summary": "Friends."}}))
    );
    assert_eq!(
        p.ai_connections.as_ref().unwrap().as_array().unwrap().len(),
        1
    );
    assert_eq!(
        p.model_version.as_deref(),
        Some("anthropic.claude-3-5-haiku-20241022-v1:0")
    );
    let generated = p.generated_at.expect("generated_at set");
    assert!(generated > before && generated > ts(T2), "{generated}");

    let usage = store.job_usage(&j.id).await.unwrap();
    assert_eq!((usage.profiles, usage.calls), (1, 3));
    assert_eq!((usage.input_tokens, usage.output_tokens), (1200, 300));
    assert!((usage.cost_usd - 0.00216).abs() < 1e-12);

    // Redelivery of the same message: profile rewritten, usage recorded, progress not counted.
    let mut again = u.clone();
    again.profile.ai_connections.clear();
    again.profile.bio_summary = None;
    assert_eq!(store.commit_profile(again).await.unwrap(), NOTHING);
    let p = store.profile(author(1)).await.unwrap().unwrap();
    assert_eq!(
        p.ai_connections, None,
        "empty AI connections are stored as NULL"
    );
    assert_eq!(p.bio_summary, None);
    assert_eq!(store.job_usage(&j.id).await.unwrap().profiles, 2);
    assert_eq!(job(&*store, &j.id).await.succeeded, 1);

    // Ad-hoc message: no job.
    assert_eq!(
        store.commit_profile(unit(author(2), None)).await.unwrap(),
        NOTHING
    );
    assert!(store.profile(author(2)).await.unwrap().is_some());

    assert_eq!(
        store
            .commit_profile(unit(EntityRef::new(EntityType::Binder, 1), Some(&j.id)))
            .await
            .unwrap(),
        COMPLETED
    );
}

async fn relationship_stories_keep_old_keys(store: Arc<dyn Store>) {
    // docs/compatibility.md, "Narratives and relationship stories": regeneration keeps pre-existing relationship-story keys and adds new ones.
    let mut first = unit(author(1), None);
    first
        .profile
        .relationship_stories
        .insert("author:1:author:2".into(), json!({"summary": "old"}));
    first
        .profile
        .relationship_stories
        .insert("author:1:publisher:1".into(), json!({"summary": "kept"}));
    store.commit_profile(first).await.unwrap();

    let mut second = unit(author(1), None);
    second.profile.connection_narratives = json!({});
    second
        .profile
        .relationship_stories
        .insert("author:1:author:2".into(), json!({"summary": "new"}));
    second
        .profile
        .relationship_stories
        .insert("author:1:binder:1".into(), json!({"summary": "added"}));
    store.commit_profile(second).await.unwrap();

    let p = store.profile(author(1)).await.unwrap().unwrap();
    assert_eq!(
        p.relationship_stories,
        Some(json!({
            "author:1:author:2": {"summary": "new"},
            "author:1:publisher:1": {"summary": "kept"},
            "author:1:binder:1": {"summary": "added"},
        }))
    );
    assert_eq!(
        p.connection_narratives,
        Some(json!({})),
        "narratives are replaced"
    );

    // A new row with no stories stores an empty object.
    store.commit_profile(unit(author(2), None)).await.unwrap();
    let p = store.profile(author(2)).await.unwrap().unwrap();
    assert_eq!(p.relationship_stories, Some(json!({})));
}

/// The stored AI connections between entities with ids >= 50 (the sample's own rows are < 50).
async fn new_ai_rows(store: &dyn Store) -> Vec<AiConnectionRow> {
    store
        .graph_rows(true, 5000)
        .await
        .unwrap()
        .ai_connections
        .into_iter()
        .filter(|r| r.source_id >= 50 || r.target_id >= 50)
        .collect()
}

async fn store_ai(store: &dyn Store, rows: Vec<AiConnectionRow>) {
    let mut u = unit(author(60), None);
    u.ai_connections = rows;
    store.commit_profile(u).await.expect("unit commits");
}

async fn ai_connection_upserts_follow_the_original(store: Arc<dyn Store>) {
    let store = &*store;
    // Empty list: nothing changes.
    store_ai(store, vec![]).await;
    assert!(new_ai_rows(store).await.is_empty());

    // New row.
    store_ai(
        store,
        vec![ai("author:50", "author:51", "family/MARRIAGE", 0.7, "e1")],
    )
    .await;
    let rows = new_ai_rows(store).await;
    assert_eq!(
        rows,
        [ai("author:50", "author:51", "family/MARRIAGE", 0.7, "e1")]
    );

    // Canonical swap: publisher:100 / author:5 is stored as author 5 -> publisher 100; and
    // "author:100" < "author:55" as strings.
    store_ai(
        store,
        vec![
            ai("publisher:100", "author:55", "influence", 0.5, "e"),
            ai("author:55", "author:100", "friendship", 0.5, "e"),
        ],
    )
    .await;
    let rows = new_ai_rows(store).await;
    assert!(
        rows.contains(&ai("author:55", "publisher:100", "influence", 0.5, "e")),
        "{rows:?}"
    );
    assert!(
        rows.contains(&ai("author:100", "author:55", "friendship", 0.5, "e")),
        "{rows:?}"
    );

    // Higher confidence (given in reverse order) replaces confidence, evidence and sub_type.
    store_ai(
        store,
        vec![ai("author:51", "author:50", "family/SIBLING", 0.9, "e2")],
    )
    .await;
    // Lower, and equal, confidence change nothing.
    store_ai(
        store,
        vec![ai("author:50", "author:51", "family/RIVALS", 0.3, "e3")],
    )
    .await;
    store_ai(
        store,
        vec![ai("author:50", "author:51", "family/RIVALS", 0.9, "e4")],
    )
    .await;
    let rows = new_ai_rows(store).await;
    assert_eq!(
        rows[0],
        ai("author:50", "author:51", "family/SIBLING", 0.9, "e2")
    );

    // Another relationship for the same pair coexists; incomplete rows are skipped; several
    // rows at once; duplicates within one batch collapse to the highest confidence; confidence
    // is clamped to [0, 1].
    let mut incomplete = ai("author:70", "author:71", "family", 0.5, "x");
    incomplete.relationship.clear();
    store_ai(
        store,
        vec![
            ai("author:50", "author:51", "scandal", 0.4, "s"),
            incomplete,
            ai("author:80", "author:81", "friendship", 0.6, "low"),
            ai("author:81", "author:80", "friendship", 0.8, "high"),
            ai("author:80", "author:81", "friendship", 0.7, "mid"),
            ai("binder:90", "author:91", "collaboration", 2.5, "clamped"),
        ],
    )
    .await;
    let rows = new_ai_rows(store).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.contains(&ai("author:50", "author:51", "scandal", 0.4, "s")));
    assert!(rows.contains(&ai("author:50", "author:51", "family/SIBLING", 0.9, "e2")));
    assert!(rows.contains(&ai("author:80", "author:81", "friendship", 0.8, "high")));
    assert!(rows.contains(&ai(
        "author:91",
        "binder:90",
        "collaboration",
        1.0,
        "clamped"
    )));
    assert!(!rows.iter().any(|r| r.source_id == 70));

    // Re-storing a batch with higher confidence updates.
    store_ai(
        store,
        vec![ai("author:80", "author:81", "friendship", 0.95, "higher")],
    )
    .await;
    assert!(new_ai_rows(store).await.contains(&ai(
        "author:80",
        "author:81",
        "friendship",
        0.95,
        "higher"
    )));

    // The sample's rows are untouched by all of this.
    let all = store.graph_rows(true, 5000).await.unwrap().ai_connections;
    assert_eq!(
        all[0],
        ai(
            "author:1",
            "author:2",
            "friendship/MENTOR",
            0.6,
            "old evidence"
        )
    );
}

// ---- job maintenance ------------------------------------------------------------------

async fn reduce_job_total_can_complete_a_job(store: Arc<dyn Store>) {
    let j = new_job(&*store, 3).await;
    record(&*store, &j.id, author(1), None).await;
    record(&*store, &j.id, author(2), None).await;
    let after = store
        .reduce_job_total(&j.id, 1, "1 message could not be sent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.total_entities, after.status),
        (2, JobStatus::Completed)
    );
    assert_eq!(
        after.error_log.as_deref(),
        Some("1 message could not be sent")
    );
    assert!(
        store
            .reduce_job_total("no-such-job", 1, "x")
            .await
            .unwrap()
            .is_none()
    );

    let k = new_job(&*store, 5).await;
    let after = store
        .reduce_job_total(&k.id, 2, "2 not sent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.total_entities, after.status),
        (3, JobStatus::InProgress)
    );
}

async fn stuck_jobs_are_failed_once_unless_a_retry_is_pending(store: Arc<dyn Store>) {
    store
        .record_retry("stuck-retry", author(1), 2, "throttled")
        .await
        .unwrap();
    let failed = store
        .fail_stuck_jobs(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(failed, ["stuck-old"]);
    let stuck = job(&*store, "stuck-old").await;
    assert_eq!(stuck.status, JobStatus::Failed);
    assert!(
        stuck
            .error_log
            .unwrap()
            .starts_with("stuck: no progress for 3600s")
    );
    for id in ["stuck-retry", "pending-old", "fresh"] {
        assert_ne!(job(&*store, id).await.status, JobStatus::Failed, "{id}");
    }
    assert!(
        store
            .fail_stuck_jobs(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_duplicate_outcomes_count_exactly_once(store: Arc<dyn Store>) {
    const ENTITIES: i32 = 500;
    const TASKS: usize = 10;
    let j = new_job(&*store, ENTITIES).await;
    // Every entity once, plus 100 (20%) delivered a second time to a different task.
    let mut deliveries: Vec<i32> = (1..=ENTITIES).collect();
    deliveries.extend(1..=ENTITIES / 5);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let job_id = j.id.clone();
        let mine: Vec<i32> = deliveries
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + t * 3) % TASKS == 0)
            .map(|(_, id)| *id)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut recorded = Vec::new();
            for id in mine {
                let entity = author(id);
                let r = if id % 10 == 0 {
                    store
                        .record_outcome(outcome(&job_id, entity, Some("failed")))
                        .await
                } else if id % 5 == 1 {
                    store.commit_profile(unit(entity, Some(&job_id))).await
                } else {
                    store.record_outcome(outcome(&job_id, entity, None)).await
                };
                recorded.push(r.expect("recorded"));
            }
            recorded
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(all.len(), 600);
    assert_eq!(all.iter().filter(|r| r.counted).count(), ENTITIES as usize);
    assert_eq!(
        all.iter().filter(|r| r.completed).count(),
        1,
        "one transition to completed"
    );
    let done = job(&*store, &j.id).await;
    assert_eq!((done.succeeded, done.failed), (450, 50));
    assert_eq!(done.status, JobStatus::Completed);
    let log = done.error_log.unwrap();
    assert_eq!(log.lines().count(), 50);
    assert!(
        log.lines()
            .all(|l| l.starts_with("author:") && l.ends_with(": failed"))
    );
}
