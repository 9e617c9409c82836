//! The composition root: the one place that turns configuration into adapters and wires them
//! into the consumer, the pipeline and the operator commands.
//!
//! Every subcommand asks an [`App`] for what it needs: `run` for the whole daemon
//! ([`daemon::run`]), `demo` for the same wiring over the embedded adapters and the bundled
//! sample collection, `enqueue`/`status`/`cancel`/`jobs` for a store and a queue. Which adapter
//! serves each port is the [`Adapters`] choice; everything else comes from the configuration.
//! [`commands`] is what each subcommand does with it, and [`exit`] owns the exit statuses.

pub mod commands;
pub mod daemon;
pub mod exit;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::SdkConfig;

use diesel_async::SimpleAsyncConnection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aws;
use crate::budget::{Budget, BudgetError, BudgetedGenerator};
use crate::cache::{CacheError, GraphCache, KEY_PREFIX, MemoryCache};
use crate::config::DatabaseConfig;
use crate::config::{Config, GeneratorBackend};
use crate::console::{self, Console, inflight::InFlight};
use crate::consumer::{Consumer, ConsumerSettings, Handler};
use crate::demo::sample::Sample;
use crate::generate::Generator;
use crate::generate::bedrock::BedrockGenerator;
use crate::generate::offline::OfflineGenerator;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use crate::queue::{MemoryQueue, Queue, QueueError, SqsQueue};
use crate::server;
use crate::store::credentials::{DatabaseSecret, SecretError};
use crate::store::migrate::{self, MigrateError};
use crate::store::schema_check::SchemaError;
use crate::store::{MemoryStore, PgStore, ProfileStore, Store, StoreError};

pub use daemon::run;

/// Deliveries a message gets on the in-memory queue before it is dead-lettered.
const MEMORY_MAX_RECEIVES: u32 = 5;

/// Why the application could not be wired or stopped abnormally.
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
    #[error("{0}")]
    Secret(#[source] SecretError),
    #[error("migrations failed: {0}")]
    Migrate(#[source] MigrateError),
    #[error("database schema check failed: {0}")]
    Schema(#[source] SchemaError),
    #[error("cannot set up the graph cache: {0}")]
    Cache(#[source] CacheError),
    #[error("cannot set up the Bedrock budget: {0}")]
    Budget(#[source] BudgetError),
    #[error("cannot load the sample collection: {0}")]
    Sample(String),
    #[error("cannot set up the console: {0}")]
    Console(#[source] console::ConsoleError),
    #[error(
        "refusing to run the demo on a database that {0}: the demo writes sample entities and \
         offline profiles; use a throw-away database, or pass --allow-shared-database"
    )]
    SharedDatabase(String),
}

/// Which adapter serves the `Store` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAdapter {
    /// PostgreSQL at `database.url`, migrated first when `database.migrate_on_start` is set.
    Postgres,
    /// PostgreSQL at `database.url`, always migrated, and loaded with the bundled sample when
    /// it holds no collection (the demo against a real database). A database the API manages or
    /// one holding profiles is refused unless `allow_shared_database`.
    PostgresWithSample { allow_shared_database: bool },
    /// The in-memory store holding the bundled sample collection.
    Sample,
}

/// Which adapter serves the `Queue` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAdapter {
    /// The SQS queue of the `queue` section.
    Sqs,
    /// An in-memory queue with a dead-letter queue after a few receives.
    Memory,
}

/// Which adapter serves the graph cache's shared layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedCacheAdapter {
    /// Redis at `cache.redis_url`; none when it is empty (every miss builds).
    Redis,
    /// An in-process shared layer (the embedded demo: the same two layers as production).
    Memory,
}

/// The adapter behind each port that has more than one. The generator follows
/// `generator.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapters {
    pub store: StoreAdapter,
    pub queue: QueueAdapter,
    pub shared_cache: SharedCacheAdapter,
}

impl Adapters {
    /// Production: PostgreSQL, SQS and Redis.
    pub const PRODUCTION: Adapters = Adapters {
        store: StoreAdapter::Postgres,
        queue: QueueAdapter::Sqs,
        shared_cache: SharedCacheAdapter::Redis,
    };
}

