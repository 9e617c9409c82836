//! `MemoryStore`: the [`Store`] in process memory, for the demo and for tests of other
//! components. Same semantics as [`super::PgStore`] (the contract suite runs against both); one
//! mutex around all state makes every unit of work atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::{
    CancelOutcome, GenerationUsage, Outcome, OutcomeRecord, PoolStatus, ProfileUnit, Recorded,
    Store, StoreError, UsageTotals, append_log, canonical_ai_connections, failure_line,
};
use crate::model::{
    AiConnectionRow, AuthorRow, Book, BookLink, CollectionEntity, Entity, EntityRef, EntityType,
    GraphRows, Job, JobStatus, OrgRow, QUALIFYING_STATUSES, StoredProfile,
};

/// A `books` row as the memory store keeps it (the columns the daemon reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookRecord {
    pub id: i32,
    pub title: String,
    pub author_id: Option<i32>,
    pub publisher_id: Option<i32>,
    pub binder_id: Option<i32>,
    /// Stored status string, e.g. `ON_HAND`; only `IN_TRANSIT`/`ON_HAND` qualify.
    pub status: String,
    pub year_start: Option<i32>,
    pub updated_at: DateTime<Utc>,
}

impl BookRecord {
    fn qualifies(&self) -> bool {
        QUALIFYING_STATUSES.contains(&self.status.as_str())
    }

