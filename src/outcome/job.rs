//! The job side of the outcome policy: what a finished delivery records against its job.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::model::EntityRef;
use crate::store::{Outcome as JobOutcome, OutcomeRecord, Store, StoreError};

use super::{Blame, Dependency, Outcome};

/// Which delivery of which (job, entity) the records are about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `None` for ad-hoc messages: nothing is recorded.
    pub job_id: Option<&'a str>,
    pub entity: EntityRef,
    /// Delivery attempt (SQS `ApproximateReceiveCount`).
    pub attempt: i32,
    /// A transient failure now is final.
    pub is_last_attempt: bool,
}

/// Records outcomes on jobs; counts `jobs_completed` when a record completes its job.
pub struct Ledger {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }

    /// Counts a success without a profile (a skip).
    pub async fn succeeded(&self, subject: Subject<'_>) -> Result<(), StoreError> {
        self.record(subject, JobOutcome::Succeeded).await
    }

    /// Notes that a profile commit completed its job (the commit counted the success itself).
    pub fn committed(&self, completed: bool) {
        if completed {
            self.metrics.jobs_completed.inc();
        }
    }

    /// Turns a failure into the delivery's outcome and records it. A dependency's failure holds
    /// the message and records nothing (the job is not at fault, and the database may be the
    /// dependency). A transient failure of the message before the last attempt is noted as a
    /// retry and comes back; anything else is counted failed (unless recording that fails: a
    /// database outage holds, another transient error with attempts left comes back).
    pub async fn failed(&self, subject: Subject<'_>, reason: String, blame: Blame) -> Outcome {
        let attempt = subject.attempt;
        let transient = match blame {
            Blame::Dependency(dependency) => {
                tracing::warn!(error = %reason, dependency = dependency.as_str(), "dependency down; message held");
                return Outcome::Hold { dependency, reason };
            }
            Blame::Message { transient } => transient,
        };
        if transient && !subject.is_last_attempt {
            tracing::warn!(error = %reason, attempt, "transient failure; the message will come back");
            if let Some(job_id) = subject.job_id
                && let Err(e) = self
                    .store
                    .record_retry(job_id, subject.entity, attempt, &reason)
                    .await
            {
                tracing::warn!(error = %e, "cannot record the retry on the job");
            }
            return Outcome::Retry { reason };
        }
        tracing::error!(error = %reason, attempt, transient, "profile generation failed");
        let failure = JobOutcome::Failed {
            message: reason.clone(),
        };
        if let Err(e) = self.record(subject, failure).await {
            if e.is_unavailable() {
                return Outcome::Hold {
                    dependency: Dependency::Database,
                    reason: format!("cannot record the failure: {e}"),
                };
            }
            if e.is_transient() && !subject.is_last_attempt {
                return Outcome::Retry {
                    reason: format!("{reason}; and recording the failure failed: {e}"),
                };
            }
            tracing::error!(error = %e, "cannot record the failure on the job");
        }
        Outcome::Failed { reason }
    }

    async fn record(&self, subject: Subject<'_>, outcome: JobOutcome) -> Result<(), StoreError> {
        let Some(job_id) = subject.job_id else {
            return Ok(());
        };
        let recorded = self
            .store
            .record_outcome(OutcomeRecord {
                job_id: job_id.to_string(),
                entity: subject.entity,
                attempt: subject.attempt,
                outcome,
            })
            .await?;
        self.committed(recorded.completed);
        Ok(())
    }
}