/// The configuration, the chosen adapters and the process-wide metrics and health state.
pub struct App {
    config: Config,
    adapters: Adapters,
    metrics: Arc<Metrics>,
    health: Health,
    /// One AWS SDK configuration for the SQS, Bedrock and Secrets Manager clients, loaded on
    /// first use.
    sdk: tokio::sync::OnceCell<SdkConfig>,
    /// The database settings with the credentials of `database.secret_id` filled in.
    database: tokio::sync::OnceCell<Database>,
    /// The operator console's place on the side server, filled once its sources are open.
    console: console::Slot,
    /// The PostgreSQL store and SQS queue once opened, for the console's reads beyond the ports.
    postgres: OnceLock<PgStore>,
    sqs: OnceLock<Arc<SqsQueue>>,
}

impl App {
    pub fn new(config: Config, adapters: Adapters) -> Self {
        let config_prefix = config.console.path_prefix.clone();
        Self {
            config,
            adapters,
            metrics: Arc::new(Metrics::new()),
            health: Health::new(),
            sdk: tokio::sync::OnceCell::new(),
            database: tokio::sync::OnceCell::new(),
            console: console::Slot::new(&config_prefix),
            postgres: OnceLock::new(),
            sqs: OnceLock::new(),
        }
    }

    /// The shared AWS SDK configuration (region, credentials, endpoints; see [`crate::aws`]).
    async fn sdk(&self) -> &SdkConfig {
        self.sdk
            .get_or_init(|| aws::sdk_config(&self.config.aws))
            .await
    }

    /// The database settings to connect with: `database.url`, or the URL built from the secret
    /// `database.secret_id` names (read once; the pool re-reads it after a rotation).
    pub async fn database(&self) -> Result<&DatabaseConfig, AppError> {
        Ok(&self.resolved_database().await?.config)
    }

    async fn resolved_database(&self) -> Result<&Database, AppError> {
        self.database
            .get_or_try_init(|| async {
                let mut config = self.config.database.clone();
                if config.secret_id.is_empty() {
                    return Ok(Database {
                        config,
                        secret: None,
                    });
                }
                let secret = DatabaseSecret::load(self.sdk().await, &config.secret_id, &config.url)
                    .await
                    .map_err(AppError::Secret)?;
                config.url = secret.url();
                Ok(Database {
                    config,
                    secret: Some(Arc::new(secret)),
                })
            })
            .await
    }

    /// The PostgreSQL store over [`App::database`], following the secret's rotations.
    async fn pg_store(&self) -> Result<PgStore, AppError> {
        let database = self.resolved_database().await?;
        PgStore::connect_with_secret(&database.config, database.secret.clone())
            .map_err(AppError::Database)
    }