    fn links_to(&self, entity: EntityRef) -> bool {
        let fk = match entity.entity_type {
            EntityType::Author => self.author_id,
            EntityType::Publisher => self.publisher_id,
            EntityType::Binder => self.binder_id,
        };
        fk == Some(entity.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemOutcome {
    Retry,
    Terminal,
}

#[derive(Debug, Clone)]
struct Item {
    outcome: ItemOutcome,
    updated_at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    authors: BTreeMap<i32, AuthorRow>,
    publishers: BTreeMap<i32, OrgRow>,
    binders: BTreeMap<i32, OrgRow>,
    books: BTreeMap<i32, BookRecord>,
    /// By id; ids are assigned in insertion order like a serial column.
    ai_connections: BTreeMap<i32, AiConnectionRow>,
    next_ai_id: i32,
    profiles: BTreeMap<EntityRef, StoredProfile>,
    /// Role by user id.
    users: BTreeMap<i32, String>,
    app_config: BTreeMap<String, String>,
    jobs: BTreeMap<String, Job>,
    items: BTreeMap<(String, EntityRef), Item>,
    generations: Vec<(Option<String>, GenerationUsage)>,
}

/// The embedded store: a collection loaded with the `add_*` methods, then used through [`Store`].
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every write is a few field
        // assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces an author.
    pub fn add_author(&self, author: AuthorRow) {
        self.lock().authors.insert(author.id, author);
    }

    /// Adds or replaces a publisher (`closed_year` is ignored: publishers have none).
    pub fn add_publisher(&self, mut publisher: OrgRow) {
        publisher.closed_year = None;
        self.lock().publishers.insert(publisher.id, publisher);
    }

    /// Adds or replaces a binder.
    pub fn add_binder(&self, binder: OrgRow) {
        self.lock().binders.insert(binder.id, binder);
    }

    /// Adds or replaces a book (replacing with a later `updated_at` makes profiles stale).
    pub fn add_book(&self, book: BookRecord) {
        self.lock().books.insert(book.id, book);
    }

    /// Appends an `ai_connections` row as given (no canonicalisation, like a raw INSERT).
    pub fn add_ai_connection(&self, row: AiConnectionRow) {
        let mut s = self.lock();
        s.next_ai_id += 1;
        let id = s.next_ai_id;
        s.ai_connections.insert(id, row);
    }

    /// Adds an admin user, so jobs may name it as owner and [`Store::default_owner`] finds it.
    pub fn add_user(&self, id: i32) {
        self.add_user_with_role(id, "admin");
    }

    /// Adds or replaces a user with a given `role` (`admin`, `editor`, `viewer`).
    pub fn add_user_with_role(&self, id: i32, role: &str) {
        self.lock().users.insert(id, role.to_owned());
    }

    /// Adds or replaces a stored profile (e.g. one generated before the demo starts).
    pub fn add_profile(&self, profile: StoredProfile) {
        self.lock().profiles.insert(profile.entity, profile);
    }

    /// Adds or replaces a job row as given.
    pub fn add_job(&self, job: Job) {
        self.lock().jobs.insert(job.id.clone(), job);
    }

    /// Sets an `app_config` value (e.g. `model.entity_profiles`).
    pub fn set_app_config(&self, key: &str, value: &str) {
        self.lock()
            .app_config
            .insert(key.to_owned(), value.to_owned());
    }
}

impl State {
    fn complete_if_done(&mut self, job_id: &str, now: DateTime<Utc>) -> bool {
        match self.jobs.get_mut(job_id) {
            Some(job)
                if !job.status.is_terminal()
                    && job.succeeded + job.failed >= job.total_entities =>
            {
                job.status = JobStatus::Completed;
                job.completed_at = Some(now);
                job.updated_at = now;
                true
            }
            _ => false,
        }
    }

    fn record_terminal(
        &mut self,
        job_id: &str,
        entity: EntityRef,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Recorded {
        if !self.jobs.contains_key(job_id) {
            return Recorded::default();
        }
        let key = (job_id.to_owned(), entity);
        if matches!(self.items.get(&key), Some(item) if item.outcome == ItemOutcome::Terminal) {
            return Recorded::default();
        }
        self.items.insert(
            key,
            Item {
                outcome: ItemOutcome::Terminal,
                updated_at: now,
            },
        );
        let job = self.jobs.get_mut(job_id).expect("checked above");
        match outcome {
            Outcome::Succeeded => job.succeeded += 1,
            Outcome::Failed { message } => {
                job.failed += 1;
                job.error_log = Some(append_log(
                    job.error_log.as_deref(),
                    &failure_line(entity, message),
                ));
            }
        }
        job.updated_at = now;
        let completed = self.complete_if_done(job_id, now);
        Recorded {
            counted: true,
            completed,
        }
    }

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

fn owner_missing(owner_id: i32) -> StoreError {
    StoreError::Rejected(DieselError::DatabaseError(
        DatabaseErrorKind::ForeignKeyViolation,
        Box::new(format!(
            "insert or update on table \"profile_generation_jobs\" violates foreign key: \
             users.id = {owner_id} does not exist"
        )),
    ))
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

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

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.lock().jobs.get(id).cloned())
    }

    async fn active_job(&self) -> Result<Option<Job>, StoreError> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|j| !j.status.is_terminal())
            .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .cloned())
    }

    async fn create_job(
        &self,
        owner_id: i32,
        total_entities: i32,
        status: JobStatus,
    ) -> Result<Job, StoreError> {
        let mut s = self.lock();
        if !s.users.contains_key(&owner_id) {
            return Err(owner_missing(owner_id));
        }
        let now = Utc::now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            status,
            owner_id,
            total_entities,
            succeeded: 0,
            failed: 0,
            error_log: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
        };
        s.jobs.insert(job.id.clone(), job.clone());
        Ok(job)
    }

    async fn cancel_job(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let mut s = self.lock();
        let Some(job) = s.jobs.get_mut(id) else {
            return Ok(CancelOutcome::NotFound);
        };
        if job.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyTerminal(job.status));
        }
        let now = Utc::now();
        job.status = JobStatus::Cancelled;
        job.completed_at = Some(now);
        job.updated_at = now;
        Ok(CancelOutcome::Cancelled(job.clone()))
    }

    async fn default_owner(&self) -> Result<Option<i32>, StoreError> {
        Ok(self
            .lock()
            .users
            .iter()
            .find(|(_, role)| role.as_str() == "admin")
            .map(|(id, _)| *id))
    }

    async fn recent_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        let s = self.lock();
        let mut jobs: Vec<Job> = s.jobs.values().cloned().collect();
        jobs.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        jobs.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        Ok(jobs)
    }

    async fn reduce_job_total(
        &self,
        id: &str,
        by: i32,
        note: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut s = self.lock();
        let now = Utc::now();
        let Some(job) = s.jobs.get_mut(id) else {
            return Ok(None);
        };
        job.total_entities = (job.total_entities - by).max(0);
        job.error_log = Some(append_log(job.error_log.as_deref(), note));
        job.updated_at = now;
        s.complete_if_done(id, now);
        Ok(s.jobs.get(id).cloned())
    }

    async fn fail_stuck_jobs(&self, stale_after: Duration) -> Result<Vec<String>, StoreError> {
        let mut s = self.lock();
        let now = Utc::now();
        let threshold =
            now - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        let live_retry: BTreeSet<String> = s
            .items
            .iter()
            .filter(|(_, item)| item.outcome == ItemOutcome::Retry && item.updated_at >= threshold)
            .map(|((job_id, _), _)| job_id.clone())
            .collect();
        let line = format!(
            "stuck: no progress for {}s and no retry pending; marked failed by profile-worker",
            stale_after.as_secs()
        );
        let mut failed = Vec::new();
        for job in s.jobs.values_mut() {
            if job.status == JobStatus::InProgress
                && job.updated_at < threshold
                && !live_retry.contains(&job.id)
            {
                job.status = JobStatus::Failed;
                job.updated_at = now;
                job.error_log = Some(append_log(job.error_log.as_deref(), &line));
                failed.push(job.id.clone());
            }
        }
        Ok(failed)
    }

    async fn record_retry(
        &self,
        job_id: &str,
        entity: EntityRef,
        _attempt: i32,
        _error: &str,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.jobs.contains_key(job_id) {
            return Ok(());
        }
        let now = Utc::now();
        let item = s.items.entry((job_id.to_owned(), entity)).or_insert(Item {
            outcome: ItemOutcome::Retry,
            updated_at: now,
        });
        if item.outcome == ItemOutcome::Retry {
            item.updated_at = now;
        }
        Ok(())
    }

    async fn record_outcome(&self, record: OutcomeRecord) -> Result<Recorded, StoreError> {
        Ok(self
            .lock()
            .record_terminal(&record.job_id, record.entity, &record.outcome, Utc::now()))
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
        s.generations.push((unit.job_id.clone(), unit.usage));
        Ok(match &unit.job_id {
            Some(job_id) => s.record_terminal(job_id, unit.entity, &Outcome::Succeeded, now),
            None => Recorded::default(),
        })
    }

    async fn job_usage(&self, job_id: &str) -> Result<UsageTotals, StoreError> {
        let s = self.lock();
        let mut totals = UsageTotals::default();
        for (_, u) in s
            .generations
            .iter()
            .filter(|(j, _)| j.as_deref() == Some(job_id))
        {
            totals.profiles += 1;
            totals.calls += i64::from(u.calls);
            totals.input_tokens += u.input_tokens;
            totals.output_tokens += u.output_tokens;
            totals.cost_usd += u.cost_usd;
        }
        Ok(totals)
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}
