//! One message, start to finish: parse, guard, staleness, graph, generate, persist, progress.
//!
//! [`Pipeline`] is the consumer's [`Handler`]. It follows the original worker's order (reference
//! §3.2, §7) with design D1–D9: a cancelled job's messages are skipped without calling the model
//! (D3); a failed or empty biography is a transient failure, never a fresh profile (D4); `force`
//! and `staleness.model_change` extend the staleness rule (D5); everything a generated profile
//! writes — AI connections, the profile, its usage row and the job's progress — is one transaction
//! (D9), and progress counts once per (job, entity) however often a message is delivered (D2).

pub mod message;
pub mod staleness;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};

use crate::cache::GraphCache;
use crate::config::{Config, Price};
use crate::consumer::{Delivery, Handler, Outcome};
use crate::generate::classify::{ClassifyInput, Years, classify};
use crate::generate::{
    BiographyRequest, DiscoveryRequest, Generator, GeneratorError, MAX_NARRATIVES, PairRequest,
    RelationshipStoryRequest, Usage, estimate_cost_usd, resolve_model,
};
use crate::graph::{self, Graph, GraphParams, Node};
use crate::metrics::Metrics;
use crate::model::{AiConnectionRow, CollectionEntity, Entity, EntityRef, JobStatus};
use crate::store::{
    GenerationUsage, Outcome as JobOutcome, OutcomeRecord, ProfileUnit, ProfileWrite, Store,
    StoreError,
};
use message::Message;

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
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_body_bytes: config.consumer.max_body_bytes,
            model: config.generator.model.clone(),
            models: config.generator.models.clone(),
            prices: config.generator.prices.clone(),
            model_change: config.staleness.model_change,
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
    /// The model answered, but with no usable biography (design D4).
    #[error("biography generation returned no usable biography")]
    EmptyBiography,
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.is_transient(),
            PipelineError::Generator(e) => e.is_transient(),
            PipelineError::Graph(e) => e.is_transient(),
            PipelineError::EntityNotFound(_) => false,
            PipelineError::EmptyBiography => true,
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
    NoQualifyingBooks,
    ProfileCurrent,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::JobCancelled => "job cancelled",
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
            store,
            cache,
            generator,
            metrics,
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

        let books = self.store.qualifying_books(entity).await?;
        if books.is_empty() {
            return self.skip(msg, attempt, SkipReason::NoQualifyingBooks).await;
        }

        let model = self.resolve_model().await;
        let profile = self.store.profile(entity).await?;
        let latest = self.store.latest_book_update(entity).await?;
        let current_model = self.settings.model_change.then_some(model.as_str());
        let Some(reason) = staleness::check(profile.as_ref(), latest, msg.demand(), current_model)
        else {
            return self.skip(msg, attempt, SkipReason::ProfileCurrent).await;
        };
        tracing::debug!(?reason, "profile is stale");

        let graph = self.graph().await?;
        let entity_row = self
            .store
            .entity(entity)
            .await?
            .ok_or(PipelineError::EntityNotFound(entity))?;
        let universe = self.store.collection_entities().await?;
        let generated = self
            .generate(&graph, &entity_row, books, universe, model)
            .await?;

        let recorded = self
            .store
            .commit_profile(ProfileUnit {
                entity,
                profile: generated.write,
                ai_connections: generated.ai_rows,
                usage: generated.usage,
                job_id: msg.job_id.clone(),
                attempt,
            })
            .await?;
        if recorded.completed {
            self.metrics.jobs_completed.inc();
        }
        tracing::info!(entity = %entity, "Generated profile for {entity}");
        Ok(Processed::Generated)
    }

    async fn skip(
        &self,
        msg: &Message,
        attempt: i32,
        reason: SkipReason,
    ) -> Result<Processed, PipelineError> {
        self.record(msg, attempt, JobOutcome::Succeeded).await?;
        Ok(Processed::Skipped(reason))
    }

    /// Counts an outcome against the message's job, if it has one.
    async fn record(
        &self,
        msg: &Message,
        attempt: i32,
        outcome: JobOutcome,
    ) -> Result<(), StoreError> {
        let Some(job_id) = &msg.job_id else {
            return Ok(());
        };
        let recorded = self
            .store
            .record_outcome(OutcomeRecord {
                job_id: job_id.clone(),
                entity: msg.entity,
                attempt,
                outcome,
            })
            .await?;
        if recorded.completed {
            self.metrics.jobs_completed.inc();
        }
        Ok(())
    }

    /// `app_config` first, then configuration, then haiku (design D7). A failed read falls
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

    /// Discovery → biography → narratives (reference §7.3–§7.6).
    async fn generate(
        &self,
        graph: &Graph,
        entity: &Entity,
        books: Vec<crate::model::Book>,
        universe: Vec<CollectionEntity>,
        model: String,
    ) -> Result<Generated, PipelineError> {
        let node_id = entity.entity.to_string();
        let source_node = graph.node(&node_id);
        let neighbours = graph.neighbours(&node_id);
        let source_count = graph.source_connection_count(&node_id);
        let connections: Vec<CollectionEntity> = neighbours
            .iter()
            .map(|(_, node)| CollectionEntity {
                entity: node.entity(),
                name: node.name.clone(),
            })
            .collect();
        let mut usage = Usage::default();

        let discovery = self
            .generator
            .discover_connections(&DiscoveryRequest {
                model: model.clone(),
                entity: CollectionEntity {
                    entity: entity.entity,
                    name: entity.name.clone(),
                },
                universe,
            })
            .await;
        let discovered = match discovery {
            Ok(reply) => {
                usage += reply.usage;
                reply.value.connections
            }
            Err(err) => {
                usage += err.usage();
                tracing::warn!(error = %err, "connection discovery failed; continuing without");
                Vec::new()
            }
        };

        let bio = self
            .generator
            .biography(&BiographyRequest {
                model: model.clone(),
                entity: entity.clone(),
                books: books.clone(),
                connections: connections.clone(),
            })
            .await?;
        usage += bio.usage;
        let model_version = bio.model.clone();
        let bio = bio.value;
        if !bio.is_usable() {
            tracing::warn!("empty biography; the profile stays stale and the message comes back");
            return Err(PipelineError::EmptyBiography);
        }
        if bio.dropped_stories > 0 {
            tracing::warn!(
                dropped = bio.dropped_stories,
                "personal stories dropped: the API could not read them back"
            );
        }

        // Classifier and pair prompts see the profiled entity as its graph node does (§7.5):
        // publishers and binders carry no years there.
        let source = source_node.map_or_else(|| without_years(entity), entity_of_node);
        let mut narratives = Map::new();
        let mut stories = Map::new();
        let mut narrated = 0;
        for (edge, other) in &neighbours {
            if narrated >= MAX_NARRATIVES {
                break;
            }
            let target = entity_of_node(other);
            let Some(trigger) = classify(&ClassifyInput {
                source_era: source_node.and_then(|n| n.era).map(|e| e.as_str()),
                target_era: other.era.map(|e| e.as_str()),
                source_years: Years::of(&source),
                target_years: Years::of(&target),
                source_connection_count: source_count,
                has_relationship_story: false,
            }) else {
                continue;
            };
            let shared: HashSet<i32> = edge.shared_book_ids.iter().flatten().copied().collect();
            let pair = PairRequest {
                model: model.clone(),
                source: source.clone(),
                target,
                connection_type: edge.edge_type.as_str().to_string(),
                shared_titles: books
                    .iter()
                    .filter(|b| shared.contains(&b.id))
                    .map(|b| b.title.clone())
                    .collect(),
                connections: connections.clone(),
            };
            let key = format!("{node_id}:{}", other.id);
            if trigger.is_high_impact() {
                match self
                    .generator
                    .relationship_story(&RelationshipStoryRequest { pair, trigger })
                    .await
                {
                    Ok(reply) => {
                        usage += reply.usage;
                        if let Some(story) = reply.value {
                            if story.dropped_details > 0 {
                                tracing::warn!(
                                    dropped = story.dropped_details,
                                    connection = %key,
                                    "relationship story details dropped: the API could not read them back"
                                );
                            }
                            narratives.insert(key.clone(), Value::String(story.summary.clone()));
                            stories.insert(
                                key,
                                serde_json::to_value(&story).expect("story serialises"),
                            );
                            narrated += 1;
                        }
                    }
                    Err(err) => {
                        usage += err.usage();
                        tracing::warn!(error = %err, connection = %key, "relationship story failed");
                    }
                }
            } else {
                match self.generator.connection_narrative(&pair).await {
                    Ok(reply) => {
                        usage += reply.usage;
                        if !reply.value.is_empty() {
                            narratives.insert(key, Value::String(reply.value));
                            narrated += 1;
                        }
                    }
                    Err(err) => {
                        usage += err.usage();
                        tracing::warn!(error = %err, connection = %key, "connection narrative failed");
                    }
                }
            }
        }

        let ai_rows = discovered
            .iter()
            .map(|c| AiConnectionRow {
                source_type: c.source_type.as_str().to_string(),
                source_id: c.source_id,
                target_type: c.target_type.as_str().to_string(),
                target_id: c.target_id,
                relationship: c.relationship.as_str().to_string(),
                sub_type: c.sub_type.clone(),
                confidence: c.confidence,
                evidence: c.evidence.clone(),
            })
            .collect();
        let cost_usd =
            estimate_cost_usd(&self.settings.prices, &model_version, &usage).unwrap_or(0.0);
        Ok(Generated {
            write: ProfileWrite {
                bio_summary: bio.biography.clone(),
                personal_stories: serde_json::to_value(&bio.personal_stories)
                    .expect("stories serialise"),
                connection_narratives: Value::Object(narratives),
                relationship_stories: stories,
                ai_connections: discovered
                    .iter()
                    .map(|c| serde_json::to_value(c).expect("connection serialises"))
                    .collect(),
                model_version: model_version.clone(),
            },
            ai_rows,
            usage: GenerationUsage {
                model_id: model_version,
                calls: usage.calls as i32,
                input_tokens: usage.input_tokens as i64,
                output_tokens: usage.output_tokens as i64,
                latency_ms: usage.latency.as_millis() as i64,
                cost_usd,
            },
        })
    }
}

