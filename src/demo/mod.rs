//! `profile-worker demo`: the real consumer and pipeline on embedded adapters, so a newcomer
//! sees the daemon do its job with no external service.
//!
//! The composition root wires it exactly as `run`, over the memory queue, the memory store
//! loaded with the bundled sample collection, the in-process graph cache and the offline
//! generator with a simulated latency — each replaceable by a real adapter (`--database-url`,
//! `--queue-url`, `--redis-url`) for a cost-free dry run against real infrastructure. A
//! generate-all job is enqueued through the same code as `enqueue --all`.

pub mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError, QueueAdapter, StoreAdapter};
use crate::config::Config;
use crate::consumer::Summary;
use crate::generate::CallKind;
use crate::jobs::{self, EnqueueReport, JobsError};
use crate::metrics::Metrics;
use crate::model::{Job, StoredProfile};
use crate::store::{Store, StoreError};

/// What the demo runs with besides its wiring.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run a second generate-all pass, which finds every profile fresh.
    pub twice: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    App(#[from] AppError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Jobs(#[from] JobsError),
    #[error("job {0} vanished")]
    JobVanished(String),
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
    app: &App,
    options: &Options,
    shutdown: CancellationToken,
) -> Result<Report, DemoError> {
    let server = app.serve().await?;
    let metrics_addr = server.addr;
    let result = passes(app, options, shutdown, metrics_addr).await;
    server.stop().await;
    result
}

async fn passes(
    app: &App,
    options: &Options,
    shutdown: CancellationToken,
    metrics_addr: std::net::SocketAddr,
) -> Result<Report, DemoError> {
    let config = app.config();
    let metrics = app.metrics();
    let store = app.store().await?;
    let wait = Duration::from_secs(config.consumer.wait_seconds.into());
    let queue = app.queue(wait).await?;
    let pipeline = Arc::new(app.pipeline(store.clone()).await?);
    let latency = Duration::from_millis(config.generator.offline_latency_ms);
    let concurrency = config.consumer.concurrency.max(1);

    let owner = jobs::resolve_owner(store.as_ref(), None).await?;
    let mut report = Report {
        metrics_addr,
        store_kind: match app.adapters().store {
            StoreAdapter::Sample => "memory (bundled sample collection)",
            StoreAdapter::Postgres | StoreAdapter::PostgresWithSample => "PostgreSQL",
        },
        queue_kind: match app.adapters().queue {
            QueueAdapter::Memory => "memory",
            QueueAdapter::Sqs => "SQS",
        },
        passes: Vec::new(),
        sample_profile: None,
    };
    for _ in 0..if options.twice { 2 } else { 1 } {
        let started = Instant::now();
        let calls_before = generator_calls(metrics);
        let job = match jobs::enqueue_all(store.as_ref(), queue.as_ref(), owner, false).await? {
            EnqueueReport::Started { job, .. } => job,
            EnqueueReport::Existing(job) => return Err(DemoError::ActiveJob(job.id)),
            EnqueueReport::Empty => return Err(DemoError::EmptyCollection),
        };
        let stop = CancellationToken::new();
        let consumer = app.consumer(queue.clone(), pipeline.clone());
        let consumer_task = tokio::spawn(consumer.run(stop.clone()));
        let finished = watch(store.as_ref(), &job.id, options.progress, &shutdown).await;
        // The pass ends when its job does; stopping the consumer (an idle poll) is not its work.
        let wall = started.elapsed();
        stop.cancel();
        let summary = consumer_task.await.unwrap_or_default();
        let job = finished?;
        let calls = generator_calls(metrics) - calls_before;
        let ideal = latency.mul_f64(calls as f64 / f64::from(concurrency));
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
            .ok_or_else(|| DemoError::JobVanished(job_id.to_string()))?;
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
    /// The human summary printed at the end of `profile-worker demo`, for the demo's
    /// configuration (its offline latency and concurrency).
    pub fn render(&self, config: &Config) -> String {
        let latency = Duration::from_millis(config.generator.offline_latency_ms);
        let concurrency = config.consumer.concurrency;
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
