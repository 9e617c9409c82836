//! Batch jobs as operators see them: start one over the whole collection, queue one entity,
//! follow a job's progress and cost, cancel it, and rescue jobs that can no longer finish.
//!
//! [`enqueue`] produces messages (the original API's generate-all and regenerate, with its races
//! fixed: the job is created `in_progress` before anything is sent, and messages that cannot be
//! sent lower the job's total instead of leaving it stuck). [`status`] turns a job row into
//! progress, rate, ETA and cost and renders it; [`rescue`] is the periodic stuck-job check `run`
//! hosts; [`commands`] is what the `enqueue`, `status`, `cancel` and `jobs` subcommands do.
//!
//! Everything works on the [`Store`](crate::store::Store) and [`Queue`](crate::queue::Queue)
//! ports, so the embedded demo drives the same code with its in-memory adapters.

pub mod commands;
pub mod enqueue;
pub mod rescue;
pub mod status;

pub use enqueue::{
    Batch, EnqueueReport, EntitiesReport, SendFailure, SendRetry, enqueue_all, enqueue_batch,
    enqueue_entities, enqueue_one, resolve_owner,
};
pub use rescue::{RescueRound, RescueSettings, rescue_loop, rescue_once, spawn_rescue};
pub use status::{JobReport, Progress, progress};

use crate::queue::QueueError;
use crate::store::StoreError;

/// Why a job operation failed, phrased as what the operator must do.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No `users` row has role `admin`, and no owner was given.
    #[error(
        "no admin user exists to own the job: pass --owner-id with an existing users.id \
         (jobs are audited by owner)"
    )]
    NoOwner,
    /// The database failed; retry when it is reachable (transient) or fix the data.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The queue failed before anything was sent; check its configuration or retry.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// Messages could not be sent and the job's total could not be lowered to match: the job
    /// cannot complete by itself. The stuck-job rescue fails it after `jobs.stale_after_seconds`;
    /// or cancel it.
    #[error(
        "{unsent} message(s) of job {job_id} could not be sent and its total could not be \
         lowered ({source}); cancel the job or let the stuck-job rescue fail it"
    )]
    ReduceTotal {
        job_id: String,
        unsent: usize,
        #[source]
        source: StoreError,
    },
    /// Writing the command's output failed (closed pipe, full disk).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
