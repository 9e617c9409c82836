//! Outcome policy: what each way a delivery can end does to the message and to its job.
//!
//! | outcome  | the message                                   | the job                          |
//! |----------|-----------------------------------------------|----------------------------------|
//! | done     | deleted (batched)                             | success counted with the profile |
//! | skipped  | deleted                                       | success counted                  |
//! | retry    | hidden for a jittered backoff, then redelivered | retry noted on the job item    |
//! | failed   | dead-letter copy, then deleted                | failure counted, `error_log` line |
//! | poison   | dead-letter copy (or logged whole), then deleted | nothing: the body names no job |
//!
//! A dead-letter copy that fails transiently never leads to a delete: the message takes the
//! retry path instead. [`job`] is the job side (run by the pipeline, which owns the store);
//! [`message`] the queue side (run by the consumer). See docs/decisions.md for why.

mod deleter;
pub mod job;
pub(crate) mod message;

/// What became of a delivery; the handler's answer to the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work committed: delete the message.
    Done,
    /// Nothing to do (fresh profile, cancelled job, no qualifying books): delete the message.
    Skipped,
    /// Transient failure: let the message come back after a backoff.
    Retry { reason: String },
    /// Permanent failure, already recorded by the handler: copy to the dead-letter queue (when
    /// one exists, for inspection and redrive), then delete.
    Failed { reason: String },
    /// The message itself is invalid: send it unchanged to the dead-letter queue (or log it
    /// whole when there is none), then delete. Never retried.
    Poison { reason: String },
}
