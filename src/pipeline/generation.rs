//! Generation of one profile: discovery and biography side by side, then narratives for the graph
//! neighbours, a few at a time (docs/decisions.md, "Concurrent calls within a message").

use std::collections::HashSet;
use std::sync::Mutex;

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::{Pipeline, PipelineError};
use crate::generate::classify::{ClassifyInput, Years, classify};
use crate::generate::{
    Allowance, BiographyRequest, DiscoveryRequest, GeneratorError, MAX_NARRATIVES,
    NarrativeTrigger, PairRequest, RelationshipStory, RelationshipStoryRequest, Reply, Stop, Usage,
    estimate_cost_usd,
};
use crate::graph::{Graph, Node};
use crate::model::{AiConnectionRow, CollectionEntity, Entity};
use crate::store::{GenerationUsage, ProfileWrite};

/// Everything one message's calls spent, whatever became of them: summed as replies and errors
/// come back, so a generation that fails or is cut short is still accounted (docs/decisions.md,
/// "Honest cost: every attempt is recorded").
#[derive(Debug, Default)]
pub(super) struct Tally(Mutex<Usage>);

impl Tally {
    fn add(&self, usage: Usage) {
        *self.0.lock().expect("tally lock") += usage;
    }

    /// Adds a reply's usage and hands back its value.
    fn reply<T>(&self, reply: Reply<T>) -> T {
        self.add(reply.usage);
        reply.value
    }

    /// Adds an error's usage and hands it back.
    fn error(&self, err: GeneratorError) -> GeneratorError {
        self.add(err.usage());
        err
    }

    pub(super) fn total(&self) -> Usage {
        *self.0.lock().expect("tally lock")
    }
}

/// One connection the classifier chose, with its request.
struct Candidate {
    key: String,
    trigger: NarrativeTrigger,
    pair: PairRequest,
}

/// A narrative call's result worth keeping.
enum Narrated {
    Sentence(String),
    Story(Box<RelationshipStory>),
}

impl Pipeline {
    /// Discovery and biography at once (both read only the graph), then — once the biography is
    /// usable — narratives in waves of as many candidates as winners are still missing, so the
    /// winners and the calls made are those of the original's one-by-one loop.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn generate(
        &self,
        graph: &Graph,
        entity: &Entity,
        books: Vec<crate::model::Book>,
        universe: Vec<CollectionEntity>,
        model: String,
        allowance: &Allowance,
        tally: &Tally,
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

        let discovery_request = DiscoveryRequest {
            model: model.clone(),
            allowance: allowance.clone(),
            entity: CollectionEntity {
                entity: entity.entity,
                name: entity.name.clone(),
            },
            universe,
        };
        let biography_request = BiographyRequest {
            model: model.clone(),
            allowance: allowance.clone(),
            entity: entity.clone(),
            books: books.clone(),
            connections: connections.clone(),
        };
        let (discovery, bio) = tokio::join!(
            self.generator.discover_connections(&discovery_request),
            self.generator.biography(&biography_request),
        );
        let discovery = discovery.map_err(|e| tally.error(e));
        let bio = bio.map_err(|e| tally.error(e));
        let discovered = match discovery {
            Ok(reply) => tally.reply(reply).connections,
            Err(err) if err.is_unavailable() || err.stop() == Some(Stop::Cancelled) => {
                return Err(err.into());
            }
            Err(err) => {
                tracing::warn!(error = %err, "connection discovery failed; continuing without");
                Vec::new()
            }
        };
        let bio = bio?;
        let model_version = bio.model.clone();
        let bio = tally.reply(bio);
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

