//! Embedded migrations of the daemon's own schema, applied under a PostgreSQL advisory lock.
//!
//! The daemon's tables and diesel's migrations table live in their own schema
//! (`database.schema`, default `profile_worker`), which the API's Alembic never sees. Beside the
//! API ([`Mode::Shared`], the default) `migrate` checks the API's tables and never creates or
//! alters them: a missing table or column stops it with the advice to upgrade the API's schema
//! first. [`Mode::Standalone`] also creates stand-ins of the API's tables, for a database without
//! the API (development, tests, the demo); it refuses a database that has `alembic_version`.
//! See docs/decisions.md, "Own schema".

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::connection::use_schema;
use super::schema_check::{self, SchemaError};

/// The `migrations/` directory (the daemon's own tables only), compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Stand-ins of the API's tables for [`Mode::Standalone`].
const STANDALONE_SQL: &str = include_str!("standalone.sql");

/// Key of the session advisory lock that serialises concurrent `migrate` runs (any replica,
/// any host): the second run waits, then finds nothing pending.
pub const MIGRATION_LOCK_KEY: i64 = 0x7072_6f66_696c_6577; // "profilew"

/// Whose tables `migrate` may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Beside the API: only the daemon's schema; the API's tables must already be there.
    Shared,
    /// No API: also create the domain tables (`migrate --standalone`).
    Standalone,
}

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] diesel::ConnectionError),
    #[error("cannot take the migration lock: {0}")]
    Lock(#[source] diesel::result::Error),
    #[error(
        "refusing --standalone: the API's Alembic manages this database (alembic_version exists); \
         run `profile-worker migrate` without --standalone"
    )]
    StandaloneBesideApi,
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot prepare schema {schema}: {source}")]
    Prepare {
        schema: String,
        #[source]
        source: diesel::result::Error,
    },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("migration task panicked or was cancelled: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Applies every pending migration of the daemon's schema `schema` to the database at `url` and
/// returns the versions applied (empty when the schema was already current).
///
/// Holds a session-level advisory lock throughout, so concurrent runs from several replicas are
/// safe: they queue on the lock. diesel's harness is synchronous and runs on a blocking thread.
pub async fn run_migrations(
    url: &str,
    schema: &str,
    mode: Mode,
) -> Result<Vec<String>, MigrateError> {
    let mut conn = super::tls::establish(url)
        .await
        .map_err(MigrateError::Connect)?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await
        .map_err(MigrateError::Lock)?;
    // An early return drops the connection, which ends the session and releases the lock.
    prepare(&mut conn, schema, mode).await?;
    tokio::task::spawn_blocking(move || apply(conn))
        .await
        .map_err(MigrateError::Task)?
}

/// Everything before diesel's harness: the mode's checks, the stand-in tables, the daemon's
/// schema, an older install's migrations table moved into it, and the search path.
async fn prepare(
    conn: &mut AsyncPgConnection,
    schema: &str,
    mode: Mode,
) -> Result<(), MigrateError> {
    let prepare_error = |source| MigrateError::Prepare {
        schema: schema.to_owned(),
        source,
    };
    if mode == Mode::Standalone {
        if schema_check::has_alembic(conn)
            .await
            .map_err(SchemaError::from)?
        {
            return Err(MigrateError::StandaloneBesideApi);
        }
        conn.batch_execute(STANDALONE_SQL)
            .await
            .map_err(prepare_error)?;
    }
    schema_check::check_api(conn).await?;

    diesel::sql_query(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    ))
    .execute(conn)
    .await
    .map_err(prepare_error)?;
    // Before the daemon had its own schema, diesel kept its table next to the API's; moving it
    // keeps the record of what is applied, and migration 000003 then moves the tables.
    #[derive(diesel::QueryableByName)]
    struct Legacy {
        #[diesel(sql_type = Nullable<Text>)]
        old: Option<String>,
    }
    let legacy: Legacy = diesel::sql_query(
        "SELECT CASE WHEN to_regclass(format('%I.__diesel_schema_migrations', $1::text)) IS NULL \
                THEN to_regclass('__diesel_schema_migrations')::text END AS old",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)
    .await
    .map_err(prepare_error)?;
    if let Some(old) = legacy.old {
        tracing::info!(from = %old, to = %schema, "moving diesel's migrations table");
        diesel::sql_query(format!(
            "ALTER TABLE {old} SET SCHEMA {}",
            quote_ident(schema)
        ))
        .execute(conn)
        .await
        .map_err(prepare_error)?;
    }
    use_schema(conn, schema).await.map_err(prepare_error)
}

fn apply(conn: AsyncPgConnection) -> Result<Vec<String>, MigrateError> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| MigrateError::Migration(e.to_string()));
    // Closing the connection releases the lock anyway; unlocking explicitly keeps a pooled or
    // long-lived session from holding it.
    let unlock =
        diesel::sql_query("SELECT pg_advisory_unlock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY);
    let _ = diesel::RunQueryDsl::execute(unlock, &mut conn);
    applied
}

/// `"name"` with inner quotes doubled, as PostgreSQL's `quote_ident` (always quoted).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `migrate` subcommand: applies pending migrations to `database.url` and reports what it did.
pub async fn migrate(
    config: &crate::config::DatabaseConfig,
    mode: Mode,
) -> Result<Vec<String>, MigrateError> {
    let applied = run_migrations(config.url.expose(), &config.schema, mode).await?;
    if applied.is_empty() {
        tracing::info!(schema = %config.schema, "database schema is up to date");
    } else {
        tracing::info!(schema = %config.schema, migrations = ?applied, "applied migrations");
    }
    Ok(applied)
}
