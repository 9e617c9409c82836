//! The operator subcommands `enqueue`, `status`, `cancel` and `jobs` over the store and queue
//! the composition root opens: do the work through [`super`], print the result, and say how
//! it ended ([`Outcome`]).
//!
//! Results go to stdout (text, or JSON with `--json`); problems go to stderr.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::status::{
    JobReport, eta_text, job_json, list_line, progress, rate_text, watch_key, watch_line,
};
use super::{
    Batch, EnqueueReport, EntitiesReport, JobsError, SendRetry, enqueue_batch, enqueue_entities,
    resolve_owner,
};
use crate::model::{EntityRef, Job, JobStatus};
use crate::queue::Queue;
use crate::store::{CancelOutcome, Store};

/// How an operator command ended; the exit status for each is chosen in
/// [`crate::app::exit`] and documented in the subcommand's `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// The job id does not exist.
    NotFound,
    /// `cancel` of a job that had already ended.
    AlreadyTerminal,
    /// `enqueue` could not send some messages (for a job, its total was lowered).
    Unsent,
    /// `status --watch` saw the job end `failed` or `cancelled`.
    EndedUnsuccessfully,
}

/// `enqueue --all` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    /// The job's owner; default: the lowest admin user id.
    pub owner_id: Option<i32>,
    /// Only the first this many entities of the collection.
    pub limit: Option<usize>,
    /// Regenerate even profiles that are still fresh.
    pub force: bool,
    /// Print JSON instead of text.
    pub json: bool,
}

/// `status` options.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusOptions {
    pub job_id: String,
    /// Follow the job until it ends.
    pub watch: bool,
    /// Print JSON instead of text.
    pub json: bool,
    /// Time between polls with `watch`.
    pub interval: Duration,
}

fn print_json(value: &serde_json::Value) -> Result<(), JobsError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

fn print_text(text: &str) -> Result<(), JobsError> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// `enqueue --entity TYPE:ID,…`: one message per entity, outside any job (which always
/// regenerates, so there is no `force` to pass).
pub async fn queue_entities(
    queue: &dyn Queue,
    entities: &[EntityRef],
    json: bool,
) -> Result<Outcome, JobsError> {
    let report = enqueue_entities(queue, entities).await?;
    if json {
        print_json(&entities_json(&report))?;
    } else {
        print_text(&entities_text(&report))?;
    }
    Ok(if report.failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Unsent
    })
}

/// `enqueue --all [--limit N]`: a batch job over the collection.
pub async fn start_job(
    store: &dyn Store,
    queue: &dyn Queue,
    options: JobOptions,
) -> Result<Outcome, JobsError> {
    let batch = Batch {
        owner_id: resolve_owner(store, options.owner_id).await?,
        force: options.force,
        limit: options.limit,
    };
    let report = enqueue_batch(store, queue, batch, SendRetry::default()).await?;
    let outcome = match &report {
        EnqueueReport::Started { failures, .. } if !failures.is_empty() => Outcome::Unsent,
        _ => Outcome::Success,
    };
    if options.json {
        print_json(&enqueue_json(&report))?;
    } else {
        print_text(&enqueue_text(&report))?;
    }
    Ok(outcome)
}

fn entities_json(report: &EntitiesReport) -> serde_json::Value {
    json!({
        "job_id": null,
        "force": true,
        "sent": report
            .sent
            .iter()
            .map(|(entity, id)| json!({"entity": entity.to_string(), "message_id": id}))
            .collect::<Vec<_>>(),
        "unsent": report
            .failures
            .iter()
            .map(|f| json!({"entity": f.entity.to_string(), "reason": f.reason}))
            .collect::<Vec<_>>(),
    })
}

fn entities_text(report: &EntitiesReport) -> String {
    let mut out: String = report
        .sent
        .iter()
        .map(|(entity, id)| format!("queued {entity} (message {id})\n"))
        .collect();
    for f in &report.failures {
        out += &format!("could not queue {}: {}\n", f.entity, f.reason);
    }
    out
}

