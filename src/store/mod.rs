//! The `Store` port: every read and write the daemon makes against the shared PostgreSQL database.
//!
//! The port has two sides, [`ProfileStore`] (the API's domain tables and the profile write) and
//! [`JobStore`] (generation jobs and their items); [`Store`] is both plus the connection.
//! Two adapters implement it with the same semantics, checked by one contract test suite:
//! [`PgStore`] (diesel-async over a deadpool pool; production) and [`MemoryStore`] (the demo),
//! each split into the same two sides. [`connection`] owns PostgreSQL sessions and error
//! classification, [`migrate`] applies the embedded migrations, and [`schema_check`] verifies
//! the schema at start-up.
//!
//! Who retries: nobody here. Every method runs once; a [`StoreError`] says whether the caller
//! should let the message come back ([`StoreError::is_transient`]) or count it as failed.
//! The writes of one finished message happen in one unit of work ([`ProfileStore::commit_profile`],
//! [`JobStore::record_outcome`]): all of it or nothing, and job progress counted exactly once per
//! (job, entity) however often the message is delivered (docs/decisions.md, "Progress counted once per (job, entity)"; docs/decisions.md, "One transaction per generated profile").

pub mod connection;
pub mod credentials;
pub mod memory;
pub mod migrate;
pub mod postgres;
pub mod schema;
pub mod schema_check;
pub mod tls;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{
    AiConnectionRow, Book, CollectionEntity, Entity, EntityRef, GraphRows, Job, JobStatus,
    StoredProfile,
};

pub use memory::{BookRecord, MemoryStore};
pub use postgres::PgStore;

/// Why a store operation failed, phrased as what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had (pool exhausted, database down, connect timeout): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement failed for a reason that goes away by itself (serialization failure,
    /// deadlock, statement timeout, connection lost mid-query): retry later.
    #[error("transient database error: {0}")]
    Transient(#[source] diesel::result::Error),
    /// The database rejected the statement (constraint, data or schema error): retrying the
    /// same write fails the same way.
    #[error("database rejected the operation: {0}")]
    Rejected(#[source] diesel::result::Error),
    /// A stored value cannot be understood (e.g. an unknown job status string).
    #[error("invalid stored data: {0}")]
    InvalidData(String),
}

impl StoreError {
    /// True when the same call may succeed later (the message should come back, not be failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Transient(_))
    }

    /// True when the database itself is out of reach (no connection, or the connection broke),
    /// rather than this statement failing: the caller should pause, not blame its message.
    /// Decided by where the failure happened, never by the server's message text.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Transient(
                    Error::DatabaseError(
                        DatabaseErrorKind::ClosedConnection
                            | DatabaseErrorKind::UnableToSendCommand,
                        _,
                    ) | Error::BrokenTransactionManager
                )
        )
    }

    /// True when a ping should decide whether the server, not the statement, failed: every
    /// transient error, and a server error diesel cannot name. The latter is what a server
    /// shutting down sends when its messages are not in English (docs/decisions.md, "Holding
    /// messages during an outage").
    pub fn may_be_the_server(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        self.is_transient()
            || matches!(
                self,
                StoreError::Rejected(Error::DatabaseError(DatabaseErrorKind::Unknown, _))
            )
    }
}

/// A terminal outcome of one (job, entity): `succeeded` covers generated and skipped profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Counted in `failed`; `message` goes to the job's error log as `"{type}:{id}: {message}"`.
    Failed {
        message: String,
    },
}

/// A terminal outcome to record against a job without writing a profile (skips, failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub job_id: String,
    pub entity: EntityRef,
    /// Delivery attempt that produced the outcome (SQS `ApproximateReceiveCount`).
    pub attempt: i32,
    pub outcome: Outcome,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// The outcome was the first terminal one for its (job, entity) and moved a counter.
    pub counted: bool,
    /// This call moved the job to `completed`.
    pub completed: bool,
}

/// The profile columns a generation writes (docs/compatibility.md, "Profile upsert" and "JSON columns").
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileWrite {
    pub bio_summary: Option<String>,
    /// JSON array of story objects (replaces the old value).
    pub personal_stories: serde_json::Value,
    /// JSON object keyed by pair key (replaces the old value).
    pub connection_narratives: serde_json::Value,
    /// New stories by pair key; merged into the stored object, old keys kept.
    pub relationship_stories: serde_json::Map<String, serde_json::Value>,
    /// The validated AI connections of this run (legacy copy); stored as SQL NULL when empty.
    pub ai_connections: Vec<serde_json::Value>,
    /// Bedrock model id (or "offline").
    pub model_version: String,
}

