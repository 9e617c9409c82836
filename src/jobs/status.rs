//! A job's progress, rate, ETA and cost, rendered for a terminal or as JSON.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::model::{Job, JobStatus};
use crate::store::UsageTotals;

/// Derived progress of a job at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// `succeeded + failed` (may exceed the total when the total was lowered late).
    pub processed: i64,
    /// Entities still to finish, never negative.
    pub remaining: i64,
    /// From creation to completion, or to `now` while the job runs.
    pub elapsed: Duration,
    /// Entities finished per minute over `elapsed`; `None` before the first one.
    pub rate_per_minute: Option<f64>,
    /// Time left at that rate; only for an active job with a rate.
    pub eta: Option<Duration>,
}

/// Progress of `job` as of `now`. The rate is the job's average since it was created, which is
/// what an ETA for a queue drained at a steady concurrency needs.
pub fn progress(job: &Job, now: DateTime<Utc>) -> Progress {
    let processed = i64::from(job.succeeded) + i64::from(job.failed);
    let remaining = (i64::from(job.total_entities) - processed).max(0);
    let end = job.completed_at.unwrap_or(now);
    let elapsed = (end - job.created_at).to_std().unwrap_or(Duration::ZERO);
    let minutes = elapsed.as_secs_f64() / 60.0;
    let rate_per_minute = (processed > 0 && minutes > 0.0).then(|| processed as f64 / minutes);
    let eta = match rate_per_minute {
        Some(rate) if !job.status.is_terminal() => Some(Duration::from_secs_f64(
            (remaining as f64 / rate * 60.0).min(1e9),
        )),
        _ => None,
    };
    Progress {
        processed,
        remaining,
        elapsed,
        rate_per_minute,
        eta,
    }
}

/// Everything `status` shows about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job: Job,
    pub usage: UsageTotals,
    pub progress: Progress,
    /// Estimated Bedrock cost recorded today (UTC) by every job and replica, when read.
    pub spend_today_usd: Option<f64>,
}

impl JobReport {
    pub fn new(job: Job, usage: UsageTotals, now: DateTime<Utc>) -> Self {
        let progress = progress(&job, now);
        Self {
            job,
            usage,
            progress,
            spend_today_usd: None,
        }
    }

    /// Adds today's spend across all jobs and replicas (the daily cost cap's measure).
    pub fn with_spend_today(mut self, usd: f64) -> Self {
        self.spend_today_usd = Some(usd);
        self
    }

    /// Machine output: the job row (with `error_log`), derived progress and Bedrock usage.
    pub fn to_json(&self) -> serde_json::Value {
        let j = &self.job;
        let p = &self.progress;
        json!({
            "job_id": j.id,
            "status": j.status,
            "owner_id": j.owner_id,
            "total_entities": j.total_entities,
            "succeeded": j.succeeded,
            "failed": j.failed,
            "processed": p.processed,
            "remaining": p.remaining,
            "percent": percent(j),
            "created_at": j.created_at,
            "updated_at": j.updated_at,
            "completed_at": j.completed_at,
            "elapsed_seconds": p.elapsed.as_secs(),
            "rate_per_minute": p.rate_per_minute,
            "eta_seconds": p.eta.map(|d| d.as_secs()),
            "usage": {
                "profiles": self.usage.profiles,
                "calls": self.usage.calls,
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "cache_read_tokens": self.usage.cache_read_tokens,
                "cache_write_tokens": self.usage.cache_write_tokens,
                "estimated_cost_usd": self.usage.cost_usd,
                "discarded_calls": self.usage.discarded_calls,
                "discarded_cost_usd": self.usage.discarded_cost_usd,
            },
            "error_log": j.error_log,
            "spend_today_usd": self.spend_today_usd,
        })
    }