fn enqueue_json(report: &EnqueueReport) -> serde_json::Value {
    match report {
        EnqueueReport::Existing(job) => json!({
            "job_id": job.id,
            "status": job.status,
            "total_entities": job.total_entities,
            "existing": true,
            "sent": 0,
            "unsent": [],
        }),
        EnqueueReport::Empty => json!({
            "job_id": null,
            "status": "empty",
            "total_entities": 0,
            "existing": false,
            "sent": 0,
            "unsent": [],
        }),
        EnqueueReport::Started {
            job,
            entities,
            sent,
            failures,
        } => json!({
            "job_id": job.id,
            "status": job.status,
            "total_entities": job.total_entities,
            "entities": entities,
            "existing": false,
            "sent": sent,
            "unsent": failures
                .iter()
                .map(|f| json!({"entity": f.entity.to_string(), "reason": f.reason}))
                .collect::<Vec<_>>(),
        }),
    }
}

fn enqueue_text(report: &EnqueueReport) -> String {
    match report {
        EnqueueReport::Existing(job) => {
            let p = progress(job, Utc::now());
            format!(
                "job {} is already {} ({}/{} done); nothing sent\n",
                job.id, job.status, p.processed, job.total_entities
            )
        }
        EnqueueReport::Empty => {
            "no author, publisher or binder has a qualifying book; no job created\n".into()
        }
        EnqueueReport::Started {
            job,
            entities,
            sent,
            failures,
        } => {
            let mut out = format!(
                "job {} {}: {sent} of {entities} message(s) sent\n",
                job.id, job.status
            );
            if !failures.is_empty() {
                out += &format!(
                    "could not send {} message(s); the job's total was lowered to {}:\n",
                    failures.len(),
                    job.total_entities
                );
                for f in failures {
                    out += &format!("  {}: {}\n", f.entity, f.reason);
                }
            }
            out
        }
    }
}

/// `status JOB_ID [--watch] [--json]`.
pub async fn status(store: &dyn Store, args: &StatusOptions) -> Result<Outcome, JobsError> {
    let Some(job) = store.job(&args.job_id).await? else {
        eprintln!("profile-worker: no job with id {}", args.job_id);
        return Ok(Outcome::NotFound);
    };
    if !args.watch {
        let report = JobReport::new(job.clone(), store.job_usage(&job.id).await?, Utc::now())
            .with_spend_today(store.spend_today().await?.cost_usd);
        if args.json {
            print_json(&report.to_json())?;
        } else {
            print_text(&report.to_text())?;
        }
        return Ok(Outcome::Success);
    }
    let interval = args.interval;
    let job = if std::io::stdout().is_terminal() && !args.json {
        watch_with_bar(store, job, interval).await?
    } else {
        watch_with_lines(store, job, interval, args.json).await?
    };
    let Some(job) = job else {
        eprintln!("profile-worker: job {} disappeared", args.job_id);
        return Ok(Outcome::NotFound);
    };
    Ok(if job.status == JobStatus::Completed {
        Outcome::Success
    } else {
        Outcome::EndedUnsuccessfully
    })
}