/// Bedrock usage of one generated profile (docs/decisions.md, "Token and cost accounting"): one `profile_generations` row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationUsage {
    pub model_id: String,
    pub calls: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
    pub cost_usd: f64,
    /// Prompt-cache reads and writes, apart from `input_tokens` (billed at their own prices).
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

/// Everything one generated profile writes, committed as a single transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUnit {
    pub entity: EntityRef,
    pub profile: ProfileWrite,
    /// Discovered connections, in any order and possibly duplicated; the store canonicalises.
    pub ai_connections: Vec<AiConnectionRow>,
    pub usage: GenerationUsage,
    /// The job to count a success against; `None` for ad-hoc messages.
    pub job_id: Option<String>,
    /// Delivery attempt (SQS `ApproximateReceiveCount`).
    pub attempt: i32,
}

/// Result of [`JobStore::cancel_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was active and is now cancelled.
    Cancelled(Job),
    NotFound,
    /// The job had already ended in this state; nothing changed.
    AlreadyTerminal(JobStatus),
}

/// Bedrock usage summed over `profile_generations` rows (of one job, or of a UTC day): every call
/// billed, discarded ones included (docs/decisions.md, "Honest cost: every attempt is recorded").
/// PostgreSQL keeps these sums in its `job_usage` and `daily_usage` rollups.
#[derive(Debug, Clone, PartialEq, Default, diesel::QueryableByName)]
pub struct UsageTotals {
    /// Profiles written (discarded rows are not profiles).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub profiles: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub calls: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub input_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub output_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub cache_read_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub cache_write_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub cost_usd: f64,
    /// The part of `calls` spent on generations that wrote no profile.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub discarded_calls: i64,
    /// The part of `cost_usd` spent on generations that wrote no profile.
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub discarded_cost_usd: f64,
}

/// Connection pool occupancy, for the `db_pool_connections{state}` and `db_pool_max_connections` gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub idle: usize,
    pub in_use: usize,
    pub max: usize,
}

