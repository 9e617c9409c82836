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
use crate::console::{self, Console, inflight::InFlight};
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
use crate::store::migrate::{self, MigrateError};
use crate::store::schema_check::SchemaError;
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
    #[error("cannot set up the console: {0}")]
    Console(#[source] console::ConsoleError),
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
    let console = console::Slot::new(&config.console.path_prefix);

    let addr = config.server.listen;
    let state = server::State {
        metrics: metrics.clone(),
        health: health.clone(),
        console: console.clone(),
    };
    let server = server::start(addr, state)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;

    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    let result = async {
        let (handler, store): (Arc<dyn Handler>, Option<Arc<PgStore>>) = match mode {
            Mode::DiagnosticHold(hold) => (Arc::new(HoldHandler::new(hold)), None),
            Mode::Pipeline => {
                let store =
                    open_store(&config, &health, &metrics, &background, &background_stop).await?;
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
                    store.clone() as Arc<dyn Store>,
                    cache,
                    generator,
                    metrics.clone(),
                    pipeline::Settings::from_config(&config),
                );
                (Arc::new(pipeline), Some(store))
            }
        };
        // The console needs the database; without it (diagnostic mode) its paths answer 503.
        let in_flight = InFlight::new(replica_name(&config));
        let handler: Arc<dyn Handler> = match &store {
            Some(_) => Arc::new(in_flight.track(handler)),
            None => handler,
        };
        let deps = Deps {
            handler,
            console: store
                .clone()
                .map(|store| (console.clone(), (*store).clone(), in_flight)),
            store: store.map(|s| s as Arc<dyn Store>),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        consume(&config, &shutdown, deps, &background, &background_stop).await
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
/// task that keeps the "database" readiness check and the pool gauges current.
async fn open_store(
    config: &Config,
    health: &Health,
    metrics: &Arc<Metrics>,
    background: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Arc<PgStore>, AppError> {
    let check = health.check("database", true);
    if config.database.migrate_on_start {
        migrate::migrate(&config.database)
            .await
            .map_err(AppError::Migrate)?;
    }
    let store = PgStore::connect(&config.database).map_err(AppError::Database)?;
    store.check_schema().await.map_err(AppError::Schema)?;
    let store = Arc::new(store);
    background.spawn(watch_database(
        store.clone(),
        check,
        metrics.clone(),
        stop.clone(),
    ));
    Ok(store)
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
    /// Where to install the console once the queue is open, with what it reads.
    console: Option<(console::Slot, PgStore, InFlight)>,
}

/// `console.replica`, else the host name.
fn replica_name(config: &Config) -> String {
    if config.console.replica.is_empty() {
        console::inflight::host_name()
    } else {
        config.console.replica.clone()
    }
}

async fn consume(
    config: &Config,
    shutdown: &CancellationToken,
    deps: Deps,
    background: &TaskTracker,
    background_stop: &CancellationToken,
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
    let queue = Arc::new(queue);
    if let Some((slot, store, in_flight)) = deps.console {
        let console = Console::new(
            config,
            store,
            queue.clone(),
            deps.metrics.clone(),
            in_flight,
        )
        .map_err(AppError::Console)?;
        console.spawn_background(background, background_stop);
        slot.install(console);
    }
    let queue: Arc<dyn Queue> = queue;
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
