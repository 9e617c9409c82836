//! `MemoryStore`: the [`Store`] in process memory, for the demo and for tests of other
//! components. Same semantics as [`super::PgStore`] (the contract suite runs against both); one
//! mutex around all state makes every unit of work atomic. The port's two sides live in
//! [`profiles`] and [`jobs`], like the PostgreSQL adapter's.

mod jobs;
mod profiles;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{GenerationUsage, PoolStatus, Store, StoreError};
use crate::model::{
    AiConnectionRow, AuthorRow, EntityRef, EntityType, Job, OrgRow, QUALIFYING_STATUSES,
    StoredProfile,
};

/// A `books` row as the memory store keeps it (the columns the daemon reads; also the bundled
/// sample's book records).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
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
    Succeeded,
    Failed,
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
    /// Usage rows: job id, usage, discarded.
    generations: Vec<(Option<String>, GenerationUsage, bool)>,
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

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}
