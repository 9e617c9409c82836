//! The job side of [`MemoryStore`]: jobs, items and usage, counted exactly once per
//! (job, entity) like the PostgreSQL adapter.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::{Item, ItemOutcome, MemoryStore, State};
use crate::model::{EntityRef, Job, JobStatus};
use crate::store::{
    CancelOutcome, GenerationUsage, JobStore, Outcome, OutcomeRecord, Recorded, StoreError,
    UsageTotals, append_log, failure_line,
};

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

    pub(super) fn record_terminal(
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
        if matches!(self.items.get(&key), Some(item) if item.outcome != ItemOutcome::Retry) {
            return Recorded::default();
        }
        self.items.insert(
            key,
            Item {
                outcome: match outcome {
                    Outcome::Succeeded => ItemOutcome::Succeeded,
                    Outcome::Failed { .. } => ItemOutcome::Failed,
                },
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
impl JobStore for MemoryStore {
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

    async fn job_item_succeeded(
        &self,
        job_id: &str,
        entity: EntityRef,
    ) -> Result<bool, StoreError> {
        Ok(matches!(
            self.lock().items.get(&(job_id.to_owned(), entity)),
            Some(item) if item.outcome == ItemOutcome::Succeeded
        ))
    }

    async fn record_outcome(&self, record: OutcomeRecord) -> Result<Recorded, StoreError> {
        Ok(self
            .lock()
            .record_terminal(&record.job_id, record.entity, &record.outcome, Utc::now()))
    }

    async fn job_usage(&self, job_id: &str) -> Result<UsageTotals, StoreError> {
        let s = self.lock();
        Ok(sum_usage(
            s.generations
                .iter()
                .filter(|(j, _, _)| j.as_deref() == Some(job_id)),
        ))
    }

    /// Every row counts as today's: the embedded store keeps no timestamps (the demo runs within a day).
    async fn spend_today(&self) -> Result<UsageTotals, StoreError> {
        let s = self.lock();
        Ok(sum_usage(s.generations.iter()))
    }
}

/// Sums generation rows as PostgreSQL's rollups do: discarded rows cost but are no profile.
fn sum_usage<'a>(
    rows: impl Iterator<Item = &'a (Option<String>, GenerationUsage, bool)>,
) -> UsageTotals {
    let mut totals = UsageTotals::default();
    for (_, u, discarded) in rows {
        if *discarded {
            totals.discarded_calls += i64::from(u.calls);
            totals.discarded_cost_usd += u.cost_usd;
        } else {
            totals.profiles += 1;
        }
        totals.calls += i64::from(u.calls);
        totals.input_tokens += u.input_tokens;
        totals.output_tokens += u.output_tokens;
        totals.cache_read_tokens += u.cache_read_tokens;
        totals.cache_write_tokens += u.cache_write_tokens;
        totals.cost_usd += u.cost_usd;
    }
    totals
}
