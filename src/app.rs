//! Builds every dependency from the configuration and owns start-up and shutdown order.
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

use crate::cache::{CacheError, GraphCache};
use crate::config::{Config, GeneratorBackend};
use crate::consumer::diagnostic::HoldHandler;
use crate::consumer::{Consumer, ConsumerSettings, Handler};
use crate::generate::Generator;
use crate::generate::bedrock::BedrockGenerator;
use crate::generate::offline::OfflineGenerator;
use crate::health::{Check, Health};
use crate::jobs;
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use crate::queue::{Queue, QueueError, SqsQueue};
use crate::retry::Backoff;
use crate::server;
use crate::store::migrate::{self, MigrateError, SchemaError};
use crate::store::{PgStore, Store, StoreError};

/// How often the database readiness check and pool gauges are refreshed.
const DATABASE_CHECK: Backoff = Backoff::fixed(Duration::from_secs(10));

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
    #[error("cannot open the database: {0}")]
    Database(#[source] StoreError),
    #[error("migrations failed: {0}")]
    Migrate(#[source] MigrateError),
    #[error("database schema check failed: {0}")]
    Schema(#[source] SchemaError),
    #[error("cannot set up the graph cache: {0}")]
    Cache(#[source] CacheError),
}

/// Which handler the consumer runs.
pub enum Mode {
    /// The profile pipeline (production).
    Pipeline,
    /// Hold each message for the given time and report it done, opening no database; a hidden
    /// diagnostic for exercising the consumer end to end (`--diagnostic-hold-ms`).
    DiagnosticHold(Duration),
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken, mode: Mode) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();

    let addr = config.server.listen;
    let state = server::State {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let server = server::start(addr, state)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;

    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    let result = async {
        let (handler, store): (Arc<dyn Handler>, Option<Arc<dyn Store>>) = match mode {
            Mode::DiagnosticHold(hold) => (Arc::new(HoldHandler::new(hold)), None),
            Mode::Pipeline => {
                let Some(store) = open_store(
                    &config,
                    &health,
                    &metrics,
                    &background,
                    &background_stop,
                    &shutdown,
                )
                .await?
                else {
                    return Ok(());
                };
                let cache = GraphCache::new(&config.cache, metrics.clone(), &health)
                    .map_err(AppError::Cache)?;
                if !config.cache.redis_url.is_empty() && !cache.ping().await {
                    tracing::warn!(
                        "Redis unreachable at start-up; building graphs without it until it answers"
                    );
                }
                let generator: Arc<dyn Generator> = match config.generator.backend {
                    GeneratorBackend::Bedrock => {
                        Arc::new(BedrockGenerator::from_env(&config, metrics.clone()).await)
                    }
                    GeneratorBackend::Offline => Arc::new(OfflineGenerator::from_config(
                        &config.generator,
                        metrics.clone(),
                    )),
                };
                let pipeline = Pipeline::new(
                    store.clone(),
                    cache,
                    generator,
                    metrics.clone(),
                    pipeline::Settings::from_config(&config),
                );
                (Arc::new(pipeline), Some(store))
            }
        };
        let deps = Deps {
            handler,
            store,
            metrics: metrics.clone(),
            health: health.clone(),
        };
        consume(&config, &shutdown, deps, &background_stop).await
    }
    .await;

    background_stop.cancel();
    background.close();
    background.wait().await;
    server.stop().await;
    tracing::info!("stopped");
    result
}

/// Opens the database, applies migrations when configured, checks the schema, and starts the
/// task that keeps the "database" readiness check and the pool gauges current. A database that
/// cannot be reached is waited for (not ready, retrying) rather than exiting into a crash loop;
/// `None` when shutdown came first. A wrong schema or a failed migration still stops start-up.
async fn open_store(
    config: &Config,
    health: &Health,
    metrics: &Arc<Metrics>,
    background: &TaskTracker,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Store>>, AppError> {
    let check = health.check("database", true);
    let store = PgStore::connect(&config.database).map_err(AppError::Database)?;
    let ready = until_reachable("database", &check, shutdown, || async {
        if config.database.migrate_on_start {
            match migrate::migrate(&config.database).await {
                Err(MigrateError::Connect(e)) => {
                    return Err(Startup::Unreachable(e.to_string()));
                }
                Err(e) => return Err(Startup::Fatal(AppError::Migrate(e))),
                Ok(_) => {}
            }
        }
        match store.check_schema().await {
            Err(SchemaError::Store(e)) if e.is_unavailable() => {
                Err(Startup::Unreachable(e.to_string()))
            }
            Err(e) => Err(Startup::Fatal(AppError::Schema(e))),
            Ok(()) => Ok(()),
        }
    })
    .await?;
    if ready.is_none() {
        return Ok(None);
    }
    let store = Arc::new(store);
    background.spawn(watch_database(
        store.clone(),
        check,
        metrics.clone(),
        stop.clone(),
    ));
    Ok(Some(store))
}

/// Why one start-up step did not complete.
enum Startup {
    /// The dependency is out of reach: wait and try again.
    Unreachable(String),
    /// Configuration or schema error: stop.
    Fatal(AppError),
}

/// Dependencies down at start-up are waited for: from 1 s, doubling to 30 s.
const STARTUP_WAIT: Backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));

/// Runs `step` until it succeeds, fails fatally, or shutdown comes (`None`), keeping `check`
/// failing with the cause meanwhile.
async fn until_reachable<T, F, Fut>(
    what: &str,
    check: &Check,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<Option<T>, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Startup>>,
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
            Err(Startup::Fatal(err)) => return Err(err),
            Err(Startup::Unreachable(cause)) => {
                let delay = waits.next_delay();
                check.set(false, format!("unreachable at start-up: {cause}"));
                tracing::warn!(
                    dependency = what,
                    %cause,
                    attempt = waits.count(),
                    retry_in_ms = delay.as_millis() as u64,
                    "dependency unreachable at start-up; waiting (not ready)"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn watch_database(
    store: Arc<PgStore>,
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
            gauge.with_label_values(&["max"]).set(pool.max as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(waits.next_delay()) => {}
        }
    }
}

/// What the consumer stage needs from start-up.
struct Deps {
    handler: Arc<dyn Handler>,
    /// The database, when the handler uses one (enables the stuck-job rescue).
    store: Option<Arc<dyn Store>>,
    metrics: Arc<Metrics>,
    health: Health,
}

async fn consume(
    config: &Config,
    shutdown: &CancellationToken,
    deps: Deps,
    background_stop: &CancellationToken,
) -> Result<(), AppError> {
    let wait = Duration::from_secs(config.consumer.wait_seconds.into());
    // Nothing has been received yet, so abandoning start-up strands no message.
    let check = deps.health.check("queue", true);
    let queue = until_reachable("queue", &check, shutdown, || async {
        SqsQueue::connect(&config.queue, &config.aws, wait)
            .await
            .map_err(|e| match e {
                QueueError::Transient(cause) => Startup::Unreachable(cause),
                other => Startup::Fatal(AppError::Queue(other)),
            })
    })
    .await?;
    let Some(queue) = queue else {
        return Ok(());
    };
    tracing::info!(
        queue = queue.url(),
        dead_letter = queue.dead_letter_url().unwrap_or("none"),
        "queue resolved"
    );
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let rescue = deps.store.map(|store| {
        jobs::spawn_rescue(
            store,
            Some(queue.clone()),
            &config.jobs,
            background_stop.clone(),
        )
    });
    let consumer = Consumer::new(
        queue,
        deps.handler,
        ConsumerSettings::from_config(config),
        deps.metrics,
        deps.health,
    );
    consumer.run(shutdown.clone()).await;
    background_stop.cancel();
    if let Some(Some(task)) = rescue {
        let _ = task.await;
    }
    Ok(())
}
