//! The job side of [`PgStore`]: generation jobs, their items and usage. Counting is written out
//! as SQL: each terminal (job, entity) item is inserted once, and only that insert moves a
//! counter, so a redelivered message never counts twice.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Double, Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{PgStore, USAGE_COLUMNS};
use crate::model::{EntityRef, Job, JobStatus};
use crate::store::connection::classify;
use crate::store::schema::profile_generation_jobs;
use crate::store::{
    CancelOutcome, JobStore, Outcome, OutcomeRecord, Recorded, StoreError, UsageTotals,
    failure_line,
};

/// `error_log` append as SQL: `btrim(old || '\n' || line)` with Python's whitespace set.
const APPEND_LOG_SQL: &str =
    "btrim(COALESCE(error_log, '') || E'\\n' || $2, E' \\t\\n\\r\\f' || chr(11))";

/// A `profile_generation_jobs` row as stored (its status still text); also read by the
/// console's job query.
#[derive(Queryable, QueryableByName, Selectable)]
#[diesel(table_name = profile_generation_jobs)]
pub(crate) struct JobRow {
    id: String,
    status: String,
    owner_id: i32,
    total_entities: i32,
    succeeded: i32,
    failed: i32,
    error_log: Option<String>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(Job {
            status: r
                .status
                .parse()
                .map_err(|e: String| StoreError::InvalidData(format!("job {}: {e}", r.id)))?,
            id: r.id,
            owner_id: r.owner_id,
            total_entities: r.total_entities,
            succeeded: r.succeeded,
            failed: r.failed,
            error_log: r.error_log,
            completed_at: r.completed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct OwnerRow {
    #[diesel(sql_type = Nullable<Integer>)]
    id: Option<i32>,
}

async fn read_job(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<Option<JobRow>> {
    profile_generation_jobs::table
        .find(id)
        .select(JobRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The completion UPDATE (docs/decisions.md, "Progress counted once per (job, entity)"): only from active states, only once the counters reach
/// the total. Returns whether this call completed the job.
async fn complete_if_done(conn: &mut AsyncPgConnection, job_id: &str) -> QueryResult<bool> {
    let done: Vec<IdRow> = diesel::sql_query(
        "UPDATE profile_generation_jobs \
         SET status = 'completed', completed_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'in_progress') \
           AND succeeded + failed >= total_entities \
         RETURNING id::text AS id",
    )
    .bind::<Text, _>(job_id)
    .load(conn)
    .await?;
    Ok(!done.is_empty())
}

/// Exactly-once recording of a terminal outcome, inside the caller's transaction.
pub(super) async fn record_terminal(
    conn: &mut AsyncPgConnection,
    job_id: &str,
    entity: EntityRef,
    attempt: i32,
    outcome: &Outcome,
) -> QueryResult<Recorded> {
    let (outcome_str, message) = match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Failed { message } => ("failed", Some(message.as_str())),
    };
    // Insert the item, or turn a 'retry' item terminal; an existing terminal item (or an
    // unknown job) returns no row, and then nothing is counted.
    let new: Vec<IdRow> = diesel::sql_query(
        "INSERT INTO profile_generation_job_items \
             (job_id, entity_type, entity_id, outcome, attempts, last_error, created_at, updated_at) \
         SELECT id, $2, $3, $4, $5, $6, now(), now() FROM profile_generation_jobs WHERE id = $1 \
         ON CONFLICT (job_id, entity_type, entity_id) DO UPDATE \
         SET outcome = EXCLUDED.outcome, attempts = EXCLUDED.attempts, \
             last_error = EXCLUDED.last_error, updated_at = now() \
         WHERE profile_generation_job_items.outcome = 'retry' \
         RETURNING job_id::text AS id",
    )
    .bind::<Text, _>(job_id)
    .bind::<Text, _>(entity.entity_type.as_str())
    .bind::<Integer, _>(entity.id)
    .bind::<Text, _>(outcome_str)
    .bind::<Integer, _>(attempt)
    .bind::<Nullable<Text>, _>(message)
    .load(conn)
    .await?;
    if new.is_empty() {
        return Ok(Recorded::default());
    }
    match message {
        None => {
            diesel::sql_query(
                "UPDATE profile_generation_jobs \
                 SET succeeded = succeeded + 1, updated_at = now() WHERE id = $1",
            )
            .bind::<Text, _>(job_id)
            .execute(conn)
            .await?;
        }
        Some(message) => {
            diesel::sql_query(format!(
                "UPDATE profile_generation_jobs \
                 SET failed = failed + 1, updated_at = now(), error_log = {APPEND_LOG_SQL} \
                 WHERE id = $1"
            ))
            .bind::<Text, _>(job_id)
            .bind::<Text, _>(failure_line(entity, message))
            .execute(conn)
            .await?;
        }
    }
    let completed = complete_if_done(conn, job_id).await?;
    Ok(Recorded {
        counted: true,
        completed,
    })
}

#[async_trait]
impl JobStore for PgStore {
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        read_job(&mut conn, id)
            .await
            .map_err(classify)?
            .map(Job::try_from)
            .transpose()
    }

    async fn active_job(&self) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        profile_generation_jobs::table
            .filter(profile_generation_jobs::status.eq_any(["pending", "in_progress"]))
            .order((
                profile_generation_jobs::created_at.desc(),
                profile_generation_jobs::id.desc(),
            ))
            .select(JobRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)?
            .map(Job::try_from)
            .transpose()
    }

    async fn create_job(
        &self,
        owner_id: i32,
        total_entities: i32,
        status: JobStatus,
    ) -> Result<Job, StoreError> {
        let mut conn = self.conn().await?;
        let row: JobRow = diesel::sql_query(
            "INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities, succeeded, \
                 failed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, 0, now(), now()) RETURNING *",
        )
        .bind::<Text, _>(uuid::Uuid::new_v4().to_string())
        .bind::<Text, _>(status.as_str())
        .bind::<Integer, _>(owner_id)
        .bind::<Integer, _>(total_entities)
        .get_result(&mut conn)
        .await
        .map_err(classify)?;
        row.try_into()
    }

    async fn cancel_job(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let cancelled: Option<JobRow> = diesel::sql_query(
            "UPDATE profile_generation_jobs \
             SET status = 'cancelled', completed_at = now(), updated_at = now() \
             WHERE id = $1 AND status IN ('pending', 'in_progress') RETURNING *",
        )
        .bind::<Text, _>(id)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(classify)?;
        if let Some(row) = cancelled {
            return Ok(CancelOutcome::Cancelled(row.try_into()?));
        }
        match read_job(&mut conn, id).await.map_err(classify)? {
            None => Ok(CancelOutcome::NotFound),
            Some(row) => Ok(CancelOutcome::AlreadyTerminal(
                row.status.parse().map_err(StoreError::InvalidData)?,
            )),
        }
    }

    async fn default_owner(&self) -> Result<Option<i32>, StoreError> {
        let mut conn = self.conn().await?;
        let row: OwnerRow =
            diesel::sql_query("SELECT min(id) AS id FROM users WHERE role = 'admin'")
                .get_result(&mut conn)
                .await
                .map_err(classify)?;
        Ok(row.id)
    }

    async fn recent_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.conn().await?;
        profile_generation_jobs::table
            .order((
                profile_generation_jobs::created_at.desc(),
                profile_generation_jobs::id.desc(),
            ))
            .limit(limit)
            .select(JobRow::as_select())
            .load(&mut conn)
            .await
            .map_err(classify)?
            .into_iter()
            .map(Job::try_from)
            .collect()
    }

    async fn reduce_job_total(
        &self,
        id: &str,
        by: i32,
        note: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        let (id, note) = (id.to_owned(), note.to_owned());
        let row = conn
            .transaction(async move |conn| {
                let changed = diesel::sql_query(format!(
                    "UPDATE profile_generation_jobs \
                     SET total_entities = GREATEST(total_entities - $3, 0), updated_at = now(), \
                         error_log = {APPEND_LOG_SQL} \
                     WHERE id = $1"
                ))
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&note)
                .bind::<Integer, _>(by)
                .execute(conn)
                .await?;
                if changed == 0 {
                    return Ok(None);
                }
                complete_if_done(conn, &id).await?;
                read_job(conn, &id).await
            })
            .await
            .map_err(classify)?;
        row.map(Job::try_from).transpose()
    }

    async fn fail_stuck_jobs(&self, stale_after: Duration) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let secs = stale_after.as_secs_f64();
        let line = format!(
            "stuck: no progress for {}s and no retry pending; marked failed by profile-worker",
            stale_after.as_secs()
        );
        let failed: Vec<IdRow> = diesel::sql_query(format!(
            "UPDATE profile_generation_jobs j \
             SET status = 'failed', updated_at = now(), error_log = {APPEND_LOG_SQL} \
             WHERE j.status = 'in_progress' \
               AND j.updated_at < now() - make_interval(secs => $1) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM profile_generation_job_items i \
                   WHERE i.job_id = j.id AND i.outcome = 'retry' \
                     AND i.updated_at >= now() - make_interval(secs => $1)) \
             RETURNING j.id::text AS id"
        ))
        .bind::<Double, _>(secs)
        .bind::<Text, _>(line)
        .load(&mut conn)
        .await
        .map_err(classify)?;
        Ok(failed.into_iter().map(|r| r.id).collect())
    }

