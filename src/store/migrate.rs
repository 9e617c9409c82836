//! Embedded migrations, applied under a PostgreSQL advisory lock off the async threads.
//!
//! The migrations create the API's domain tables only `IF NOT EXISTS` (a database built by the
//! original's Alembic is left as it is) and always create the daemon's own tables (design D10).

use diesel::sql_types::BigInt;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The `migrations/` directory, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the session advisory lock that serialises concurrent `migrate` runs (any replica,
/// any host): the second run waits, then finds nothing pending.
pub const MIGRATION_LOCK_KEY: i64 = 0x7072_6f66_696c_6577; // "profilew"

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] diesel::ConnectionError),
    #[error("cannot take the migration lock: {0}")]
    Lock(#[source] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("migration task panicked or was cancelled: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Applies every pending migration to the database at `url` and returns the versions applied
/// (empty when the schema was already current).
///
/// Runs on a blocking thread (diesel's migration harness is synchronous) holding a session-level
/// advisory lock, so concurrent runs from several replicas are safe: they queue on the lock.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, MigrateError> {
    // Connect on the async side (TLS as the URL's sslmode asks), migrate on a blocking thread.
    let conn = super::tls::establish(url)
        .await
        .map_err(MigrateError::Connect)?;
    tokio::task::spawn_blocking(move || migrate_blocking(conn))
        .await
        .map_err(MigrateError::Task)?
}

fn migrate_blocking(conn: AsyncPgConnection) -> Result<Vec<String>, MigrateError> {
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    let lock =
        diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY);
    diesel::RunQueryDsl::execute(lock, &mut conn).map_err(MigrateError::Lock)?;
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

/// `migrate` subcommand: applies pending migrations to `database.url` and reports what it did.
pub async fn migrate(config: &crate::config::DatabaseConfig) -> Result<Vec<String>, MigrateError> {
    let applied = run_migrations(config.url.expose()).await?;
    if applied.is_empty() {
        tracing::info!("database schema is up to date");
    } else {
        tracing::info!(migrations = ?applied, "applied migrations");
    }
    Ok(applied)
}
