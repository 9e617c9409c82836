//! Builds every dependency from the configuration and owns start-up and shutdown order.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::server::{self, Server};

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    metrics
        .concurrency_limit
        .set(config.consumer.concurrency.into());
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

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    // The side server stays up until everything else has drained so probes and metrics keep working.
    server_stop.cancel();
    let _ = server_task.await;
    tracing::info!("stopped");
    Ok(())
}
