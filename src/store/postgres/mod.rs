//! `PgStore`: the [`Store`] over PostgreSQL with diesel-async and a deadpool connection pool.
//!
//! The port's two sides live in [`profiles`] and [`jobs`]; sessions, the pool and error
//! classification in [`crate::store::connection`].

mod graph_rows;
mod jobs;
mod profiles;

pub(crate) use jobs::JobRow;

use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connection::{self, classify};
use super::schema_check::{self, SchemaError};
use super::{PoolStatus, Store, StoreError};
use crate::config::DatabaseConfig;
use crate::store::credentials::DatabaseSecret;

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
        Self::connect_with_secret(config, None)
    }

    /// [`PgStore::connect`] with credentials that follow a Secrets Manager secret.
    pub fn connect_with_secret(
        config: &DatabaseConfig,
        secret: Option<Arc<DatabaseSecret>>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pool: connection::pool(config, secret)?,
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

/// The columns of the usage rollups (`job_usage`, `daily_usage`), named as the fields of
/// [`crate::store::UsageTotals`] (docs/decisions.md, "Usage rollups").
pub const USAGE_COLUMNS: &str = "profiles, calls, input_tokens, output_tokens, cache_read_tokens, \
    cache_write_tokens, cost_usd, discarded_calls, discarded_cost_usd";