    async fn record_retry(
        &self,
        job_id: &str,
        entity: EntityRef,
        attempt: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "INSERT INTO profile_generation_job_items \
                 (job_id, entity_type, entity_id, outcome, attempts, last_error, created_at, updated_at) \
             SELECT id, $2, $3, 'retry', $4, $5, now(), now() \
             FROM profile_generation_jobs WHERE id = $1 \
             ON CONFLICT (job_id, entity_type, entity_id) DO UPDATE \
             SET attempts = GREATEST(profile_generation_job_items.attempts, EXCLUDED.attempts), \
                 last_error = EXCLUDED.last_error, updated_at = now() \
             WHERE profile_generation_job_items.outcome = 'retry'",
        )
        .bind::<Text, _>(job_id)
        .bind::<Text, _>(entity.entity_type.as_str())
        .bind::<Integer, _>(entity.id)
        .bind::<Integer, _>(attempt)
        .bind::<Text, _>(error)
        .execute(&mut conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn job_item_succeeded(
        &self,
        job_id: &str,
        entity: EntityRef,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let found: Vec<IdRow> = diesel::sql_query(
            "SELECT job_id::text AS id FROM profile_generation_job_items \
             WHERE job_id = $1 AND entity_type = $2 AND entity_id = $3 AND outcome = 'succeeded'",
        )
        .bind::<Text, _>(job_id)
        .bind::<Text, _>(entity.entity_type.as_str())
        .bind::<Integer, _>(entity.id)
        .load(&mut conn)
        .await
        .map_err(classify)?;
        Ok(!found.is_empty())
    }

    async fn record_outcome(&self, record: OutcomeRecord) -> Result<Recorded, StoreError> {
        let mut conn = self.conn().await?;
        conn.transaction(async move |conn| {
            record_terminal(
                conn,
                &record.job_id,
                record.entity,
                record.attempt,
                &record.outcome,
            )
            .await
        })
        .await
        .map_err(classify)
    }

    async fn job_usage(&self, job_id: &str) -> Result<UsageTotals, StoreError> {
        let mut conn = self.conn().await?;
        let usage: Option<UsageTotals> = diesel::sql_query(format!(
            "SELECT {USAGE_COLUMNS} FROM job_usage WHERE job_id = $1"
        ))
        .bind::<Text, _>(job_id)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(classify)?;
        Ok(usage.unwrap_or_default())
    }

    async fn spend_today(&self) -> Result<UsageTotals, StoreError> {
        let mut conn = self.conn().await?;
        let usage: Option<UsageTotals> = diesel::sql_query(format!(
            "SELECT {USAGE_COLUMNS} FROM daily_usage WHERE day = (now() AT TIME ZONE 'UTC')::date"
        ))
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(classify)?;
        Ok(usage.unwrap_or_default())
    }
}
