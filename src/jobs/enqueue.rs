//! Producing messages: the whole collection as one batch job, or one entity ad hoc.

use std::time::Duration;

use super::JobsError;
use crate::model::{EntityRef, Job, JobStatus};
use crate::pipeline::message::Message;
use crate::queue::{MAX_BATCH, OutgoingMessage, Queue, QueueError};
use crate::retry::Backoff;
use crate::store::Store;

/// Most entities named in the `error_log` note of unsent messages (the report lists them all).
const NOTE_MAX_ENTITIES: usize = 20;

/// How failed sends are retried: `attempts` tries per batch in all, waiting a random delay up
/// to `base · 2^(n−1)` (at most `cap`) before try n+1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRetry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for SendRetry {
    /// Four tries over about three seconds at most: enough to ride out throttling without
    /// keeping an operator waiting.
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(2),
        }
    }
}

impl SendRetry {
    /// The wait after failed try n: full jitter below `base · 2^(n−1)`, at most `cap`.
    fn backoff(&self) -> Backoff {
        Backoff::exponential(self.base, self.cap).full_jitter()
    }
}

/// A message of a new job that was never stored by the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub entity: EntityRef,
    /// The queue's last answer for this entry, e.g. `InternalError: try again`.
    pub reason: String,
}

/// What `enqueue --all` did.
#[derive(Debug, Clone, PartialEq)]
pub enum EnqueueReport {
    /// A `pending` or `in_progress` job already exists; nothing was created or sent.
    Existing(Job),
    /// No entity has a qualifying book; no job was created.
    Empty,
    /// A new job was created `in_progress` and its messages sent.
    Started {
        /// The job as it is after sending (its total lowered by `failures.len()`).
        job: Job,
        /// Entities the job covers, its total before any was lowered.
        entities: usize,
        /// Messages the queue stored.
        sent: usize,
        /// Entities whose message could not be sent, in collection order.
        failures: Vec<SendFailure>,
    },
}

/// The owner of a new job: `explicit`, else the lowest admin user id.
pub async fn resolve_owner(store: &dyn Store, explicit: Option<i32>) -> Result<i32, JobsError> {
    match explicit {
        Some(id) => Ok(id),
        None => store.default_owner().await?.ok_or(JobsError::NoOwner),
    }
}

/// Queues one entity outside any job (`job_id: null`), which the worker regenerates even when its
/// profile is fresh (a person's request); the existing profile is kept until the new one replaces
/// it. Returns the queue's message id.
pub async fn enqueue_one(queue: &dyn Queue, entity: EntityRef) -> Result<String, JobsError> {
    let message = Message {
        job_id: None,
        entity,
        force: false,
    };
    Ok(queue.send(&OutgoingMessage::new(message.body())).await?)
}

/// What `enqueue --entity` did: one message per entity, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntitiesReport {
    /// Entities queued, with the queue's message id.
    pub sent: Vec<(EntityRef, String)>,
    /// Entities whose message could not be sent.
    pub failures: Vec<SendFailure>,
}

/// Queues each entity outside any job with [`enqueue_one`], one message each (duplicates are
/// sent once). A send that fails is listed and the rest still go out, unless the queue itself
/// is unusable (a permanent error on the first message), which is returned as an error.
pub async fn enqueue_entities(
    queue: &dyn Queue,
    entities: &[EntityRef],
) -> Result<EntitiesReport, JobsError> {
    let mut report = EntitiesReport::default();
    let mut seen = std::collections::HashSet::new();
    for &entity in entities.iter().filter(|e| seen.insert(**e)) {
        match enqueue_one(queue, entity).await {
            Ok(id) => report.sent.push((entity, id)),
            Err(JobsError::Queue(err)) if report.sent.is_empty() && !err.is_transient() => {
                return Err(JobsError::Queue(err));
            }
            Err(err) => report.failures.push(SendFailure {
                entity,
                reason: err.to_string(),
            }),
        }
    }
    Ok(report)
}

/// What a batch job covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// `users.id` recorded as the job's owner.
    pub owner_id: i32,
    /// Regenerate even profiles that are still fresh.
    pub force: bool,
    /// Only the first this many entities of the collection, in its order (authors, then
    /// publishers, then binders, each by id): the small first rounds of a rollout.
    pub limit: Option<usize>,
}

/// [`enqueue_batch`] over the whole collection with the default [`SendRetry`].
pub async fn enqueue_all(
    store: &dyn Store,
    queue: &dyn Queue,
    owner_id: i32,
    force: bool,
) -> Result<EnqueueReport, JobsError> {
    let batch = Batch {
        owner_id,
        force,
        limit: None,
    };
    enqueue_batch(store, queue, batch, SendRetry::default()).await
}

