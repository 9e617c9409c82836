//! `PgStore`: the [`Store`] over PostgreSQL with diesel-async and a deadpool connection pool.
//!
//! The port's two sides live in [`profiles`] and [`jobs`]; sessions, the pool and error
//! classification in [`crate::store::connection`].

mod graph_rows;
mod jobs;
mod profiles;

use async_trait::async_trait;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connection::{self, classify};
use super::schema_check::{self, SchemaError};
use super::{PoolStatus, Store, StoreError};
use crate::config::DatabaseConfig;

/// The production store: a pool of `AsyncPgConnection`s, each with the configured
/// `statement_timeout`.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<AsyncPgConnection>,
    /// The daemon's own schema (`database.schema`).
    schema: String,
}

impl PgStore {
    /// Builds the pool (see [`connection::pool`]); succeeds while the database is down.
    pub fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        Ok(Self {
            pool: connection::pool(config)?,
            schema: config.schema.clone(),
        })
    }

    /// A pooled connection (also for read modules outside the port, e.g. the console).
    pub(crate) async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        connection::pooled(&self.pool).await
    }

    /// Start-up schema check (see [`schema_check::check_schema`]).
    pub async fn check_schema(&self) -> Result<(), SchemaError> {
        let mut conn = self.conn().await?;
        schema_check::check_schema(&mut conn, &self.schema).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        let s = self.pool.status();
        Some(PoolStatus {
            idle: s.available,
            in_use: s.size.saturating_sub(s.available),
            max: s.max_size,
        })
    }
}

/// The select list that sums `profile_generations` rows into a [`crate::store::UsageTotals`] (columns named as
/// its fields); discarded rows cost but are no profile.
pub const USAGE_SUMS_SQL: &str = "count(*) FILTER (WHERE NOT discarded)::int8 AS profiles, \
    COALESCE(sum(calls), 0)::int8 AS calls, \
    COALESCE(sum(input_tokens), 0)::int8 AS input_tokens, \
    COALESCE(sum(output_tokens), 0)::int8 AS output_tokens, \
    COALESCE(sum(cache_read_tokens), 0)::int8 AS cache_read_tokens, \
    COALESCE(sum(cache_write_tokens), 0)::int8 AS cache_write_tokens, \
    COALESCE(sum(cost_usd), 0)::float8 AS cost_usd, \
    COALESCE(sum(calls) FILTER (WHERE discarded), 0)::int8 AS discarded_calls, \
    COALESCE(sum(cost_usd) FILTER (WHERE discarded), 0)::float8 AS discarded_cost_usd";
