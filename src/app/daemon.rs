//! `run`: the daemon's start-up and shutdown order.
//!
//! Start-up: side server first (probes answer while the rest starts), then the database
//! (optional migrations, then the schema check — a missing column stops the daemon before it
//! touches a message), the graph cache, the generator, the queue, and finally the consumer.
//! Shutdown: the consumer stops receiving, drains and flushes its deletes; background tasks stop;
//! the side server stops last so probes and metrics work throughout the drain.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{App, AppError};
use crate::health::Check;
use crate::jobs;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::store::Store;
use crate::store::migrate::MigrateError;
use crate::store::schema_check::SchemaError;

/// How often the database readiness check and pool gauges are refreshed.
const DATABASE_CHECK: Backoff = Backoff::fixed(Duration::from_secs(10));

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(app: &App, shutdown: CancellationToken) -> Result<(), AppError> {
    // Every required check exists before the side server answers: /ready stays 503 until each
    // one has been registered by its component and passes.
    app.health().expect("database");
    app.health().expect("queue");
    let server = app.serve().await?;
    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    let result = serve_queue(app, &shutdown, &background, &background_stop).await;
    background_stop.cancel();
    background.close();
    background.wait().await;
    server.stop().await;
    tracing::info!("stopped");
    result
}

async fn serve_queue(
    app: &App,
    shutdown: &CancellationToken,
    background: &TaskTracker,
    background_stop: &CancellationToken,
) -> Result<(), AppError> {
    let config = app.config();
    let check = app.health().check("database", true);
    let Some(store) = until_reachable("database", &check, shutdown, || app.checked_store()).await?
    else {
        return Ok(());
    };
    background.spawn(watch_database(
        store.clone(),
        check,
        app.metrics().clone(),
        background_stop.clone(),
    ));
    let pipeline = Arc::new(app.pipeline(store.clone()).await?);
    let wait = Duration::from_secs(config.consumer.wait_seconds.into());
    // Nothing has been received yet, so abandoning start-up strands no message.
    let queue_check = app.health().check("queue", true);
    let Some(queue) = until_reachable("queue", &queue_check, shutdown, || app.queue(wait)).await?
    else {
        return Ok(());
    };
    let rescue = jobs::spawn_rescue(
        store,
        Some(queue.clone()),
        &config.jobs,
        background_stop.clone(),
    );
    let handler = app.console(pipeline, background, background_stop)?;
    app.consumer(queue, handler).run(shutdown.clone()).await;
    background_stop.cancel();
    if let Some(task) = rescue {
        let _ = task.await;
    }
    Ok(())
}

/// Dependencies down at start-up are waited for: from 1 s, doubling to 30 s.
const STARTUP_WAIT: Backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));

impl AppError {
    /// The dependency is out of reach (connection refused, no pooled connection, queue endpoint
    /// unreachable): worth waiting for. Configuration and schema errors are not.
    fn is_unreachable(&self) -> bool {
        match self {
            AppError::Migrate(MigrateError::Connect(_)) => true,
            AppError::Schema(SchemaError::Store(e)) | AppError::Database(e) => e.is_unavailable(),
            AppError::Queue(e) => e.is_transient(),
            AppError::Secret(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

/// Runs `step` until it succeeds, fails for a reason other than an unreachable dependency, or
/// shutdown comes (`None`): a database or queue down at start-up makes the daemon wait, not
/// ready, instead of exiting into a crash loop.
async fn until_reachable<T, F, Fut>(
    what: &str,
    check: &Check,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<Option<T>, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    let mut waits = STARTUP_WAIT.steps();
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            outcome = step() => outcome,
        };
        match outcome {
            Ok(value) => {
                if waits.count() > 0 {
                    tracing::info!(dependency = what, "reachable; starting");
                }
                return Ok(Some(value));
            }
            Err(err) if err.is_unreachable() => {
                let delay = waits.next_delay();
                check.set(false, format!("unreachable at start-up: {err}"));
                tracing::warn!(
                    dependency = what,
                    error = %err,
                    attempt = waits.count(),
                    retry_in_ms = delay.as_millis() as u64,
                    "dependency unreachable at start-up; waiting (not ready)"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Keeps the "database" readiness check and the pool gauges current.
async fn watch_database(
    store: Arc<dyn Store>,
    check: Check,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut waits = DATABASE_CHECK.steps();
    loop {
        match store.ping().await {
            Ok(()) => check.set(true, "ok"),
            Err(err) => check.set(false, err.to_string()),
        }
        if let Some(pool) = store.pool_status() {
            let gauge = &metrics.db_pool_connections;
            gauge.with_label_values(&["idle"]).set(pool.idle as i64);
            gauge.with_label_values(&["in_use"]).set(pool.in_use as i64);
            metrics.db_pool_max_connections.set(pool.max as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(waits.next_delay()) => {}
        }
    }
}
