//! The console's read queries: recent jobs with their Bedrock usage, and today's spend.
//!
//! Kept here rather than on the [`Store`](crate::store::Store) port: they exist for one page and
//! have no in-memory twin to keep in step. Both read the usage rollups PostgreSQL keeps
//! (`job_usage`, `daily_usage`; docs/decisions.md, "Usage rollups"), so a page of 1,000 jobs costs
//! one primary-key lookup per job instead of a sum over its generations.

use diesel::sql_types::BigInt;
use diesel::{OptionalExtension, QueryableByName};
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

/// Every active job and the `limit` most recent ones, newest first, each with its usage.
const JOBS_SQL: &str = "
SELECT j.id, j.status, j.owner_id, j.total_entities, j.succeeded, j.failed, j.error_log,
       j.completed_at, j.created_at, j.updated_at,
       COALESCE(u.profiles, 0)::bigint AS profiles, COALESCE(u.calls, 0)::bigint AS calls,
       COALESCE(u.input_tokens, 0)::bigint AS input_tokens,
       COALESCE(u.output_tokens, 0)::bigint AS output_tokens,
       COALESCE(u.cost_usd, 0)::float8 AS cost_usd
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

/// Bedrock usage recorded since midnight UTC, across every job and replica.
pub async fn spend_today(store: &PgStore) -> Result<UsageTotals, StoreError> {
    let mut conn = store.conn().await?;
    let today: Option<UsageTotals> = diesel::sql_query(
        "SELECT profiles, calls, input_tokens, output_tokens, cost_usd FROM daily_usage \
         WHERE day = (now() AT TIME ZONE 'UTC')::date",
    )
    .get_result(&mut conn)
    .await
    .optional()
    .map_err(crate::store::connection::classify)?;
    Ok(today.unwrap_or_default())
}
