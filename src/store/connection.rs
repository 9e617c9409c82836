//! PostgreSQL sessions for every part of the store: the connection pool [`super::PgStore`] runs
//! on, the pooled-connection wait, and the sorting of diesel errors into transient and
//! rejected. [`super::migrate`] and [`super::schema_check`] use the same pieces, so none of
//! them depends on another.

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use crate::config::DatabaseConfig;

/// Longest wait for a pooled connection before the operation fails as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Builds the pool; connections are opened lazily (TLS as the URL's `sslmode` asks), so this
/// succeeds while the database is down (readiness reports it). Each new connection runs
/// `SET statement_timeout`.
pub fn pool(config: &DatabaseConfig) -> Result<Pool<AsyncPgConnection>, StoreError> {
    let timeout_ms = config.statement_timeout_ms;
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = super::tls::establish(&url).await?;
            diesel::sql_query(format!("SET statement_timeout = {timeout_ms}"))
                .execute(&mut conn)
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
