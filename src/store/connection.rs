//! PostgreSQL sessions for every part of the store: the connection pool [`super::PgStore`] runs
//! on, the session's search path, the pooled-connection wait, and the sorting of diesel errors
//! into transient and rejected. [`super::migrate`] and [`super::schema_check`] use the same pieces, so none of
//! them depends on another.

use std::sync::Arc;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Text;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::credentials::DatabaseSecret;
use crate::config::DatabaseConfig;

/// Longest wait for a pooled connection before the operation fails as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Puts the daemon's schema in front of the session's search path: its own tables
/// (`profile_generation_job_items`, `profile_generations`, diesel's migrations table) resolve
/// there, and the API's tables through the path the database or role already sets (usually
/// `public`). The schema name is bound, never spliced into SQL.
pub async fn use_schema(
    conn: &mut AsyncPgConnection,
    schema: &str,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "SELECT set_config('search_path', quote_ident($1) || ', ' || current_setting('search_path'), \
         false)",
    )
    .bind::<Text, _>(schema)
    .execute(conn)
    .await
    .map(drop)
}

/// Builds the pool; connections are opened lazily (TLS as the URL's `sslmode` asks), so this
/// succeeds while the database is down (readiness reports it). Each new connection runs
/// `SET statement_timeout` and [`use_schema`]. With a `secret`, connections use its latest
/// credentials, and a refused login re-reads it once (a rotation) before the attempt fails.
pub fn pool(
    config: &DatabaseConfig,
    secret: Option<Arc<DatabaseSecret>>,
) -> Result<Pool<AsyncPgConnection>, StoreError> {
    let timeout_ms = config.statement_timeout_ms;
    let schema = config.schema.clone();
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let schema = schema.clone();
        let secret = secret.clone();
        Box::pin(async move {
            let mut conn = match &secret {
                None => super::tls::establish(&url).await?,
                Some(secret) => match super::tls::connect(secret.url().expose()).await {
                    Err(failure) if failure.is_rejected_login() && secret.refresh().await => {
                        super::tls::establish(secret.url().expose()).await?
                    }
                    other => other?,
                },
            };
            diesel::sql_query(format!("SET statement_timeout = {timeout_ms}"))
                .execute(&mut conn)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            use_schema(&mut conn, &schema)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        config.url.expose(),
        manager_config,
    );
    Pool::builder(manager)
        .max_size(config.pool_size as usize)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot build the pool: {e}")))
}

/// A pooled connection, or [`StoreError::Unavailable`] after [`POOL_WAIT`].
pub async fn pooled(
    pool: &Pool<AsyncPgConnection>,
) -> Result<Object<AsyncPgConnection>, StoreError> {
    match tokio::time::timeout(POOL_WAIT, pool.get()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no pooled connection within {}s",
            POOL_WAIT.as_secs()
        ))),
    }
}

/// Sorts a diesel error into transient (retry later) and rejected (permanent).
///
/// diesel only names a few SQLSTATEs; the other transient ones (deadlock, statement timeout,
/// server shutting down, too many connections) are recognised by PostgreSQL's message text.
pub fn classify(err: DieselError) -> StoreError {
    let transient = match &err {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::ReadOnlyTransaction => true,
            DatabaseErrorKind::Unknown => {
                let msg = info.message();
                [
                    "deadlock detected",
                    "canceling statement due to statement timeout",
                    "canceling statement due to lock timeout",
                    "terminating connection",
                    "the database system is",
                    "too many connections",
                    "remaining connection slots",
                    "could not serialize access",
                ]
                .iter()
                .any(|needle| msg.contains(needle))
            }
            _ => false,
        },
        DieselError::BrokenTransactionManager => true,
        _ => false,
    };
    if transient {
        StoreError::Transient(err)
    } else {
        StoreError::Rejected(err)
    }
}