/// Starts a job over the collection's entities (all of them, or the first `batch.limit`): the
/// original API's generate-all, with its races fixed.
///
/// An active job is reported as is. Otherwise the job is created already `in_progress` with its
/// total, so a worker that finishes every message before this function returns completes it;
/// messages go out ten per `SendMessageBatch`, refused entries and failed calls are retried per
/// `retry`, and whatever still fails is listed and taken off the job's total (with an
/// `error_log` note), so the job can still complete. After a batch
/// call fails as a whole, later batches are not attempted: they are counted as unsent too.
///
/// Two operators starting a job at the same instant can both create one (the check and the
/// insert are separate statements, as in the original); each job then counts its own messages.
pub async fn enqueue_batch(
    store: &dyn Store,
    queue: &dyn Queue,
    batch: Batch,
    retry: SendRetry,
) -> Result<EnqueueReport, JobsError> {
    let Batch {
        owner_id,
        force,
        limit,
    } = batch;
    if let Some(job) = store.active_job().await? {
        return Ok(EnqueueReport::Existing(job));
    }
    let entities: Vec<EntityRef> = store
        .collection_entities()
        .await?
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|e| e.entity)
        .collect();
    if entities.is_empty() {
        return Ok(EnqueueReport::Empty);
    }
    let total = i32::try_from(entities.len()).expect("entity ids are i32, so their count fits");
    let job = store
        .create_job(owner_id, total, JobStatus::InProgress)
        .await?;
    tracing::debug!(job_id = %job.id, total, force, "job created; sending messages");

    let mut failures = Vec::new();
    let mut chunks = entities.chunks(MAX_BATCH);
    for chunk in chunks.by_ref() {
        let outcome = send_chunk(queue, &job.id, chunk, force, retry).await;
        failures.extend(outcome.failures);
        if let Some(err) = outcome.call_failed {
            let reason = format!("not attempted after a failed batch call: {err}");
            for rest in chunks.by_ref() {
                failures.extend(rest.iter().map(|&entity| SendFailure {
                    entity,
                    reason: reason.clone(),
                }));
            }
            break;
        }
    }
    let sent = entities.len() - failures.len();
    if failures.is_empty() {
        tracing::debug!(job_id = %job.id, sent, "all messages sent");
        return Ok(EnqueueReport::Started {
            job,
            entities: entities.len(),
            sent,
            failures,
        });
    }

    let unsent = failures.len();
    tracing::warn!(job_id = %job.id, sent, unsent, "some messages could not be sent; lowering the job's total");
    let note = unsent_note(entities.len(), &failures);
    let by = i32::try_from(unsent).expect("unsent <= total, which fits i32");
    let job = match store.reduce_job_total(&job.id, by, &note).await {
        Ok(Some(job)) => job,
        // The row was deleted by hand meanwhile: report the job with the total it would have.
        Ok(None) => Job {
            total_entities: total - by,
            ..job
        },
        Err(source) => {
            return Err(JobsError::ReduceTotal {
                job_id: job.id,
                unsent,
                source,
            });
        }
    };
    Ok(EnqueueReport::Started {
        job,
        entities: entities.len(),
        sent,
        failures,
    })
}

/// What sending one chunk achieved.
struct ChunkOutcome {
    failures: Vec<SendFailure>,
    /// The batch call itself failed for good (permanent, or transient on every try).
    call_failed: Option<QueueError>,
}