/// Polls the job until the next change of interest; transient database errors are logged and
/// polled through. `Ok(None)` when the job no longer exists.
async fn poll(store: &dyn Store, id: &str, interval: Duration) -> Result<Option<Job>, JobsError> {
    loop {
        tokio::time::sleep(interval).await;
        match store.job(id).await {
            Ok(job) => return Ok(job),
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "cannot read the job; trying again");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Without a terminal: a line (or a JSON report) whenever status or counters change, then a
/// final report once the job has ended. Returns the ended job.
async fn watch_with_lines(
    store: &dyn Store,
    mut job: Job,
    interval: Duration,
    json: bool,
) -> Result<Option<Job>, JobsError> {
    let mut shown = None;
    loop {
        let key = watch_key(&job);
        if shown != Some(key) {
            shown = Some(key);
            if json {
                let usage = store.job_usage(&job.id).await?;
                print_json(&JobReport::new(job.clone(), usage, Utc::now()).to_json())?;
            } else {
                print_text(&format!("{}\n", watch_line(&job, Utc::now())))?;
            }
        }
        if job.status.is_terminal() {
            break;
        }
        match poll(store, &job.id, interval).await? {
            Some(next) => job = next,
            None => return Ok(None),
        }
    }
    if !json {
        let usage = store.job_usage(&job.id).await?;
        print_text(&JobReport::new(job.clone(), usage, Utc::now()).to_text())?;
    }
    Ok(Some(job))
}

/// In a terminal: an indicatif bar (processed of total, status, failures, rate, ETA) until
/// the job ends, then the final report.
async fn watch_with_bar(
    store: &dyn Store,
    mut job: Job,
    interval: Duration,
) -> Result<Option<Job>, JobsError> {
    // Filled in while hidden so the first frame drawn is already complete.
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix:11} [{bar:40}] {pos}/{len} {msg} ({elapsed} watching)",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    show_on_bar(&bar, &job);
    bar.set_draw_target(ProgressDrawTarget::stdout());
    bar.enable_steady_tick(Duration::from_millis(120));
    while !job.status.is_terminal() {
        match poll(store, &job.id, interval).await {
            Ok(Some(next)) => {
                job = next;
                show_on_bar(&bar, &job);
            }
            Ok(None) => {
                bar.abandon();
                return Ok(None);
            }
            Err(err) => {
                bar.abandon();
                return Err(err);
            }
        }
    }
    bar.finish_and_clear();
    let usage = store.job_usage(&job.id).await?;
    print_text(&JobReport::new(job.clone(), usage, Utc::now()).to_text())?;
    Ok(Some(job))
}

fn show_on_bar(bar: &ProgressBar, job: &Job) {
    let p = progress(job, Utc::now());
    let total = u64::try_from(job.total_entities.max(0)).unwrap_or(0);
    bar.set_length(total);
    bar.set_position(u64::try_from(p.processed).unwrap_or(0).min(total));
    bar.set_prefix(job.status.to_string());
    bar.set_message(format!(
        "failed {} · {} · eta {}",
        job.failed,
        rate_text(&p),
        eta_text(&p)
    ));
}

/// `cancel JOB_ID`.
pub async fn cancel(store: &dyn Store, job_id: &str) -> Result<Outcome, JobsError> {
    match store.cancel_job(job_id).await? {
        CancelOutcome::Cancelled(job) => {
            let p = progress(&job, Utc::now());
            print_text(&format!(
                "job {} cancelled at {}/{}; its remaining messages will be skipped\n",
                job.id, p.processed, job.total_entities
            ))?;
            Ok(Outcome::Success)
        }
        CancelOutcome::NotFound => {
            eprintln!("profile-worker: no job with id {job_id}");
            Ok(Outcome::NotFound)
        }
        CancelOutcome::AlreadyTerminal(status) => {
            eprintln!("profile-worker: job {job_id} already {status}; nothing changed");
            Ok(Outcome::AlreadyTerminal)
        }
    }
}

/// `jobs [--limit N] [--json]`.
pub async fn list(store: &dyn Store, limit: i64, json: bool) -> Result<Outcome, JobsError> {
    let jobs = store.recent_jobs(limit).await?;
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let usage = store.job_usage(&job.id).await?;
        rows.push((job, usage));
    }
    if json {
        print_json(&serde_json::Value::Array(
            rows.iter().map(|(j, u)| job_json(j, u)).collect(),
        ))?;
    } else if rows.is_empty() {
        print_text("no jobs\n")?;
    } else {
        let mut lines: String = rows.iter().map(|(j, u)| list_line(j, u) + "\n").collect();
        lines += &format!(
            "today (UTC): est. ${:.4} spent by all jobs and replicas\n",
            store.spend_today().await?.cost_usd
        );
        print_text(&lines)?;
    }
    Ok(Outcome::Success)
}