    /// Human output: a few aligned lines.
    pub fn to_text(&self) -> String {
        let j = &self.job;
        let p = &self.progress;
        let mut out = format!("job {}  {}\n", j.id, j.status);
        out += &format!(
            "  progress  {}/{} ({:.0}%)  succeeded {}  failed {}  remaining {}\n",
            p.processed,
            j.total_entities,
            percent(j),
            j.succeeded,
            j.failed,
            p.remaining
        );
        out += &format!("  rate      {}  eta {}\n", rate_text(p), eta_text(p));
        out += &format!(
            "  started   {}  elapsed {}",
            j.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            duration_text(p.elapsed)
        );
        if let Some(done) = j.completed_at {
            out += &format!("  ended {}", done.format("%Y-%m-%d %H:%M:%S UTC"));
        }
        out += "\n";
        out += &format!(
            "  usage     {} profile(s), {} model call(s), {} input + {} output tokens, est. ${:.4}",
            self.usage.profiles,
            self.usage.calls,
            self.usage.input_tokens,
            self.usage.output_tokens,
            self.usage.cost_usd
        );
        if self.usage.cache_read_tokens + self.usage.cache_write_tokens > 0 {
            out += &format!(
                ", cache {} read + {} written",
                self.usage.cache_read_tokens, self.usage.cache_write_tokens
            );
        }
        if self.usage.discarded_calls > 0 {
            out += &format!(
                " (incl. ${:.4} on {} call(s) that wrote no profile)",
                self.usage.discarded_cost_usd, self.usage.discarded_calls
            );
        }
        out += "\n";
        if let Some(today) = self.spend_today_usd {
            out +=
                &format!("  today     est. ${today:.4} spent (UTC day, all jobs and replicas)\n");
        }
        if let Some(log) = j.error_log.as_deref().filter(|l| !l.is_empty()) {
            let lines: Vec<&str> = log.lines().collect();
            out += &format!(
                "  errors    {} line(s); last: {}\n",
                lines.len(),
                lines.last().copied().unwrap_or_default()
            );
        }
        out
    }
}

/// One line of `status --watch` without a terminal: time, status, counters, rate, ETA.
pub fn watch_line(job: &Job, now: DateTime<Utc>) -> String {
    let p = progress(job, now);
    format!(
        "{} {} {} {}/{} succeeded={} failed={} rate={} eta={}",
        now.format("%Y-%m-%dT%H:%M:%SZ"),
        job.id,
        job.status,
        p.processed,
        job.total_entities,
        job.succeeded,
        job.failed,
        rate_text(&p),
        eta_text(&p)
    )
}

/// One line of `jobs`: id, status, counters, cost (every call billed), creation and end.
pub fn list_line(job: &Job, usage: &UsageTotals) -> String {
    format!(
        "{}  {:<11}  {:>6}/{:<6}  failed {:<5}  cost ${:<9.4}  created {}  ended {}",
        job.id,
        job.status,
        i64::from(job.succeeded) + i64::from(job.failed),
        job.total_entities,
        job.failed,
        usage.cost_usd,
        job.created_at.format("%Y-%m-%d %H:%M:%S"),
        job.completed_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    )
}

/// A job row as JSON for `jobs --json`, with its estimated cost (every call billed).
pub fn job_json(job: &Job, usage: &UsageTotals) -> serde_json::Value {
    json!({
        "job_id": job.id,
        "status": job.status,
        "owner_id": job.owner_id,
        "total_entities": job.total_entities,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "completed_at": job.completed_at,
        "estimated_cost_usd": usage.cost_usd,
    })
}

/// What a watcher compares between polls to decide whether anything changed.
pub fn watch_key(job: &Job) -> (JobStatus, i32, i32, i32) {
    (job.status, job.total_entities, job.succeeded, job.failed)
}

fn percent(job: &Job) -> f64 {
    if job.total_entities <= 0 {
        return if job.status == JobStatus::Completed {
            100.0
        } else {
            0.0
        };
    }
    let done = f64::from(job.succeeded) + f64::from(job.failed);
    (done / f64::from(job.total_entities) * 100.0).min(100.0)
}

