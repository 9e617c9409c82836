//! Batch-job test helpers: a seeded collection of known size and a `Queue` that refuses chosen
//! entries of `SendMessageBatch` while passing the rest to a real queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use profile_worker::model::EntityRef;
use profile_worker::pipeline::message::parse;
use profile_worker::queue::{
    BatchFailure, OutgoingMessage, Queue, QueueDepth, QueueError, ReceivedMessage,
};

use super::db::TestDb;

/// Collection sizes of [`seed_collection`]: every one of them has a qualifying book.
pub const AUTHORS: i32 = 20;
pub const PUBLISHERS: i32 = 12;
pub const BINDERS: i32 = 8;
/// Entities [`seed_collection`] makes eligible for `enqueue --all`.
pub const ENTITIES: usize = (AUTHORS + PUBLISHERS + BINDERS) as usize;

/// Inserts an admin user (id 1), 20 authors, 12 publishers and 8 binders each with at least one
/// qualifying book, plus an author (id 21) whose only book is sold (not in the collection).
pub async fn seed_collection(db: &TestDb) {
    let mut sql =
        String::from("INSERT INTO users (id, cognito_sub, role) VALUES (1, 'sub-1', 'admin');\n");
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

/// A [`Queue`] over a real one whose `send_batch` refuses chosen entities: `always` on every
/// try, `once` on the first try only; and whose numbered calls (1-based) can fail as a whole.
pub struct FailingQueue {
    inner: Arc<dyn Queue>,
    always: BTreeSet<EntityRef>,
    once: Mutex<BTreeSet<EntityRef>>,
    call_errors: Mutex<BTreeMap<usize, QueueError>>,
    calls: AtomicUsize,
}

impl FailingQueue {
    pub fn new(inner: Arc<dyn Queue>) -> Self {
        Self {
            inner,
            always: BTreeSet::new(),
            once: Mutex::new(BTreeSet::new()),
            call_errors: Mutex::new(BTreeMap::new()),
            calls: AtomicUsize::new(0),
        }
    }

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
impl Queue for FailingQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>, QueueError> {
        self.inner.change_visibility_batch(entries).await
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<String, QueueError> {
        self.inner.send(message).await
    }

    async fn send_batch(
        &self,
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
            for mut f in self.inner.send_batch(&subset).await? {
                f.index = passed[f.index];
                refused.push(f);
            }
        }
        refused.sort_by_key(|f| f.index);
        Ok(refused)
    }

    async fn approximate_depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.approximate_depth().await
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.inner.max_receive_count()
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Queue>> {
        self.inner.dead_letter_queue()
    }
}
