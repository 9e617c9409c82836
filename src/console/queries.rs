//! The console's read queries: recent jobs with their Bedrock usage, and today's spend.
//!
//! Kept here rather than on the [`Store`](crate::store::Store) port: they exist for one page,
//! run on the same pool as everything else (one connection, a few milliseconds each) and have no
//! in-memory twin to keep in step.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamptz, Varchar};
use diesel_async::RunQueryDsl;

use crate::model::Job;
use crate::store::postgres::USAGE_SUMS_SQL;
use crate::store::{PgStore, StoreError, UsageTotals};

/// A job row with the usage summed over its `profile_generations` rows.
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
    #[diesel(sql_type = BigInt)]
    profiles: i64,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = BigInt)]
    output_tokens: i64,
    #[diesel(sql_type = BigInt)]
    cache_read_tokens: i64,
    #[diesel(sql_type = BigInt)]
    cache_write_tokens: i64,
    #[diesel(sql_type = Double)]
    cost_usd: f64,
    #[diesel(sql_type = BigInt)]
    discarded_calls: i64,
    #[diesel(sql_type = Double)]
    discarded_cost_usd: f64,
}

/// Every active job and the `limit` most recent ones, newest first, each with its usage.
fn jobs_sql() -> String {
    format!(
        "
SELECT j.id, j.status, j.owner_id, j.total_entities, j.succeeded, j.failed, j.error_log,
       j.completed_at, j.created_at, j.updated_at, u.*
FROM (
    SELECT * FROM profile_generation_jobs WHERE status IN ('pending', 'in_progress')
    UNION
    (SELECT * FROM profile_generation_jobs ORDER BY created_at DESC LIMIT $1)
) j
CROSS JOIN LATERAL (
    SELECT {USAGE_SUMS_SQL} FROM profile_generations g WHERE g.job_id = j.id
) u
ORDER BY j.created_at DESC, j.id"
    )
}

/// Active and recent jobs with their usage (see [`jobs_sql`]).
pub async fn jobs(store: &PgStore, limit: i64) -> Result<Vec<(Job, UsageTotals)>, StoreError> {
    let mut conn = store.conn().await?;
    let rows: Vec<JobUsageRow> = diesel::sql_query(jobs_sql())
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
                UsageTotals {
                    profiles: r.profiles,
                    calls: r.calls,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cache_read_tokens: r.cache_read_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                    cost_usd: r.cost_usd,
                    discarded_calls: r.discarded_calls,
                    discarded_cost_usd: r.discarded_cost_usd,
                },
            ))
        })
        .collect()
}

/// Bedrock usage recorded since midnight UTC, across every job and replica.
pub async fn spend_today(store: &PgStore) -> Result<UsageTotals, StoreError> {
    crate::store::JobStore::spend_today(store).await
}
