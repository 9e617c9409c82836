//! Generation of one profile: discovery, biography, then narratives for the graph neighbours.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{Pipeline, PipelineError};
use crate::generate::classify::{ClassifyInput, Years, classify};
use crate::generate::{
    BiographyRequest, DiscoveryRequest, MAX_NARRATIVES, PairRequest, RelationshipStoryRequest,
    Usage, estimate_cost_usd,
};
use crate::graph::{Graph, Node};
use crate::model::{AiConnectionRow, CollectionEntity, Entity};
use crate::store::{GenerationUsage, ProfileWrite};

impl Pipeline {
    /// Discovery → biography → narratives, in the original worker's order.
    pub(super) async fn generate(
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
            Err(err) if err.is_unavailable() => return Err(err.into()),
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

        // Classifier and pair prompts see the profiled entity as its graph node does (docs/compatibility.md, "Narrative selection"):
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
                    Err(err) if err.is_unavailable() => return Err(err.into()),
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
                    Err(err) if err.is_unavailable() => return Err(err.into()),
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
