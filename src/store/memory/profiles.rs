//! The profile side of [`MemoryStore`]: the collection's reads and the profile unit of work.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{BookRecord, MemoryStore, State};
use crate::model::{
    AiConnectionRow, Book, BookLink, CollectionEntity, Entity, EntityRef, EntityType, GraphRows,
    StoredProfile,
};
use crate::store::{
    GenerationUsage, Outcome, ProfileStore, ProfileUnit, Recorded, StoreError,
    canonical_ai_connections,
};

impl State {
    fn upsert_ai_connections(&mut self, rows: &[AiConnectionRow]) {
        for row in canonical_ai_connections(rows) {
            let existing = self.ai_connections.values_mut().find(|r| {
                r.source_type == row.source_type
                    && r.source_id == row.source_id
                    && r.target_type == row.target_type
                    && r.target_id == row.target_id
                    && r.relationship == row.relationship
            });
            match existing {
                Some(old) => {
                    if row.confidence > old.confidence {
                        old.sub_type = row.sub_type;
                        old.evidence = row.evidence;
                    }
                    old.confidence = old.confidence.max(row.confidence);
                }
                None => {
                    self.next_ai_id += 1;
                    let id = self.next_ai_id;
                    self.ai_connections.insert(id, row);
                }
            }
        }
    }

    fn qualifying(&self) -> impl Iterator<Item = &BookRecord> {
        self.books.values().filter(|b| b.qualifies())
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn entity(&self, entity: EntityRef) -> Result<Option<Entity>, StoreError> {
        let s = self.lock();
        let base = |name: &str| Entity {
            entity,
            name: name.to_owned(),
            birth_year: None,
            death_year: None,
            founded_year: None,
            closed_year: None,
        };
        Ok(match entity.entity_type {
            EntityType::Author => s.authors.get(&entity.id).map(|a| Entity {
                birth_year: a.birth_year,
                death_year: a.death_year,
                ..base(&a.name)
            }),
            EntityType::Publisher => s.publishers.get(&entity.id).map(|p| Entity {
                founded_year: p.founded_year,
                ..base(&p.name)
            }),
            EntityType::Binder => s.binders.get(&entity.id).map(|b| Entity {
                founded_year: b.founded_year,
                closed_year: b.closed_year,
                ..base(&b.name)
            }),
        })
    }

    async fn qualifying_books(&self, entity: EntityRef) -> Result<Vec<Book>, StoreError> {
        let s = self.lock();
        let mut books: Vec<&BookRecord> = s.qualifying().filter(|b| b.links_to(entity)).collect();
        // ORDER BY year_start ASC NULLS LAST, id
        books.sort_by_key(|b| (b.year_start.is_none(), b.year_start, b.id));
        Ok(books
            .into_iter()
            .map(|b| Book {
                id: b.id,
                title: b.title.clone(),
                year_start: b.year_start,
            })
            .collect())
    }

    async fn latest_book_update(
        &self,
        entity: EntityRef,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let s = self.lock();
        Ok(s.qualifying()
            .filter(|b| b.links_to(entity))
            .map(|b| b.updated_at)
            .max())
    }

    async fn profile(&self, entity: EntityRef) -> Result<Option<StoredProfile>, StoreError> {
        Ok(self.lock().profiles.get(&entity).cloned())
    }

    async fn graph_rows(
        &self,
        include_binders: bool,
        max_books: i64,
    ) -> Result<GraphRows, StoreError> {
        let s = self.lock();
        let limit = usize::try_from(max_books.max(0)).unwrap_or(usize::MAX);
        let books: Vec<BookLink> = s
            .qualifying()
            .take(limit)
            .map(|b| BookLink {
                id: b.id,
                author_id: b.author_id,
                publisher_id: b.publisher_id,
                binder_id: b.binder_id,
            })
            .collect();
        let ids = |pick: fn(&BookLink) -> Option<i32>| -> BTreeSet<i32> {
            books.iter().filter_map(pick).collect()
        };
        let authors = ids(|b| b.author_id)
            .iter()
            .filter_map(|id| s.authors.get(id).cloned())
            .collect();
        let publishers = ids(|b| b.publisher_id)
            .iter()
            .filter_map(|id| s.publishers.get(id).cloned())
            .collect();
        let binders = if include_binders {
            ids(|b| b.binder_id)
                .iter()
                .filter_map(|id| s.binders.get(id).cloned())
                .collect()
        } else {
            Vec::new()
        };
        Ok(GraphRows {
            books,
            authors,
            publishers,
            binders,
            ai_connections: s.ai_connections.values().cloned().collect(),
        })
    }

    async fn collection_entities(&self) -> Result<Vec<CollectionEntity>, StoreError> {
        let s = self.lock();
        let mut out = Vec::new();
        for t in EntityType::ALL {
            let names: Vec<(i32, &str)> = match t {
                EntityType::Author => s
                    .authors
                    .values()
                    .map(|a| (a.id, a.name.as_str()))
                    .collect(),
                EntityType::Publisher => s
                    .publishers
                    .values()
                    .map(|p| (p.id, p.name.as_str()))
                    .collect(),
                EntityType::Binder => s
                    .binders
                    .values()
                    .map(|b| (b.id, b.name.as_str()))
                    .collect(),
            };
            for (id, name) in names {
                let entity = EntityRef::new(t, id);
                if s.qualifying().any(|b| b.links_to(entity)) {
                    out.push(CollectionEntity {
                        entity,
                        name: name.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn model_setting(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().app_config.get("model.entity_profiles").cloned())
    }

    async fn daily_cap_setting(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().app_config.get("budget.daily_cost_usd").cloned())
    }

    async fn commit_profile(&self, unit: ProfileUnit) -> Result<Recorded, StoreError> {
        let mut s = self.lock();
        let now = Utc::now();
        s.upsert_ai_connections(&unit.ai_connections);

        let p = unit.profile;
        let ai_connections = if p.ai_connections.is_empty() {
            None
        } else {
            Some(serde_json::Value::Array(p.ai_connections))
        };
        let mut stories = match s.profiles.get(&unit.entity) {
            Some(StoredProfile {
                relationship_stories: Some(serde_json::Value::Object(old)),
                ..
            }) => old.clone(),
            _ => serde_json::Map::new(),
        };
        stories.extend(p.relationship_stories);
        s.profiles.insert(
            unit.entity,
            StoredProfile {
                entity: unit.entity,
                bio_summary: p.bio_summary,
                personal_stories: Some(p.personal_stories),
                connection_narratives: Some(p.connection_narratives),
                relationship_stories: Some(serde_json::Value::Object(stories)),
                ai_connections,
                generated_at: Some(now),
                model_version: Some(p.model_version),
            },
        );
        s.generations.push((unit.job_id.clone(), unit.usage, false));
        Ok(match &unit.job_id {
            Some(job_id) => s.record_terminal(job_id, unit.entity, &Outcome::Succeeded, now),
            None => Recorded::default(),
        })
    }

    async fn record_discarded_usage(
        &self,
        _entity: EntityRef,
        job_id: Option<&str>,
        usage: &GenerationUsage,
    ) -> Result<(), StoreError> {
        self.lock()
            .generations
            .push((job_id.map(str::to_string), usage.clone(), true));
        Ok(())
    }
}