/// The profile side of the port: the API's domain tables the daemon reads to write a profile,
/// and the one unit of work that writes it.
///
/// "Qualifying" always means `books.status IN ('IN_TRANSIT', 'ON_HAND')` (docs/compatibility.md, "Qualifying books").
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// The entity row: `SELECT name, years FROM authors|publishers|binders WHERE id = $1`.
    async fn entity(&self, entity: EntityRef) -> Result<Option<Entity>, StoreError>;

    /// `SELECT id, title, year_start FROM books WHERE <fk> = $id AND status IN (qualifying)
    /// ORDER BY year_start ASC NULLS LAST, id`.
    async fn qualifying_books(&self, entity: EntityRef) -> Result<Vec<Book>, StoreError>;

    /// `SELECT MAX(updated_at) FROM books WHERE <fk> = $id AND status IN (qualifying)`; the
    /// staleness input (docs/compatibility.md, "Staleness rule"). `None` when the entity has no qualifying book.
    async fn latest_book_update(
        &self,
        entity: EntityRef,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// `SELECT … FROM entity_profiles WHERE entity_type = $1 AND entity_id = $2`.
    async fn profile(&self, entity: EntityRef) -> Result<Option<StoredProfile>, StoreError>;

    /// The graph's input in one `REPEATABLE READ` read-only transaction (one snapshot):
    /// qualifying books `ORDER BY id LIMIT max_books`; the authors, publishers and (when
    /// `include_binders`) binders those books reference, each `ORDER BY id`; every
    /// `ai_connections` row `ORDER BY id`.
    async fn graph_rows(
        &self,
        include_binders: bool,
        max_books: i64,
    ) -> Result<GraphRows, StoreError>;

    /// Authors, then publishers, then binders that have at least one qualifying book, each
    /// `ORDER BY id` (docs/compatibility.md, "Discovery": the entity universe, generate-all).
    async fn collection_entities(&self) -> Result<Vec<CollectionEntity>, StoreError>;

    /// `SELECT value FROM app_config WHERE key = 'model.entity_profiles'`.
    async fn model_setting(&self) -> Result<Option<String>, StoreError>;

    /// `SELECT value FROM app_config WHERE key = 'budget.daily_cost_usd'`: the daily cost cap
    /// set at run time (docs/decisions.md, "Daily cost cap").
    async fn daily_cap_setting(&self) -> Result<Option<String>, StoreError>;

    /// The unit of work of one generated profile, one transaction (docs/decisions.md, "One transaction per generated profile"):
    /// 1. AI connections: canonical order (`"type:id"` string compare, smaller is the source),
    ///    confidence clamped to [0, 1], duplicates in the batch collapsed keeping the highest
    ///    confidence (first on ties), then `INSERT … ON CONFLICT (uq_ai_connection columns) DO
    ///    UPDATE SET confidence = GREATEST(new, old)` with `evidence`/`sub_type` replaced only
    ///    when the new confidence is strictly higher (docs/compatibility.md, "AI connections upsert");
    /// 2. `entity_profiles` upsert on `(entity_type, entity_id)`: `relationship_stories` merged
    ///    into the old object (old keys kept, new win), every other column replaced,
    ///    `ai_connections` NULL when empty, `generated_at = now()`, `model_version`
    ///    (docs/compatibility.md, "Profile upsert");
    /// 3. the `profile_generations` usage row;
    /// 4. when `job_id` is set, a `succeeded` outcome recorded as in [`JobStore::record_outcome`].
    ///
    /// Any error rolls all four back.
    async fn commit_profile(&self, unit: ProfileUnit) -> Result<Recorded, StoreError>;

    /// The usage of calls whose generation wrote no profile (it failed, was cut short, or its
    /// commit failed): one `profile_generations` row with `discarded = true`, so job and daily
    /// sums are what the account is billed (docs/decisions.md, "Honest cost: every attempt is
    /// recorded"). Counts nothing on the job.
    async fn record_discarded_usage(
        &self,
        entity: EntityRef,
        job_id: Option<&str>,
        usage: &GenerationUsage,
    ) -> Result<(), StoreError>;
}