        // Classifier and pair prompts see the profiled entity as its graph node does (docs/compatibility.md, "Narrative selection"):
        // publishers and binders carry no years there.
        let source = source_node.map_or_else(|| without_years(entity), entity_of_node);
        let mut candidates = neighbours.iter().filter_map(|(edge, other)| {
            let target = entity_of_node(other);
            let trigger = classify(&ClassifyInput {
                source_era: source_node.and_then(|n| n.era).map(|e| e.as_str()),
                target_era: other.era.map(|e| e.as_str()),
                source_years: Years::of(&source),
                target_years: Years::of(&target),
                source_connection_count: source_count,
                has_relationship_story: false,
            })?;
            let shared: HashSet<i32> = edge.shared_book_ids.iter().flatten().copied().collect();
            Some(Candidate {
                key: format!("{node_id}:{}", other.id),
                trigger,
                pair: PairRequest {
                    model: model.clone(),
                    allowance: allowance.clone(),
                    source: source.clone(),
                    target,
                    connection_type: edge.edge_type.as_str().to_string(),
                    shared_titles: books
                        .iter()
                        .filter(|b| shared.contains(&b.id))
                        .map(|b| b.title.clone())
                        .collect(),
                    connections: connections.clone(),
                },
            })
        });

        let mut narratives = Map::new();
        let mut stories = Map::new();
        let mut narrated = 0;
        let mut capped = false;
        while narrated < MAX_NARRATIVES && !capped {
            let wave: Vec<Candidate> = candidates
                .by_ref()
                .take(MAX_NARRATIVES - narrated)
                .collect();
            if wave.is_empty() {
                break;
            }
            let results = join_all(wave.iter().map(|c| self.narrate(c, tally))).await;
            let mut unavailable = None;
            // In neighbour order, so the winners are the first usable ones, as in the original.
            for (candidate, result) in wave.into_iter().zip(results) {
                let key = candidate.key;
                match result {
                    Ok(Some(Narrated::Sentence(text))) => {
                        narratives.insert(key, Value::String(text));
                        narrated += 1;
                    }
                    Ok(Some(Narrated::Story(story))) => {
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
                            serde_json::to_value(&*story).expect("story serialises"),
                        );
                        narrated += 1;
                    }
                    Ok(None) => {}
                    Err(err) if err.is_unavailable() || err.stop() == Some(Stop::Cancelled) => {
                        unavailable.get_or_insert(err);
                    }
                    Err(err) if err.stop().is_some() => {
                        capped = true;
                        tracing::warn!(error = %err, connection = %key, "no more narratives for this profile");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, connection = %key, "connection narrative failed");
                    }
                }
            }
            if let Some(err) = unavailable {
                return Err(err.into());
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
        let usage = tally.total();
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
            usage: self.usage_row(&model_version, &usage),
        })
    }

    /// One narrative or relationship story; `Ok(None)` when the reply is not usable.
    async fn narrate(
        &self,
        candidate: &Candidate,
        tally: &Tally,
    ) -> Result<Option<Narrated>, GeneratorError> {
        if candidate.trigger.is_high_impact() {
            let request = RelationshipStoryRequest {
                pair: candidate.pair.clone(),
                trigger: candidate.trigger,
            };
            match self.generator.relationship_story(&request).await {
                Ok(reply) => Ok(tally.reply(reply).map(|s| Narrated::Story(Box::new(s)))),
                Err(err) => Err(tally.error(err)),
            }
        } else {
            match self.generator.connection_narrative(&candidate.pair).await {
                Ok(reply) => {
                    let text = tally.reply(reply);
                    Ok((!text.is_empty()).then_some(Narrated::Sentence(text)))
                }
                Err(err) => Err(tally.error(err)),
            }
        }
    }

    /// The `profile_generations` row of `usage` on `model`, its cost from `generator.prices`.
    pub(super) fn usage_row(&self, model: &str, usage: &Usage) -> GenerationUsage {
        GenerationUsage {
            model_id: model.to_string(),
            calls: usage.calls as i32,
            input_tokens: usage.input_tokens as i64,
            output_tokens: usage.output_tokens as i64,
            latency_ms: usage.latency.as_millis() as i64,
            cost_usd: estimate_cost_usd(&self.settings.prices, model, usage).unwrap_or(0.0),
            cache_read_tokens: usage.cache_read_tokens as i64,
            cache_write_tokens: usage.cache_write_tokens as i64,
        }
    }
}

/// What one generation writes.
pub(super) struct Generated {
    pub(super) write: ProfileWrite,
    pub(super) ai_rows: Vec<AiConnectionRow>,
    pub(super) usage: GenerationUsage,
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