/// `12.5/min`, or `-` before the first finished entity.
pub fn rate_text(p: &Progress) -> String {
    p.rate_per_minute
        .map(|r| format!("{r:.1}/min"))
        .unwrap_or_else(|| "-".into())
}

/// `8m05s`, or `-` when there is no estimate.
pub fn eta_text(p: &Progress) -> String {
    p.eta.map(duration_text).unwrap_or_else(|| "-".into())
}

/// `2h03m`, `8m05s` or `42s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus, total: i32, ok: i32, failed: i32, age_secs: i64) -> Job {
        let created: DateTime<Utc> = "2026-02-01T10:00:00Z".parse().unwrap();
        Job {
            id: "j".into(),
            status,
            owner_id: 1,
            total_entities: total,
            succeeded: ok,
            failed,
            error_log: None,
            completed_at: status
                .is_terminal()
                .then(|| created + chrono::Duration::seconds(age_secs)),
            created_at: created,
            updated_at: created,
        }
    }

    fn at(age_secs: i64) -> DateTime<Utc> {
        "2026-02-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::seconds(age_secs)
    }

    #[test]
    fn rate_and_eta_follow_the_average_since_creation() {
        let p = progress(&job(JobStatus::InProgress, 40, 9, 1, 0), at(300));
        assert_eq!((p.processed, p.remaining), (10, 30));
        assert_eq!(p.rate_per_minute, Some(2.0));
        assert_eq!(p.eta, Some(Duration::from_secs(900)));
    }

    #[test]
    fn no_rate_before_the_first_entity_and_no_eta_once_ended() {
        let p = progress(&job(JobStatus::InProgress, 40, 0, 0, 0), at(60));
        assert_eq!((p.rate_per_minute, p.eta), (None, None));
        let p = progress(&job(JobStatus::Completed, 40, 38, 2, 600), at(5000));
        assert_eq!(p.elapsed, Duration::from_secs(600));
        assert_eq!(p.rate_per_minute, Some(4.0));
        assert_eq!(p.eta, None);
    }

    #[test]
    fn counters_over_a_lowered_total_stay_sane() {
        let j = job(JobStatus::Completed, 3, 4, 0, 60);
        assert_eq!(progress(&j, at(60)).remaining, 0);
        assert_eq!(percent(&j), 100.0);
        assert_eq!(percent(&job(JobStatus::Completed, 0, 0, 0, 1)), 100.0);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(Duration::from_secs(42)), "42s");
        assert_eq!(duration_text(Duration::from_secs(485)), "8m05s");
        assert_eq!(duration_text(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn text_and_json_show_usage_and_errors() {
        let mut j = job(JobStatus::InProgress, 40, 9, 1, 0);
        j.error_log = Some("author:3: boom\nauthor:4: bang".into());
        let usage = UsageTotals {
            profiles: 9,
            calls: 27,
            input_tokens: 12_000,
            output_tokens: 3_000,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: 0.0216,
            discarded_calls: 2,
            discarded_cost_usd: 0.0016,
        };
        let report = JobReport::new(j, usage, at(300)).with_spend_today(1.5);
        let text = report.to_text();
        assert!(text.contains("10/40 (25%)"), "{text}");
        assert!(text.contains("rate      2.0/min  eta 15m00s"), "{text}");
        assert!(text.contains(
            "27 model call(s), 12000 input + 3000 output tokens, est. $0.0216 \
             (incl. $0.0016 on 2 call(s) that wrote no profile)"
        ));
        assert!(text.contains("2 line(s); last: author:4: bang"));
        assert!(text.contains("today     est. $1.5000 spent"), "{text}");
        let v = report.to_json();
        assert_eq!(v["status"], "in_progress");
        assert_eq!(v["eta_seconds"], 900);
        assert_eq!(v["usage"]["input_tokens"], 12_000);
        assert_eq!(v["usage"]["estimated_cost_usd"], 0.0216);
        assert_eq!(v["usage"]["discarded_cost_usd"], 0.0016);
    }
}