/// What one generation writes.
struct Generated {
    write: ProfileWrite,
    ai_rows: Vec<AiConnectionRow>,
    usage: GenerationUsage,
}

/// An entity as a graph node describes it (publishers and binders: no years).
fn entity_of_node(node: &Node) -> Entity {
    Entity {
        entity: node.entity(),
        name: node.name.clone(),
        birth_year: node.birth_year,
        death_year: node.death_year,
        founded_year: node.founded_year,
        closed_year: node.closed_year,
    }
}

/// The profiled entity when it has no graph node (e.g. a publisher whose books have no author).
fn without_years(entity: &Entity) -> Entity {
    Entity {
        entity: entity.entity,
        name: entity.name.clone(),
        birth_year: None,
        death_year: None,
        founded_year: None,
        closed_year: None,
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
        let reason = err.to_string();
        if err.is_transient() && !delivery.is_last_attempt {
            tracing::warn!(error = %reason, attempt, "transient failure; the message will come back");
            if let Some(job_id) = &msg.job_id
                && let Err(e) = self
                    .store
                    .record_retry(job_id, msg.entity, attempt, &reason)
                    .await
            {
                tracing::warn!(error = %e, "cannot record the retry on the job");
            }
            return Outcome::Retry { reason };
        }
        tracing::error!(error = %reason, attempt, transient = err.is_transient(), "profile generation failed");
        let failure = JobOutcome::Failed {
            message: reason.clone(),
        };
        if let Err(e) = self.record(&msg, attempt, failure).await {
            if e.is_transient() && !delivery.is_last_attempt {
                return Outcome::Retry {
                    reason: format!("{reason}; and recording the failure failed: {e}"),
                };
            }
            tracing::error!(error = %e, "cannot record the failure on the job");
        }
        Outcome::Failed { reason }
    }
}