/// The job side of the port: generation jobs, their per-entity items and usage totals.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// `SELECT … FROM profile_generation_jobs WHERE id = $1`.
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// The newest job with status `pending` or `in_progress` (`ORDER BY created_at DESC, id DESC
    /// LIMIT 1`).
    async fn active_job(&self) -> Result<Option<Job>, StoreError>;

    /// Inserts a job with a new uuid-v4 id, zero counters and `created_at = updated_at = now()`.
    /// `owner_id` must be an existing `users.id` (foreign key; otherwise [`StoreError::Rejected`]).
    async fn create_job(
        &self,
        owner_id: i32,
        total_entities: i32,
        status: JobStatus,
    ) -> Result<Job, StoreError>;

    /// One conditional `UPDATE … SET status = 'cancelled', completed_at = now(), updated_at = now()
    /// WHERE id = $1 AND status IN ('pending', 'in_progress')`; terminal states are never left.
    async fn cancel_job(&self, id: &str) -> Result<CancelOutcome, StoreError>;

    /// `SELECT min(id) FROM users WHERE role = 'admin'`: who owns a job started without an
    /// explicit owner (the original's generate-all is admin-only; `owner_id` is for audit).
    async fn default_owner(&self) -> Result<Option<i32>, StoreError>;

    /// Jobs `ORDER BY created_at DESC, id DESC LIMIT $limit`.
    async fn recent_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError>;

    /// For messages that could not be sent: `total_entities = GREATEST(total_entities - by, 0)`,
    /// `note` appended to `error_log`, `updated_at = now()`; then the completion UPDATE (the
    /// job may now be complete). Returns the job afterwards, `None` when it does not exist.
    async fn reduce_job_total(
        &self,
        id: &str,
        by: i32,
        note: &str,
    ) -> Result<Option<Job>, StoreError>;

    /// Stuck-job rescue, one conditional `UPDATE`: a job is marked `failed` (with an
    /// `error_log` line) when its status is `in_progress`, its `updated_at` (last progress) is
    /// older than `stale_after`, and it has no `retry` job item updated within `stale_after`
    /// (a recent retry means a message is still on its way back). Safe to run on every
    /// replica at once: row locks make each job fail at most once and a concurrent progress
    /// update (which bumps `updated_at`) wins. Returns the ids of the jobs it failed.
    async fn fail_stuck_jobs(&self, stale_after: Duration) -> Result<Vec<String>, StoreError>;

    /// Notes a transient failure of (job, entity): upserts its job item as `retry` with
    /// `attempts = attempt` and `last_error`, unless a terminal item already exists. Counts
    /// nothing. An unknown job id records nothing.
    async fn record_retry(
        &self,
        job_id: &str,
        entity: EntityRef,
        attempt: i32,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Records a terminal outcome without a profile (skips, failures), in one transaction:
    /// insert the job item, or turn a `retry` item terminal; only if that happened,
    /// `succeeded` or `failed` += 1, `updated_at = now()`, and for failures append
    /// `"{type}:{id}: {message}"` to `error_log` (newline-joined, trimmed; docs/compatibility.md, "Job states and counters");
    /// then `UPDATE … SET status = 'completed', completed_at = now() WHERE id = $1 AND status
    /// IN ('pending', 'in_progress') AND succeeded + failed >= total_entities`. Counting ignores
    /// the job's status (a cancelled job still counts, and stays cancelled). An unknown job
    /// id records nothing.
    async fn record_outcome(&self, record: OutcomeRecord) -> Result<Recorded, StoreError>;

    /// Whether (job, entity) is recorded `succeeded`: `SELECT … FROM
    /// profile_generation_job_items WHERE job_id = $1 AND entity_type = $2 AND entity_id = $3 AND
    /// outcome = 'succeeded'`. A redelivered message of such an entity — `force` included — is
    /// not generated again (docs/decisions.md, "Per-message call cap and cancellation").
    async fn job_item_succeeded(&self, job_id: &str, entity: EntityRef)
    -> Result<bool, StoreError>;

    /// Usage summed over the `profile_generations` rows with this `job_id` (zero when none).
    async fn job_usage(&self, job_id: &str) -> Result<UsageTotals, StoreError>;

    /// Usage summed over the `profile_generations` rows written since midnight UTC, every job,
    /// ad-hoc message and replica, discarded rows included: what the daily cost cap compares.
    async fn spend_today(&self) -> Result<UsageTotals, StoreError>;
}

/// The daemon's whole view of the database: both sides plus the connection itself. Object safe:
/// the app holds an `Arc<dyn Store>`, whose methods need no trait imports; code calling a
/// concrete adapter imports [`ProfileStore`] or [`JobStore`] for the side it uses.
#[async_trait]
pub trait Store: ProfileStore + JobStore {
    /// `SELECT 1`: the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection pool occupancy; `None` for adapters without a pool.
    fn pool_status(&self) -> Option<PoolStatus>;
}

/// `"{type}:{id}"`, the string the original compares to order an AI connection's ends.
fn end_key(entity_type: &str, id: i32) -> String {
    format!("{entity_type}:{id}")
}

/// Longest `sub_type` the column holds (`varchar(50)`); longer model output is cut, not fatal.
const SUB_TYPE_MAX_CHARS: usize = 50;

/// Prepares a batch of AI connections for the upsert, as the original's `_store_ai_connections`:
/// drops rows missing a key field, puts each in canonical order, clamps confidence (NaN counts
/// as the 0.5 default), cuts `sub_type` to the column width, and collapses duplicate keys
/// keeping the highest confidence (the first on ties). The result is sorted by key so that
/// concurrent upserts lock rows in the same order.
pub fn canonical_ai_connections(rows: &[AiConnectionRow]) -> Vec<AiConnectionRow> {
    let mut by_key: std::collections::BTreeMap<
        (String, i32, String, i32, String),
        AiConnectionRow,
    > = std::collections::BTreeMap::new();
    for row in rows {
        if row.source_type.is_empty() || row.target_type.is_empty() || row.relationship.is_empty() {
            continue;
        }
        let mut row = row.clone();
        if end_key(&row.source_type, row.source_id) > end_key(&row.target_type, row.target_id) {
            std::mem::swap(&mut row.source_type, &mut row.target_type);
            std::mem::swap(&mut row.source_id, &mut row.target_id);
        }
        row.confidence = if row.confidence.is_nan() {
            0.5
        } else {
            row.confidence.clamp(0.0, 1.0)
        };
        if let Some(sub) = &row.sub_type
            && sub.chars().count() > SUB_TYPE_MAX_CHARS
        {
            row.sub_type = Some(sub.chars().take(SUB_TYPE_MAX_CHARS).collect());
        }
        let key = (
            row.source_type.clone(),
            row.source_id,
            row.target_type.clone(),
            row.target_id,
            row.relationship.clone(),
        );
        match by_key.get(&key) {
            Some(kept) if kept.confidence >= row.confidence => {}
            _ => {
                by_key.insert(key, row);
            }
        }
    }
    by_key.into_values().collect()
}

