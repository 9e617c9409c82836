//! Outcome policy: what each way a delivery can end does to the message and to its job.
//!
//! | outcome  | the message                                   | the job                          |
//! |----------|-----------------------------------------------|----------------------------------|
//! | done     | deleted (batched)                             | success counted with the profile |
//! | skipped  | deleted                                       | success counted                  |
//! | retry    | hidden for a jittered backoff, then redelivered | retry noted on the job item    |
//! | failed   | dead-letter copy, then deleted                | failure counted, `error_log` line |
//! | poison   | dead-letter copy (or logged whole), then deleted | nothing: the body names no job |
//! | hold     | kept invisible, retried in process when the dependency answers | nothing       |
//!
//! A failure is either the message's own (this entity's data, this reply: retry or failed) or a
//! dependency's (database unreachable, Bedrock throttling or refusing the configured model):
//! [`Outcome::Hold`]. A held message consumes no receive count and counts nothing failed; the
//! consumer stops receiving while any dependency is down (see docs/reliability.md).
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
    /// A dependency is down, not the message's fault: keep the message invisible, stop
    /// receiving, and run the handler again once the dependency answers.
    Hold {
        dependency: Dependency,
        reason: String,
    },
}

/// A dependency whose outage pauses receiving (the `profile_worker_paused{dependency}` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    Database,
    Bedrock,
    Queue,
    /// Today's Bedrock spend reached `budget.daily_cost_usd` (docs/decisions.md, "Daily cost
    /// cap"): generation waits for the next UTC day or a higher cap.
    DailyCostCap,
}

impl Dependency {
    pub const ALL: [Dependency; 4] = [
        Dependency::Database,
        Dependency::Bedrock,
        Dependency::Queue,
        Dependency::DailyCostCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Bedrock => "bedrock",
            Dependency::Queue => "queue",
            Dependency::DailyCostCap => "daily_cost_cap",
        }
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// This message's own: `transient` failures come back through the visibility-retry path.
    Message { transient: bool },
    /// A dependency is down: hold the message.
    Dependency(Dependency),
}
