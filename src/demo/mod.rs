//! `profile-worker demo`: the real consumer and pipeline on embedded adapters, so a newcomer
//! sees the daemon do its job with no external service (design §7).
//!
//! Memory queue, memory store loaded with the bundled sample collection, in-process graph cache
//! and the offline generator with a simulated latency — each replaceable by a real adapter
//! (`--database-url`, `--queue-url`, `--redis-url`) for a cost-free dry run against real
//! infrastructure. A generate-all job is enqueued through the same code as `enqueue --all`.

pub mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cache::{CacheError, GraphCache};
use crate::config::{Config, SecretUrl};
use crate::consumer::{Consumer, ConsumerSettings, Summary};
use crate::generate::CallKind;
use crate::generate::offline::OfflineGenerator;
use crate::health::Health;
use crate::jobs::{self, EnqueueReport, JobsError};
use crate::metrics::Metrics;
use crate::model::{Job, StoredProfile};
use crate::pipeline::{self, Pipeline};
use crate::queue::{MemoryQueue, Queue, QueueError, SqsQueue};
use crate::server;
use crate::store::migrate::{self, MigrateError};
use crate::store::{MemoryStore, PgStore, ProfileStore, Store, StoreError};
use sample::Sample;

/// Deliveries a demo message gets on the memory queue before it is dead-lettered.
const MEMORY_MAX_RECEIVES: u32 = 5;

/// What the demo runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated latency of each offline generator call.
    pub latency: Duration,
    /// Run a second generate-all pass, which finds every profile fresh.
    pub twice: bool,
    pub database_url: Option<String>,
    pub queue_url: Option<String>,
    pub redis_url: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("migrations: {0}")]
    Migrate(#[from] MigrateError),
    #[error("cannot load the sample collection: {0}")]
    Load(String),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("graph cache: {0}")]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Jobs(#[from] JobsError),
    #[error("there is already an active job {0}; cancel it or wait for it to finish")]
    ActiveJob(String),
    #[error("the collection has no entity with a qualifying book")]
    EmptyCollection,
    #[error("interrupted")]
    Interrupted,
}

/// One generate-all pass.
#[derive(Debug, Clone)]
pub struct Pass {
    pub job: Job,
    pub summary: Summary,
    pub wall: Duration,
    /// Generator calls made in this pass.
    pub calls: u64,
    /// `calls · latency / concurrency`: the wall time if every slot were busy all the time.
    pub ideal: Duration,
}

