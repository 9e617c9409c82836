//! One message, start to finish: parse, guard, staleness, graph, generate, persist, progress.
//!
//! [`Pipeline`] is the consumer's [`Handler`]. It keeps the original worker's order: a cancelled
//! job's messages are skipped without calling the model; a failed or empty biography is a
//! transient failure, never a fresh profile; `force` and `staleness.model_change` extend the
//! staleness rule; everything a generated profile writes — AI connections, the profile, its usage
//! row and the job's progress — is one transaction, and progress counts once per (job, entity)
//! however often a message is delivered. What a failure does to the job and the message is
//! [`crate::outcome`]'s decision; see docs/decisions.md ("Pipeline").

mod generation;
pub use profile_worker_contract::message;
pub mod staleness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::cache::GraphCache;
use crate::config::{BudgetConfig, Config, Price};
use crate::consumer::{Delivery, Handler, Outcome};
use crate::generate::{Allowance, Generator, GeneratorError, resolve_model};
use crate::graph::{self, Graph, GraphParams};
use crate::metrics::Metrics;
use crate::model::{EntityRef, JobStatus};
use crate::outcome::job::{Ledger, Subject};
use crate::outcome::{Blame, Dependency};
use crate::store::{ProfileUnit, Store, StoreError};
use generation::Tally;
use message::Message;

/// How often a job message's generation checks whether its job was cancelled meanwhile.
const JOB_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Settings the pipeline reads from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_body_bytes: usize,
    /// `generator.model`: a name from `models` or a raw model id.
    pub model: String,
    pub models: BTreeMap<String, String>,
    pub prices: BTreeMap<String, Price>,
    /// `staleness.model_change`.
    pub model_change: bool,
    /// `generator.backend = "offline"`: profiles are written with model `offline`.
    pub offline: bool,
    /// `generator.max_calls_per_message`.
    pub max_calls_per_message: u32,
    /// `[budget]`, for `daily_cost_usd` (0 = no cap; `app_config` wins).
    pub budget: BudgetConfig,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_body_bytes: config.consumer.max_body_bytes,
            model: config.generator.model.clone(),
            models: config.generator.models.clone(),
            prices: config.generator.prices.clone(),
            model_change: config.staleness.model_change,
            offline: config.generator.backend == crate::config::GeneratorBackend::Offline,
            max_calls_per_message: config.generator.max_calls_per_message,
            budget: config.budget.clone(),
        }
    }
}

/// Why one message could not be processed; [`PipelineError::is_transient`] decides between
/// letting it come back and counting it as failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Generator(#[from] GeneratorError),
    #[error("graph: {0}")]
    Graph(Arc<StoreError>),
    /// The message names an entity whose row does not exist (the original's wording).
    #[error("Entity {0} not found")]
    EntityNotFound(EntityRef),
    /// The model answered, but with no usable biography: the message comes back.
    #[error("biography generation returned no usable biography")]
    EmptyBiography,
    /// Today's spend, with the calls in flight, reached the daily cost cap: the message is
    /// held, not failed.
    #[error(
        "daily cost cap reached: ${spent:.4} spent today and ${reserved:.4} in flight, of ${cap:.4}"
    )]
    DailyCap { spent: f64, reserved: f64, cap: f64 },
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.is_transient(),
            PipelineError::Generator(e) => e.is_transient(),
            PipelineError::Graph(e) => e.is_transient(),
            PipelineError::EntityNotFound(_) => false,
            PipelineError::EmptyBiography => true,
            PipelineError::DailyCap { .. } => true,
        }
    }
}

/// What happened to a message that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Generated,
    Skipped(SkipReason),
}

/// Why a message was acknowledged without generating (each counts as a success of its job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    JobCancelled,
    /// The (job, entity) already succeeded: a redelivery, even of a `force` message.
    AlreadyDone,
    NoQualifyingBooks,
    ProfileCurrent,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::JobCancelled => "job cancelled",
            SkipReason::AlreadyDone => "already done for this job",
            SkipReason::NoQualifyingBooks => "no qualifying books",
            SkipReason::ProfileCurrent => "profile is current",
        }
    }
}

