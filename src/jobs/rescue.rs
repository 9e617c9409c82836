//! Stuck-job rescue: fail `in_progress` jobs that can no longer complete, so they stop blocking
//! `enqueue --all` (the original left them `in_progress` forever, docs/compatibility.md, "Job states and counters").
//!
//! A job is stuck when its counters have not moved for `jobs.stale_after_seconds`, none of its
//! entities has a retry recorded within that window, and the queue — as far as its approximate
//! counts tell — holds no message at all (visible, in flight or delayed). The last condition is
//! checked here; the others are one conditional `UPDATE` in [`Store::fail_stuck_jobs`], so every
//! replica can run this loop: each job fails at most once, and progress racing the check wins.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::JobsError;
use crate::config::JobsConfig;
use crate::queue::{Queue, QueueDepth};
use crate::shutdown::Every;
use crate::store::Store;

/// When the rescue runs and what it calls stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescueSettings {
    /// No progress for this long (and nothing pending) makes an `in_progress` job stuck.
    pub stale_after: Duration,
    /// Time between checks.
    pub interval: Duration,
}

impl RescueSettings {
    /// The `[jobs]` settings; `None` when the rescue is off (`stale_after_seconds = 0`).
    pub fn from_config(config: &JobsConfig) -> Option<Self> {
        (config.stale_after_seconds > 0).then(|| Self {
            stale_after: Duration::from_secs(config.stale_after_seconds),
            interval: Duration::from_secs(config.check_interval_seconds.max(1)),
        })
    }
}

/// What one check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescueRound {
    /// The queue still holds messages (they may belong to a job), so nothing was failed.
    HeldOff(QueueDepth),
    /// The check ran; these jobs were marked `failed`.
    Checked(Vec<String>),
}

/// One check: reads the queue depth (when a queue is given), then fails the stuck jobs.
pub async fn rescue_once(
    store: &dyn Store,
    queue: Option<&dyn Queue>,
    stale_after: Duration,
) -> Result<RescueRound, JobsError> {
    if let Some(queue) = queue {
        let depth = queue.approximate_depth().await?;
        if depth.visible + depth.in_flight + depth.delayed > 0 {
            return Ok(RescueRound::HeldOff(depth));
        }
    }
    Ok(RescueRound::Checked(
        store.fail_stuck_jobs(stale_after).await?,
    ))
}

/// Runs [`rescue_once`] every `settings.interval` (the first check at once) until `shutdown`;
/// logs each job it fails. Errors are logged and the next round tries again.
pub async fn rescue_loop(
    store: Arc<dyn Store>,
    queue: Option<Arc<dyn Queue>>,
    settings: RescueSettings,
    shutdown: CancellationToken,
) {
    tracing::info!(
        stale_after_seconds = settings.stale_after.as_secs(),
        interval_seconds = settings.interval.as_secs(),
        "stuck-job rescue on"
    );
    let mut every = Every::new(settings.interval, shutdown);
    while let Some(round) = every
        .round(rescue_once(&*store, queue.as_deref(), settings.stale_after))
        .await
    {
        match round {
            Ok(RescueRound::Checked(failed)) => {
                for job_id in failed {
                    log_rescued(&*store, &job_id, settings.stale_after).await;
                }
            }
            Ok(RescueRound::HeldOff(depth)) => tracing::debug!(
                visible = depth.visible,
                in_flight = depth.in_flight,
                delayed = depth.delayed,
                "stuck-job check held off: the queue is not empty"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "stuck-job check failed; trying again next round")
            }
        }
    }
}

async fn log_rescued(store: &dyn Store, job_id: &str, stale_after: Duration) {
    match store.job(job_id).await {
        Ok(Some(job)) => tracing::warn!(
            job_id,
            total = job.total_entities,
            succeeded = job.succeeded,
            failed = job.failed,
            stale_after_seconds = stale_after.as_secs(),
            "stuck job marked failed: no progress and nothing pending"
        ),
        _ => tracing::warn!(
            job_id,
            stale_after_seconds = stale_after.as_secs(),
            "stuck job marked failed: no progress and nothing pending"
        ),
    }
}

/// Spawns [`rescue_loop`] with the `[jobs]` settings; `None` (and nothing spawned) when the
/// rescue is off. The task ends when `shutdown` is cancelled; `queue` enables the empty-queue
/// condition (pass the consumer's queue).
pub fn spawn_rescue(
    store: Arc<dyn Store>,
    queue: Option<Arc<dyn Queue>>,
    config: &JobsConfig,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    let Some(settings) = RescueSettings::from_config(config) else {
        tracing::info!("stuck-job rescue off (jobs.stale_after_seconds = 0)");
        return None;
    };
    Some(tokio::spawn(rescue_loop(store, queue, settings, shutdown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, JobStatus};
    use crate::queue::{MemoryQueue, OutgoingMessage};
    use crate::store::{JobStore, MemoryStore};

    fn stale_job(id: &str) -> Job {
        let old = chrono::Utc::now() - chrono::Duration::hours(2);
        Job {
            id: id.into(),
            status: JobStatus::InProgress,
            owner_id: 1,
            total_entities: 3,
            succeeded: 1,
            failed: 0,
            error_log: None,
            completed_at: None,
            created_at: old,
            updated_at: old,
        }
    }

    #[test]
    fn zero_turns_the_rescue_off() {
        let off = JobsConfig {
            stale_after_seconds: 0,
            check_interval_seconds: 60,
        };
        assert_eq!(RescueSettings::from_config(&off), None);
        let on = JobsConfig {
            stale_after_seconds: 1800,
            check_interval_seconds: 60,
        };
        assert_eq!(
            RescueSettings::from_config(&on),
            Some(RescueSettings {
                stale_after: Duration::from_secs(1800),
                interval: Duration::from_secs(60),
            })
        );
    }

    #[tokio::test]
    async fn a_non_empty_queue_holds_the_rescue_off() {
        let store = MemoryStore::new();
        store.add_user(1);
        store.add_job(stale_job("j"));
        let queue = MemoryQueue::new();
        queue.send(&OutgoingMessage::new("{}")).await.unwrap();
        let round = rescue_once(&store, Some(&queue), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(round, RescueRound::HeldOff(d) if d.visible == 1));
        assert_eq!(
            store.job("j").await.unwrap().unwrap().status,
            JobStatus::InProgress
        );

        let empty = MemoryQueue::new();
        let round = rescue_once(&store, Some(&empty), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(round, RescueRound::Checked(vec!["j".into()]));
        assert_eq!(
            store.job("j").await.unwrap().unwrap().status,
            JobStatus::Failed
        );
    }
}