    /// `migrate`: applies the pending migrations (`mode` says whether the domain tables too).
    pub async fn migrate(&self, mode: migrate::Mode) -> Result<Vec<String>, AppError> {
        migrate::migrate(self.database().await?, mode)
            .await
            .map_err(AppError::Migrate)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn adapters(&self) -> Adapters {
        self.adapters
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Starts the side server (`/metrics`, `/health`, `/ready`, `/version`).
    pub async fn serve(&self) -> Result<server::Running, AppError> {
        let addr = self.config.server.listen;
        let state = server::State {
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            console: self.console.clone(),
        };
        server::start(addr, state)
            .await
            .map_err(|source| AppError::Bind { addr, source })
    }

    /// Opens the store for a command that reads and writes rows (the operator commands, the
    /// demo); PostgreSQL is neither migrated nor checked (see [`App::checked_store`]).
    pub async fn store(&self) -> Result<Arc<dyn Store>, AppError> {
        Ok(match self.adapters.store {
            StoreAdapter::Sample => {
                let store = MemoryStore::new();
                Sample::bundled().load_memory(&store);
                Arc::new(store)
            }
            StoreAdapter::Postgres => Arc::new(self.pg_store().await?),
            StoreAdapter::PostgresWithSample {
                allow_shared_database,
            } => {
                let database = self.database().await?;
                let mode = guard_shared_database(database, allow_shared_database).await?;
                self.migrate(mode).await?;
                let store = self.pg_store().await?;
                let entities = store
                    .collection_entities()
                    .await
                    .map_err(AppError::Database)?;
                if entities.is_empty() {
                    self.load_sample().await?;
                }
                Arc::new(store)
            }
        })
    }

    /// The daemon's store: PostgreSQL is migrated first when `database.migrate_on_start` is
    /// set, then its schema is checked, so a missing column stops start-up before any message
    /// is touched.
    pub async fn checked_store(&self) -> Result<Arc<dyn Store>, AppError> {
        if self.adapters.store != StoreAdapter::Postgres {
            return self.store().await;
        }
        if self.config.database.migrate_on_start {
            self.migrate(migrate::Mode::Shared).await?;
        }
        let store = self.pg_store().await?;
        store.check_schema().await.map_err(AppError::Schema)?;
        let _ = self.postgres.set(store.clone());
        Ok(Arc::new(store))
    }

    async fn load_sample(&self) -> Result<(), AppError> {
        tracing::info!("empty database: loading the bundled sample collection");
        let mut conn = crate::store::tls::establish(self.database().await?.url.expose())
            .await
            .map_err(|e| AppError::Sample(e.to_string()))?;
        conn.batch_execute(&Sample::bundled().sql())
            .await
            .map_err(|e| AppError::Sample(e.to_string()))
    }

    /// Opens the queue; `wait` is the receive long-poll (zero for a producer that only sends).
    pub async fn queue(&self, wait: Duration) -> Result<Arc<dyn Queue>, AppError> {
        Ok(match self.adapters.queue {
            QueueAdapter::Memory => Arc::new(MemoryQueue::with_dead_letter(MEMORY_MAX_RECEIVES)),
            QueueAdapter::Sqs => {
                let queue = SqsQueue::connect(self.sdk().await, &self.config.queue, wait)
                    .await
                    .map_err(AppError::Queue)?;
                tracing::info!(
                    queue = queue.url(),
                    dead_letter = queue.dead_letter_url().unwrap_or("none"),
                    "queue resolved"
                );
                let queue = Arc::new(queue);
                let _ = self.sqs.set(queue.clone());
                queue
            }
        })
    }

    /// The SQS queue [`App::queue`] opened, for the operations outside the `Queue` port.
    pub fn opened_sqs(&self) -> Option<Arc<SqsQueue>> {
        self.sqs.get().cloned()
    }

    /// Opens the queue for a producer (`enqueue`): only its URL is resolved, so sending needs
    /// no more than `sqs:SendMessage` and `sqs:GetQueueUrl` (deploy/ecs/enqueue-policy.json).
    pub async fn sender_queue(&self) -> Result<Arc<dyn Queue>, AppError> {
        Ok(match self.adapters.queue {
            QueueAdapter::Memory => Arc::new(MemoryQueue::with_dead_letter(MEMORY_MAX_RECEIVES)),
            QueueAdapter::Sqs => Arc::new(
                SqsQueue::connect_sender(self.sdk().await, &self.config.queue)
                    .await
                    .map_err(AppError::Queue)?,
            ),
        })
    }

    /// The graph cache: in-process, plus the shared layer the adapters name.
    pub async fn cache(&self) -> Result<GraphCache, AppError> {
        if self.adapters.shared_cache == SharedCacheAdapter::Memory {
            return Ok(GraphCache::with_shared(
                &self.config.cache,
                self.metrics.clone(),
                Some(Arc::new(MemoryCache::new())),
                KEY_PREFIX,
            ));
        }
        let cache = GraphCache::new(&self.config.cache, self.metrics.clone(), &self.health)
            .map_err(AppError::Cache)?;
        if !self.config.cache.redis_url.is_empty() && !cache.ping().await {
            tracing::warn!(
                "Redis unreachable at start-up; building graphs without it until it answers"
            );
        }
        Ok(cache)
    }

    /// The generator `generator.backend` names; Bedrock behind the shared budget when
    /// `[budget]` sets any limit (docs/decisions.md, "Bedrock budget: GCRA in one Lua script").
    pub async fn generator(&self) -> Result<Arc<dyn Generator>, AppError> {
        Ok(match self.config.generator.backend {
            GeneratorBackend::Bedrock => {
                let bedrock = BedrockGenerator::new(
                    self.sdk().await,
                    &self.config.generator,
                    self.metrics.clone(),
                );
                if !self.config.budget.enabled() {
                    return Ok(Arc::new(bedrock));
                }
                let replica = format!("{}:{}", console::inflight::host_name(), std::process::id());
                let budget = Budget::new(
                    &self.config.budget,
                    &self.config.cache,
                    replica,
                    self.metrics.clone(),
                    &self.health,
                )
                .map_err(AppError::Budget)?;
                // Throttled attempts go back through the budget (docs/decisions.md, "Adaptive
                // rate"), which paces them instead of the adapter's backoff.
                Arc::new(BudgetedGenerator::new(
                    Arc::new(bedrock.returning_throttles()),
                    Arc::new(budget),
                    &self.config.generator,
                ))
            }
            GeneratorBackend::Offline => Arc::new(OfflineGenerator::from_config(
                &self.config.generator,
                self.metrics.clone(),
            )),
        })
    }

    /// The profile pipeline over `store`, with the configured cache and generator.
    pub async fn pipeline(&self, store: Arc<dyn Store>) -> Result<Pipeline, AppError> {
        Ok(Pipeline::new(
            store,
            self.cache().await?,
            self.generator().await?,
            self.metrics.clone(),
            pipeline::Settings::from_config(&self.config),
        ))
    }

    /// A consumer of `queue` handing each message to `handler`.
    /// Installs the operator console once the daemon's PostgreSQL store and SQS queue are open
    /// (without either, e.g. in the demo, its paths answer 503), and returns `handler` wrapped so
    /// that every replica publishes what it is working on.
    pub fn console(
        &self,
        handler: Arc<dyn Handler>,
        background: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<Arc<dyn Handler>, AppError> {
        let (Some(store), Some(queue)) = (self.postgres.get(), self.sqs.get()) else {
            return Ok(handler);
        };
        let replica = if self.config.console.replica.is_empty() {
            console::inflight::host_name()
        } else {
            self.config.console.replica.clone()
        };
        let in_flight = InFlight::new(replica);
        let handler: Arc<dyn Handler> = Arc::new(in_flight.track(handler));
        let console = Console::new(
            &self.config,
            store.clone(),
            queue.clone(),
            self.metrics.clone(),
            in_flight,
        )
        .map_err(AppError::Console)?;
        console.spawn_background(background, stop);
        self.console.install(console);
        Ok(handler)
    }

    pub fn consumer(&self, queue: Arc<dyn Queue>, handler: Arc<dyn Handler>) -> Consumer {
        Consumer::new(
            queue,
            handler,
            ConsumerSettings::from_config(&self.config),
            self.metrics.clone(),
            self.health.clone(),
        )
    }
}

/// The database settings [`App::database`] resolved, and the secret they follow.
struct Database {
    config: DatabaseConfig,
    secret: Option<Arc<DatabaseSecret>>,
}

/// Refuses a database the demo could pollute: one the API's Alembic manages, or one holding
/// profiles (the demo's offline profiles would sit among them), unless `allowed`. Returns how to
/// migrate it: beside the API only the daemon's schema, otherwise the stand-in domain tables too.
async fn guard_shared_database(
    database: &DatabaseConfig,
    allowed: bool,
) -> Result<migrate::Mode, AppError> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl;
    let unavailable = |e: String| AppError::Database(StoreError::Unavailable(e));
    let mut conn = crate::store::tls::establish(database.url.expose())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let alembic = crate::store::schema_check::has_alembic(&mut conn)
        .await
        .map_err(AppError::Database)?;
    let classify = |e| AppError::Database(crate::store::connection::classify(e));
    let has_profiles_table: Count =
        diesel::sql_query("SELECT (to_regclass('entity_profiles') IS NOT NULL)::int::int8 AS n")
            .get_result(&mut conn)
            .await
            .map_err(classify)?;
    let profiles = if has_profiles_table.n == 1 {
        let row: Count = diesel::sql_query("SELECT count(*) AS n FROM entity_profiles")
            .get_result(&mut conn)
            .await
            .map_err(classify)?;
        row.n
    } else {
        0
    };
    let reason = if alembic {
        Some("has the API's schema (alembic_version)".to_owned())
    } else if profiles > 0 {
        Some(format!("holds {profiles} stored profile(s)"))
    } else {
        None
    };
    match reason {
        Some(reason) if !allowed => Err(AppError::SharedDatabase(reason)),
        Some(reason) => {
            tracing::warn!(%reason, "running the demo on a shared database (--allow-shared-database)");
            Ok(if alembic {
                migrate::Mode::Shared
            } else {
                migrate::Mode::Standalone
            })
        }
        None => Ok(migrate::Mode::Standalone),
    }
}