/// The profile pipeline: the daemon's message handler.
pub struct Pipeline {
    store: Arc<dyn Store>,
    cache: GraphCache,
    generator: Arc<dyn Generator>,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        cache: GraphCache,
        generator: Arc<dyn Generator>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Self {
            ledger: Ledger::new(store.clone(), metrics.clone()),
            metrics,
            store,
            cache,
            generator,
            settings,
        }
    }

    /// Processes one parsed message. Side effects on success: the job's progress (and, when
    /// generated, the profile) are committed.
    pub async fn process(&self, msg: &Message, attempt: i32) -> Result<Processed, PipelineError> {
        let entity = msg.entity;
        if let Some(job_id) = &msg.job_id
            && let Some(job) = self.store.job(job_id).await?
            && job.status == JobStatus::Cancelled
        {
            return self.skip(msg, attempt, SkipReason::JobCancelled).await;
        }
        if let Some(job_id) = &msg.job_id
            && self.store.job_item_succeeded(job_id, entity).await?
        {
            return self.skip(msg, attempt, SkipReason::AlreadyDone).await;
        }

        let books = self.store.qualifying_books(entity).await?;
        if books.is_empty() {
            return self.skip(msg, attempt, SkipReason::NoQualifyingBooks).await;
        }

        let model = self.resolve_model().await;
        let profile = self.store.profile(entity).await?;
        let latest = self.store.latest_book_update(entity).await?;
        let current_model = self.settings.model_change.then_some(model.as_str());
        let Some(reason) = staleness::check(
            profile.as_ref(),
            latest,
            msg.demand(),
            current_model,
            self.settings.offline,
        ) else {
            return self.skip(msg, attempt, SkipReason::ProfileCurrent).await;
        };
        tracing::debug!(?reason, "profile is stale");

        self.check_daily_cap().await?;
        let graph = self.graph().await?;
        let entity_row = self
            .store
            .entity(entity)
            .await?
            .ok_or(PipelineError::EntityNotFound(entity))?;
        let universe = self.store.collection_entities().await?;

        let cancel = CancellationToken::new();
        let allowance = Allowance::new(self.settings.max_calls_per_message, cancel.clone());
        let tally = Tally::default();
        let work = self.generate(
            &graph,
            &entity_row,
            books,
            universe,
            model.clone(),
            &allowance,
            &tally,
        );
        let generated = match &msg.job_id {
            Some(job_id) => {
                tokio::pin!(work);
                tokio::select! {
                    generated = &mut work => generated,
                    () = self.watch_cancellation(job_id, &cancel) => work.await,
                }
            }
            None => work.await,
        };
        let generated = match generated {
            Ok(generated) => generated,
            Err(err) => {
                self.discard(msg, &model, &tally).await;
                if allowance.is_cancelled() {
                    tracing::info!(error = %err, "job cancelled during generation; no more calls");
                    return self.skip(msg, attempt, SkipReason::JobCancelled).await;
                }
                return Err(err);
            }
        };

        let usage = generated.usage.clone();
        let committed = self
            .store
            .commit_profile(ProfileUnit {
                entity,
                profile: generated.write,
                ai_connections: generated.ai_rows,
                usage: generated.usage,
                job_id: msg.job_id.clone(),
                attempt,
            })
            .await;
        let recorded = match committed {
            Ok(recorded) => recorded,
            Err(err) => {
                if let Err(e) = self
                    .store
                    .record_discarded_usage(entity, msg.job_id.as_deref(), &usage)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the usage of an uncommitted profile");
                }
                return Err(err.into());
            }
        };
        self.ledger.committed(recorded.completed);
        tracing::info!(entity = %entity, calls = allowance.used(), "Generated profile for {entity}");
        Ok(Processed::Generated)
    }

    /// Holds the message when today's spend across all replicas, with the calls they have in
    /// flight, has reached the daily cost cap (docs/decisions.md, "Daily cost cap"). The cap is
    /// re-read every time, `app_config` first, so raising it takes effect at the held messages'
    /// next probe.
    async fn check_daily_cap(&self) -> Result<(), PipelineError> {
        let setting = self.store.daily_cap_setting().await?;
        let cap = self.settings.budget.daily_cap(setting.as_deref());
        self.metrics.daily_cap_usd.set(cap);
        if cap <= 0.0 {
            return Ok(());
        }
        let spent = self.store.spend_today().await?.cost_usd;
        self.metrics.spend_today_usd.set(spent);
        let reserved = self.generator.in_flight_cost_usd().await;
        if spent + reserved >= cap {
            return Err(PipelineError::DailyCap {
                spent,
                reserved,
                cap,
            });
        }
        Ok(())
    }

    /// Records what a generation that wrote nothing spent (docs/decisions.md, "Honest cost: every
    /// attempt is recorded"); a failure to record is logged, never the message's failure.
    async fn discard(&self, msg: &Message, model: &str, tally: &Tally) {
        let usage = tally.total();
        if usage.calls == 0 {
            return;
        }
        let row = self.usage_row(model, &usage);
        if let Err(e) = self
            .store
            .record_discarded_usage(msg.entity, msg.job_id.as_deref(), &row)
            .await
        {
            tracing::warn!(error = %e, "cannot record the usage of a failed generation");
        }
    }

    /// Cancels `cancel` once the job is seen cancelled (checked every [`JOB_WATCH_INTERVAL`]),
    /// so no further model call is made for it; never returns otherwise. Read errors are
    /// ignored: the next check tries again.
    async fn watch_cancellation(&self, job_id: &str, cancel: &CancellationToken) {
        loop {
            tokio::time::sleep(JOB_WATCH_INTERVAL).await;
            if let Ok(Some(job)) = self.store.job(job_id).await
                && job.status == JobStatus::Cancelled
            {
                cancel.cancel();
                return;
            }
        }
    }

    async fn skip(
        &self,
        msg: &Message,
        attempt: i32,
        reason: SkipReason,
    ) -> Result<Processed, PipelineError> {
        self.ledger.succeeded(subject(msg, attempt, false)).await?;
        Ok(Processed::Skipped(reason))
    }

    /// Whose fault a failure is. A database error is the database's when no connection could be
    /// had or it broke; any other error that may be the server's is confirmed with a ping, so a
    /// server going down mid-statement pauses too, whatever language its messages are in.
    async fn blame(&self, err: &PipelineError) -> Blame {
        let store_error = match err {
            PipelineError::Store(e) => Some(e),
            PipelineError::Graph(e) => Some(e.as_ref()),
            _ => None,
        };
        if let Some(e) = store_error {
            if e.is_unavailable() || (e.may_be_the_server() && self.store.ping().await.is_err()) {
                return Blame::Dependency(Dependency::Database);
            }
            return Blame::Message {
                transient: e.is_transient(),
            };
        }
        match err {
            PipelineError::Generator(e) if e.is_unavailable() => {
                Blame::Dependency(Dependency::Bedrock)
            }
            PipelineError::DailyCap { .. } => Blame::Dependency(Dependency::DailyCostCap),
            other => Blame::Message {
                transient: other.is_transient(),
            },
        }
    }

    /// `app_config` first, then configuration, then haiku. A failed read falls
    /// through, as in the original.
    async fn resolve_model(&self) -> String {
        let setting = match self.store.model_setting().await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read app_config model setting; using configuration");
                None
            }
        };
        let resolved = resolve_model(
            setting.as_deref(),
            &self.settings.model,
            &self.settings.models,
        );
        if let Some(warning) = resolved.warning {
            tracing::warn!("{warning}");
        }
        resolved.id
    }

    async fn graph(&self) -> Result<Arc<Graph>, PipelineError> {
        let params = GraphParams::default();
        let store = self.store.clone();
        self.cache
            .get_or_build(&params, || async {
                let rows = store
                    .graph_rows(params.include_binders, params.max_books.into())
                    .await?;
                Ok::<_, StoreError>(graph::build(&rows, &params, Utc::now()))
            })
            .await
            .map_err(PipelineError::Graph)
    }
}

#[async_trait]
impl Handler for Pipeline {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let msg = match message::parse(&delivery.body, self.settings.max_body_bytes) {
            Ok(msg) => msg,
            Err(poison) => {
                return Outcome::Poison {
                    reason: poison.reason,
                };
            }
        };
        let span = tracing::Span::current();
        span.record("job_id", msg.job_id.as_deref().unwrap_or(""));
        span.record("entity", msg.entity.to_string());
        let attempt = i32::try_from(delivery.attempt).unwrap_or(i32::MAX);

        let err = match self.process(&msg, attempt).await {
            Ok(Processed::Generated) => return Outcome::Done,
            Ok(Processed::Skipped(reason)) => {
                tracing::info!(reason = reason.as_str(), "skipped {}", msg.entity);
                return Outcome::Skipped;
            }
            Err(err) => err,
        };
        let blame = self.blame(&err).await;
        let subject = subject(&msg, attempt, delivery.is_last_attempt);
        self.ledger.failed(subject, err.to_string(), blame).await
    }
}

fn subject(msg: &Message, attempt: i32, is_last_attempt: bool) -> Subject<'_> {
    Subject {
        job_id: msg.job_id.as_deref(),
        entity: msg.entity,
        attempt,
        is_last_attempt,
    }
}
