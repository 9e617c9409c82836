//! Builds every dependency from the configuration and owns start-up and shutdown order.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{Consumer, ConsumerSettings, Handler};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::queue::{QueueError, SqsQueue};
use crate::server::{self, Server};

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the queue: {0}")]
    Queue(#[source] QueueError),
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
///
/// `handler` processes each message (the profile pipeline in production). Order: side server up
/// first (probes answer during start-up), then the queue, then the consumer; on shutdown the
/// consumer stops receiving, drains and flushes its deletes, and the side server stops last so
/// probes and metrics keep working throughout the drain.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    handler: Arc<dyn Handler>,
) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();

    let addr = config.server.listen;
    let server = Server::bind(
        addr,
        server::State {
            metrics: metrics.clone(),
            health: health.clone(),
        },
    )
    .await
    .map_err(|source| AppError::Bind { addr, source })?;
    tracing::info!(addr = %server.local_addr(), version = crate::build_info::VERSION, "side server listening");
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(server.serve(server_stop.clone()));

    let result = consume(&config, &shutdown, handler, metrics, health).await;

    server_stop.cancel();
    let _ = server_task.await;
    tracing::info!("stopped");
    result
}

async fn consume(
    config: &Config,
    shutdown: &CancellationToken,
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    health: Health,
) -> Result<(), AppError> {
    let wait = Duration::from_secs(config.consumer.wait_seconds.into());
    let queue = tokio::select! {
        // Nothing has been received yet, so abandoning start-up strands no message.
        _ = shutdown.cancelled() => return Ok(()),
        q = SqsQueue::connect(&config.queue, &config.aws, wait) => q.map_err(AppError::Queue)?,
    };
    tracing::info!(
        queue = queue.url(),
        dead_letter = queue.dead_letter_url().unwrap_or("none"),
        "queue resolved"
    );
    let consumer = Consumer::new(
        Arc::new(queue),
        handler,
        ConsumerSettings::from_config(config),
        metrics,
        health,
    );
    consumer.run(shutdown.clone()).await;
    Ok(())
}
