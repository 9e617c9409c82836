//! The console's read queries: recent jobs with their Bedrock usage, and today's spend.
//!
//! Kept here rather than on the [`Store`](crate::store::Store) port: they exist for one page and
//! have no in-memory twin to keep in step. Both read the usage rollups PostgreSQL keeps
//! (`job_usage`, `daily_usage`; docs/decisions.md, "Usage rollups"), so a page of 1,000 jobs costs
//! one primary-key lookup per job instead of a sum over its generations.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Varchar};
use diesel_async::RunQueryDsl;

use crate::model::Job;
use crate::store::{PgStore, StoreError, UsageTotals};

/// A job row with its usage.
#[derive(QueryableByName)]
struct JobUsageRow {
    #[diesel(sql_type = Varchar)]
    id: String,
    #[diesel(sql_type = Varchar)]
    status: String,
    #[diesel(sql_type = Integer)]
    owner_id: i32,
    #[diesel(sql_type = Integer)]
    total_entities: i32,
    #[diesel(sql_type = Integer)]
    succeeded: i32,
    #[diesel(sql_type = Integer)]
    failed: i32,
    #[diesel(sql_type = Nullable<Text>)]
    error_log: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
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
        .map(|r| {
            let status = r
                .status
                .parse()
                .map_err(|e: String| StoreError::InvalidData(format!("job {}: {e}", r.id)))?;
            Ok((
                Job {
                    id: r.id,
                    status,
                    owner_id: r.owner_id,
                    total_entities: r.total_entities,
                    succeeded: r.succeeded,
                    failed: r.failed,
                    error_log: r.error_log,
                    completed_at: r.completed_at,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                },
                r.usage,
            ))
        })
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
