//! The console's job query: active and recent jobs with their Bedrock usage.
//!
//! Kept here rather than on the [`Store`](crate::store::Store) port: it exists for one page and
//! has no in-memory twin to keep in step. Usage comes from the rollup PostgreSQL keeps
//! (`job_usage`; docs/decisions.md, "Usage rollups"), so a page of 1,000 jobs costs one
//! primary-key lookup per job instead of a sum over its generations. Today's spend is the store's
//! [`JobStore::spend_today`](crate::store::JobStore::spend_today).

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

use crate::model::Job;
use crate::store::postgres::JobRow;
use crate::store::{PgStore, StoreError, UsageTotals};

/// A job row with its usage.
#[derive(QueryableByName)]
struct JobUsageRow {
    #[diesel(embed)]
    job: JobRow,
    #[diesel(embed)]
    usage: UsageTotals,
}

/// Every active job and the `limit` most recent ones, newest first, each with its usage (zero for
/// a job without recorded generations).
const JOBS_SQL: &str = "
SELECT j.id, j.status, j.owner_id, j.total_entities, j.succeeded, j.failed, j.error_log,
       j.completed_at, j.created_at, j.updated_at,
       COALESCE(u.profiles, 0) AS profiles, COALESCE(u.calls, 0) AS calls,
       COALESCE(u.input_tokens, 0) AS input_tokens,
       COALESCE(u.output_tokens, 0) AS output_tokens,
       COALESCE(u.cache_read_tokens, 0) AS cache_read_tokens,
       COALESCE(u.cache_write_tokens, 0) AS cache_write_tokens,
       COALESCE(u.cost_usd, 0) AS cost_usd,
       COALESCE(u.discarded_calls, 0) AS discarded_calls,
       COALESCE(u.discarded_cost_usd, 0) AS discarded_cost_usd
FROM (
    SELECT * FROM profile_generation_jobs WHERE status IN ('pending', 'in_progress')
    UNION
    (SELECT * FROM profile_generation_jobs ORDER BY created_at DESC LIMIT $1)
) j
LEFT JOIN job_usage u ON u.job_id = j.id
ORDER BY j.created_at DESC, j.id";

/// Active and recent jobs with their usage (see [`JOBS_SQL`]).
pub async fn jobs(store: &PgStore, limit: i64) -> Result<Vec<(Job, UsageTotals)>, StoreError> {
    let mut conn = store.conn().await?;
    let rows: Vec<JobUsageRow> = diesel::sql_query(JOBS_SQL)
        .bind::<BigInt, _>(limit)
        .load(&mut conn)
        .await
        .map_err(crate::store::connection::classify)?;
    rows.into_iter()
        .map(|r| Ok((Job::try_from(r.job)?, r.usage)))
        .collect()
}
