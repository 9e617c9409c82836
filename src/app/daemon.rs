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
    let store = app.checked_store().await?;
    background.spawn(watch_database(
        store.clone(),
        check,
        app.metrics().clone(),
        background_stop.clone(),
    ));
    let pipeline = Arc::new(app.pipeline(store.clone()).await?);
    let wait = Duration::from_secs(config.consumer.wait_seconds.into());
    let queue = tokio::select! {
        // Nothing has been received yet, so abandoning start-up strands no message.
        _ = shutdown.cancelled() => return Ok(()),
        q = app.queue(wait) => q?,
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
