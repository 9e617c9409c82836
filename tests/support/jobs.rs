//! Batch-job test helpers: a seeded collection of known size and `SendMessageBatch` faults that
//! refuse chosen entries while passing the rest to a real queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use profile_worker::model::EntityRef;
use profile_worker::pipeline::message::parse;
use profile_worker::queue::{BatchFailure, OutgoingMessage, Queue, QueueError};

use super::db::TestDb;
use super::queue::Hooks;

/// Collection sizes of [`seed_collection`]: every one of them has a qualifying book.
pub const AUTHORS: i32 = 20;
pub const PUBLISHERS: i32 = 12;
pub const BINDERS: i32 = 8;
/// Entities [`seed_collection`] makes eligible for `enqueue --all`.
pub const ENTITIES: usize = (AUTHORS + PUBLISHERS + BINDERS) as usize;

/// Inserts an admin user (id 1), 20 authors, 12 publishers and 8 binders each with at least one
/// qualifying book, plus an author (id 21) whose only book is sold (not in the collection).
pub async fn seed_collection(db: &TestDb) {
    super::db::add_user(db, 1, "admin").await;
    let mut sql = String::new();
    for id in 1..=AUTHORS + 1 {
        sql += &format!("INSERT INTO authors (id, name) VALUES ({id}, 'Author {id}');\n");
    }
    for id in 1..=PUBLISHERS {
        sql += &format!("INSERT INTO publishers (id, name) VALUES ({id}, 'Publisher {id}');\n");
    }
    for id in 1..=BINDERS {
        sql += &format!("INSERT INTO binders (id, name) VALUES ({id}, 'Binder {id}');\n");
    }
    for id in 1..=AUTHORS {
        sql += &format!(
            "INSERT INTO books (id, title, author_id, publisher_id, binder_id, status) \
             VALUES ({id}, 'Book {id}', {id}, {}, {}, 'ON_HAND');\n",
            (id - 1) % PUBLISHERS + 1,
            (id - 1) % BINDERS + 1
        );
    }
    sql += &format!(
        "INSERT INTO books (id, title, author_id, status) VALUES (100, 'Sold', {}, 'SOLD');\n",
        AUTHORS + 1
    );
    db.exec(&sql).await;
}

/// Inserts a `profile_generations` usage row for a job.
pub async fn add_usage(db: &TestDb, job_id: &str, entity_id: i32, input: i64, output: i64) {
    db.exec(&format!(
        "INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, calls, \
         input_tokens, output_tokens, latency_ms, cost_usd) \
         VALUES ('author', {entity_id}, '{job_id}', 'test-model', 3, {input}, {output}, 1000, \
         {});",
        (input as f64 * 0.8 + output as f64 * 4.0) / 1e6
    ))
    .await;
}

/// `send_batch` faults for [`super::queue::Intercepted`]: chosen entities refused `always` (on
/// every try) or `once` (on the first try only), and numbered calls (1-based) failing as a whole.
#[derive(Default)]
pub struct SendFaults {
    always: BTreeSet<EntityRef>,
    once: Mutex<BTreeSet<EntityRef>>,
    call_errors: Mutex<BTreeMap<usize, QueueError>>,
    calls: AtomicUsize,
}

impl SendFaults {
    /// Refuses these entities on every try (a server-side fault, so they are retried).
    pub fn always(mut self, entities: &[EntityRef]) -> Self {
        self.always.extend(entities.iter().copied());
        self
    }

    /// Refuses these entities on their first try only.
    pub fn once(self, entities: &[EntityRef]) -> Self {
        self.once.lock().unwrap().extend(entities.iter().copied());
        self
    }

    /// Makes `send_batch` call number `call` (1-based) fail as a whole with `error`.
    pub fn fail_call(self, call: usize, error: QueueError) -> Self {
        self.call_errors.lock().unwrap().insert(call, error);
        self
    }

    /// `send_batch` calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Hooks for SendFaults {
    async fn send_batch(
        &self,
        inner: &dyn Queue,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(err) = self.call_errors.lock().unwrap().remove(&call) {
            return Err(err);
        }
        let mut refused = Vec::new();
        let mut passed = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let entity = parse(&message.body, 65_536)
                .expect("enqueue sends valid messages")
                .entity;
            let fail = self.always.contains(&entity) || self.once.lock().unwrap().remove(&entity);
            if fail {
                refused.push(BatchFailure {
                    index,
                    code: "InternalError".into(),
                    message: format!("injected failure for {entity}"),
                    sender_fault: false,
                });
            } else {
                passed.push(index);
            }
        }
        if !passed.is_empty() {
            let subset: Vec<OutgoingMessage> =
                passed.iter().map(|&i| messages[i].clone()).collect();
            for mut f in inner.send_batch(&subset).await? {
                f.index = passed[f.index];
                refused.push(f);
            }
        }
        refused.sort_by_key(|f| f.index);
        Ok(refused)
    }
}