/// `old + "\n" + line`, trimmed, as the original builds `error_log` (docs/compatibility.md, "Job states and counters").
fn append_log(old: Option<&str>, line: &str) -> String {
    format!("{}\n{}", old.unwrap_or(""), line)
        .trim()
        .to_string()
}

/// The `error_log` line of a failed entity.
fn failure_line(entity: EntityRef, message: &str) -> String {
    format!("{entity}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(st: &str, si: i32, tt: &str, ti: i32, rel: &str, conf: f64) -> AiConnectionRow {
        AiConnectionRow {
            source_type: st.into(),
            source_id: si,
            target_type: tt.into(),
            target_id: ti,
            relationship: rel.into(),
            sub_type: None,
            confidence: conf,
            evidence: Some(format!("{conf}")),
        }
    }

    #[test]
    fn canonical_order_is_a_string_comparison() {
        let out = canonical_ai_connections(&[
            conn("publisher", 100, "author", 5, "family", 0.9),
            conn("author", 9, "author", 10, "friendship", 0.9),
        ]);
        let ends: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    end_key(&r.source_type, r.source_id),
                    end_key(&r.target_type, r.target_id),
                )
            })
            .collect();
        assert!(ends.contains(&("author:5".into(), "publisher:100".into())));
        // "author:10" < "author:9" as strings.
        assert!(ends.contains(&("author:10".into(), "author:9".into())));
    }

    #[test]
    fn batch_duplicates_keep_the_highest_confidence_and_bad_rows_go() {
        let mut incomplete = conn("author", 1, "author", 2, "family", 0.5);
        incomplete.relationship.clear();
        let out = canonical_ai_connections(&[
            conn("author", 1, "author", 2, "family", 0.4),
            conn("author", 2, "author", 1, "family", 0.8),
            conn("author", 1, "author", 2, "family", 0.8),
            conn("author", 1, "author", 3, "family", 2.5),
            incomplete,
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].confidence, 0.8);
        assert_eq!(out[0].evidence.as_deref(), Some("0.8"));
        assert_eq!(out[1].confidence, 1.0);
    }

    #[test]
    fn error_log_lines_are_newline_joined_and_trimmed() {
        assert_eq!(append_log(None, "author:1: boom"), "author:1: boom");
        assert_eq!(append_log(Some("a"), "b"), "a\nb");
        assert_eq!(append_log(Some("  \n"), "b "), "b");
    }

    #[test]
    fn only_connection_and_timeout_failures_are_transient() {
        assert!(StoreError::Unavailable("pool timed out".into()).is_transient());
        assert!(!StoreError::InvalidData("status".into()).is_transient());
        assert!(!StoreError::Rejected(diesel::result::Error::NotFound).is_transient());
    }

    #[test]
    fn a_server_error_diesel_cannot_name_is_checked_with_a_ping() {
        use diesel::result::{DatabaseErrorKind, Error};
        let server = |kind, text: &str| {
            StoreError::Rejected(Error::DatabaseError(kind, Box::new(text.to_owned())))
        };
        // 57P01 from a server whose lc_messages is German: no text match, but a ping decides.
        let shutdown = server(
            DatabaseErrorKind::Unknown,
            "Verbindung wird abgebrochen aufgrund von Anweisung des Administrators",
        );
        assert!(!shutdown.is_transient() && shutdown.may_be_the_server());
        let duplicate = server(DatabaseErrorKind::UniqueViolation, "duplicate key");
        assert!(!duplicate.may_be_the_server());
        assert!(!StoreError::InvalidData("status".into()).may_be_the_server());
        assert!(StoreError::Unavailable("pool timed out".into()).may_be_the_server());
    }
}