async fn send_chunk(
    queue: &dyn Queue,
    job_id: &str,
    chunk: &[EntityRef],
    force: bool,
    retry: SendRetry,
) -> ChunkOutcome {
    // Positions in `chunk` still to send, with the last reason each was refused.
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    let mut reasons: Vec<String> = vec![String::new(); chunk.len()];
    let mut failures = Vec::new();
    let mut call_error = None;
    let backoff = retry.backoff();
    for attempt in 1..=retry.attempts.max(1) {
        if attempt > 1 {
            tokio::time::sleep(backoff.delay(attempt - 1)).await;
        }
        let messages: Vec<OutgoingMessage> = pending
            .iter()
            .map(|&i| {
                let message = Message {
                    job_id: Some(job_id.to_string()),
                    entity: chunk[i],
                    force,
                };
                OutgoingMessage::new(message.body())
            })
            .collect();
        match queue.send_batch(&messages).await {
            Ok(refused) => {
                call_error = None;
                let mut again = Vec::new();
                for f in refused {
                    let Some(&i) = pending.get(f.index) else {
                        continue;
                    };
                    reasons[i] = format!("{}: {}", f.code, f.message);
                    if f.sender_fault {
                        // The entry itself is wrong: resending it unchanged fails the same way.
                        failures.push(SendFailure {
                            entity: chunk[i],
                            reason: reasons[i].clone(),
                        });
                    } else {
                        again.push(i);
                    }
                }
                pending = again;
            }
            Err(err) if err.is_transient() => {
                for &i in &pending {
                    reasons[i] = err.to_string();
                }
                call_error = Some(err);
            }
            Err(err) => {
                for &i in &pending {
                    reasons[i] = err.to_string();
                }
                call_error = Some(err);
                break;
            }
        }
        if pending.is_empty() {
            break;
        }
        tracing::debug!(
            job_id,
            attempt,
            pending = pending.len(),
            "retrying refused sends"
        );
    }
    failures.extend(pending.iter().map(|&i| SendFailure {
        entity: chunk[i],
        reason: std::mem::take(&mut reasons[i]),
    }));
    failures.sort_by_key(|f| chunk.iter().position(|e| *e == f.entity));
    ChunkOutcome {
        failures,
        call_failed: call_error,
    }
}

/// The `error_log` line recording unsent messages (one line, bounded length).
fn unsent_note(entities: usize, failures: &[SendFailure]) -> String {
    let mut names: Vec<String> = failures
        .iter()
        .take(NOTE_MAX_ENTITIES)
        .map(|f| f.entity.to_string())
        .collect();
    if failures.len() > NOTE_MAX_ENTITIES {
        names.push(format!("and {} more", failures.len() - NOTE_MAX_ENTITIES));
    }
    let first = failures
        .first()
        .map(|f| f.reason.replace('\n', " "))
        .unwrap_or_default();
    format!(
        "enqueue: {} of {entities} message(s) could not be sent; total_entities lowered by {}: {} \
         (first error: {first})",
        failures.len(),
        failures.len(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityType;

    #[test]
    fn the_unsent_note_is_one_bounded_line() {
        let failures: Vec<SendFailure> = (1..=25)
            .map(|id| SendFailure {
                entity: EntityRef::new(EntityType::Publisher, id),
                reason: "InternalError:\nboom".into(),
            })
            .collect();
        let note = unsent_note(40, &failures);
        assert!(!note.contains('\n'));
        assert!(note.starts_with("enqueue: 25 of 40 message(s) could not be sent"));
        assert!(note.contains("publisher:20, and 5 more"));
        assert!(!note.contains("publisher:21"));
        assert!(note.ends_with("(first error: InternalError: boom)"));
    }

    /// The demo drives the same code over the in-memory adapters.
    #[tokio::test]
    async fn works_on_the_memory_adapters() {
        use crate::model::AuthorRow;
        use crate::queue::MemoryQueue;
        use crate::store::{BookRecord, MemoryStore};

        let store = MemoryStore::new();
        store.add_user(1);
        for id in 1..=12 {
            store.add_author(AuthorRow {
                id,
                name: format!("Author {id}"),
                birth_year: None,
                death_year: None,
                tier: None,
                image_url: None,
            });
            store.add_book(BookRecord {
                id,
                title: format!("Book {id}"),
                author_id: Some(id),
                publisher_id: None,
                binder_id: None,
                status: "ON_HAND".into(),
                year_start: None,
                updated_at: chrono::Utc::now(),
            });
        }
        let queue = MemoryQueue::new();
        let owner = resolve_owner(&store, None).await.unwrap();
        let report = enqueue_all(&store, &queue, owner, false).await.unwrap();
        let EnqueueReport::Started { job, sent, .. } = report else {
            panic!("expected a new job, got {report:?}");
        };
        assert_eq!(
            (sent, job.total_entities, job.status),
            (12, 12, JobStatus::InProgress)
        );
        let depth = queue.approximate_depth().await.unwrap();
        assert_eq!(depth.visible, 12);
        assert_eq!(
            enqueue_all(&store, &queue, owner, false).await.unwrap(),
            EnqueueReport::Existing(job)
        );
    }

    #[test]
    fn retry_delays_stay_under_the_ceiling() {
        let retry = SendRetry {
            attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
        };
        let backoff = retry.backoff();
        let ceilings: Vec<u128> = (1..5).map(|a| backoff.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 300, 300]);
        for attempt in 1..6 {
            assert!(backoff.delay(attempt) <= backoff.ceiling(attempt));
        }
    }
}