impl Pass {
    /// Ideal over measured wall time (1.0 = every slot busy all the time).
    pub fn efficiency(&self) -> f64 {
        if self.wall.is_zero() {
            return 1.0;
        }
        self.ideal.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct Report {
    pub metrics_addr: std::net::SocketAddr,
    pub store_kind: &'static str,
    pub queue_kind: &'static str,
    pub passes: Vec<Pass>,
    /// A generated profile to show.
    pub sample_profile: Option<(String, StoredProfile)>,
}

/// Runs the demo: one or two generate-all passes through the real consumer and pipeline.
pub async fn run(
    config: &Config,
    options: &Options,
    shutdown: CancellationToken,
) -> Result<Report, DemoError> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let addr = config.server.listen;
    let state = server::State {
        metrics: metrics.clone(),
        health: health.clone(),
        console: crate::console::Slot::default(),
    };
    let server = server::start(addr, state)
        .await
        .map_err(|source| DemoError::Bind { addr, source })?;
    let metrics_addr = server.addr;

    let result = passes(config, options, shutdown, metrics, health, metrics_addr).await;
    server.stop().await;
    result
}

async fn passes(
    config: &Config,
    options: &Options,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    health: Health,
    metrics_addr: std::net::SocketAddr,
) -> Result<Report, DemoError> {
    let (store, store_kind) = open_store(options).await?;
    let (queue, queue_kind) = open_queue(config, options).await?;
    let mut cache_config = config.cache.clone();
    cache_config.redis_url = SecretUrl::new(options.redis_url.clone().unwrap_or_default());
    let cache = GraphCache::new(&cache_config, metrics.clone(), &health)?;
    let generator = Arc::new(OfflineGenerator::new(options.latency, metrics.clone()));
    let pipeline = Arc::new(Pipeline::new(
        store.clone(),
        cache,
        generator,
        metrics.clone(),
        pipeline::Settings::from_config(config),
    ));
    let mut settings = ConsumerSettings::from_config(config);
    // Short polls keep the end of each pass prompt; nothing here waits on a remote queue.
    settings.wait = Duration::from_secs(1);

    let owner = jobs::resolve_owner(store.as_ref(), None).await?;
    let mut report = Report {
        metrics_addr,
        store_kind,
        queue_kind,
        passes: Vec::new(),
        sample_profile: None,
    };
    for _ in 0..if options.twice { 2 } else { 1 } {
        let started = Instant::now();
        let calls_before = generator_calls(&metrics);
        let job = match jobs::enqueue_all(store.as_ref(), queue.as_ref(), owner, false).await? {
            EnqueueReport::Started { job, .. } => job,
            EnqueueReport::Existing(job) => return Err(DemoError::ActiveJob(job.id)),
            EnqueueReport::Empty => return Err(DemoError::EmptyCollection),
        };
        let stop = CancellationToken::new();
        let consumer = Consumer::new(
            queue.clone(),
            pipeline.clone(),
            settings.clone(),
            metrics.clone(),
            health.clone(),
        );
        let consumer_task = tokio::spawn(consumer.run(stop.clone()));
        let finished = watch(store.as_ref(), &job.id, options.progress, &shutdown).await;
        // The pass ends when its job does; stopping the consumer (an idle poll) is not its work.
        let wall = started.elapsed();
        stop.cancel();
        let summary = consumer_task.await.unwrap_or_default();
        let job = finished?;
        let calls = generator_calls(&metrics) - calls_before;
        let ideal = options
            .latency
            .mul_f64(calls as f64 / settings.concurrency.max(1) as f64);
        report.passes.push(Pass {
            job,
            summary,
            wall,
            calls,
            ideal,
        });
    }
    report.sample_profile = sample_profile(store.as_ref()).await?;
    Ok(report)
}

async fn open_store(options: &Options) -> Result<(Arc<dyn Store>, &'static str), DemoError> {
    let Some(url) = &options.database_url else {
        let store = MemoryStore::new();
        Sample::bundled().load_memory(&store);
        return Ok((Arc::new(store), "memory (bundled sample collection)"));
    };
    let config = crate::config::DatabaseConfig {
        url: SecretUrl::new(url.clone()),
        pool_size: 10,
        statement_timeout_ms: 30_000,
        migrate_on_start: true,
    };
    migrate::migrate(&config).await?;
    let store = PgStore::connect(&config)?;
    if store.collection_entities().await?.is_empty() {
        use diesel_async::SimpleAsyncConnection;
        tracing::info!("empty database: loading the bundled sample collection");
        let mut conn = crate::store::tls::establish(url)
            .await
            .map_err(|e| DemoError::Load(e.to_string()))?;
        conn.batch_execute(&Sample::bundled().sql())
            .await
            .map_err(|e| DemoError::Load(e.to_string()))?;
    }
    Ok((Arc::new(store), "PostgreSQL"))
}

async fn open_queue(
    config: &Config,
    options: &Options,
) -> Result<(Arc<dyn Queue>, &'static str), DemoError> {
    match &options.queue_url {
        None => Ok((
            Arc::new(MemoryQueue::with_dead_letter(MEMORY_MAX_RECEIVES)),
            "memory",
        )),
        Some(url) => {
            let mut queue_config = config.queue.clone();
            queue_config.url = url.clone();
            let queue =
                SqsQueue::connect(&queue_config, &config.aws, Duration::from_secs(1)).await?;
            Ok((Arc::new(queue), "SQS"))
        }
    }
}

/// Polls the job until it is terminal, drawing progress; returns the final row.
async fn watch(
    store: &dyn Store,
    job_id: &str,
    progress: bool,
    shutdown: &CancellationToken,
) -> Result<Job, DemoError> {
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} profiles {msg}",
            )
            .expect("valid progress template"),
        );
        bar
    });
    loop {
        let job = store
            .job(job_id)
            .await?
            .ok_or_else(|| DemoError::Load(format!("job {job_id} vanished")))?;
        if let Some(bar) = &bar {
            bar.set_length(job.total_entities.max(0) as u64);
            bar.set_position((job.succeeded + job.failed).max(0) as u64);
            bar.set_message(format!("({} failed)", job.failed));
        }
        if job.status.is_terminal() {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(job);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(DemoError::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Successful generator calls so far (the offline generator counts each simulated call).
fn generator_calls(metrics: &Metrics) -> u64 {
    CallKind::ALL
        .iter()
        .map(|k| {
            metrics
                .generator_requests
                .with_label_values(&[k.as_str(), "ok"])
                .get()
        })
        .sum()
}

/// The first author profile the run generated (authors have the richest stories).
async fn sample_profile(store: &dyn Store) -> Result<Option<(String, StoredProfile)>, DemoError> {
    for entity in store.collection_entities().await? {
        if let Some(profile) = store.profile(entity.entity).await?
            && profile.model_version.as_deref() == Some(crate::generate::offline::OFFLINE_MODEL)
        {
            return Ok(Some((entity.name, profile)));
        }
    }
    Ok(None)
}

impl Report {
    /// The human summary printed at the end of `profile-worker demo`.
    pub fn render(&self, latency: Duration, concurrency: usize) -> String {
        let mut out = format!(
            "profile-worker demo: store {}, queue {}, offline generator ({} ms per call), {} slots; metrics were at http://{}/metrics\n",
            self.store_kind,
            self.queue_kind,
            latency.as_millis(),
            concurrency,
            self.metrics_addr
        );
        for (i, pass) in self.passes.iter().enumerate() {
            let s = &pass.summary;
            out += &format!(
                "\npass {}: job {} {} — {} entities: {} generated, {} skipped, {} failed\n  wall {:.2} s",
                i + 1,
                pass.job.id,
                pass.job.status,
                pass.job.total_entities,
                s.done,
                s.skipped,
                s.failed,
                pass.wall.as_secs_f64(),
            );
            out += &if pass.calls == 0 {
                ", no generator calls (every profile was fresh or skipped)\n".to_string()
            } else {
                format!(
                    ", {} generator calls, ideal {:.2} s, efficiency {:.1}%\n",
                    pass.calls,
                    pass.ideal.as_secs_f64(),
                    pass.efficiency() * 100.0
                )
            };
        }
        if let Some((name, profile)) = &self.sample_profile {
            let count = |v: &Option<serde_json::Value>| match v {
                Some(serde_json::Value::Array(a)) => a.len(),
                Some(serde_json::Value::Object(o)) => o.len(),
                _ => 0,
            };
            out += &format!(
                "\nsample profile: {name} ({})\n  {}\n  {} personal stories, {} connection narratives, {} relationship stories\n",
                profile.entity,
                profile.bio_summary.as_deref().unwrap_or("(no biography)"),
                count(&profile.personal_stories),
                count(&profile.connection_narratives),
                count(&profile.relationship_stories),
            );
        }
        out
    }
}
