//! The operator subcommands `enqueue`, `status`, `cancel` and `jobs`: open what they need, do
//! the work through [`super`], print the result, and say which exit status it deserves.
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
use super::{EnqueueReport, JobsError, enqueue_all, enqueue_one, resolve_owner};
use crate::cli::{EnqueueArgs, StatusArgs};
use crate::config::Config;
use crate::model::{Job, JobStatus};
use crate::queue::SqsQueue;
use crate::store::{CancelOutcome, JobStore, PgStore, Store};

/// How an operator command ended, as an exit status (documented in each subcommand's `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done as asked.
    Success,
    /// The job id does not exist (3).
    NotFound,
    /// `cancel` of a job that had already ended (4).
    AlreadyTerminal,
    /// `enqueue --all` could not send some messages; the job's total was lowered (5).
    Unsent,
    /// `status --watch` saw the job end `failed` or `cancelled` (6).
    EndedUnsuccessfully,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::NotFound => 3,
            Exit::AlreadyTerminal => 4,
            Exit::Unsent => 5,
            Exit::EndedUnsuccessfully => 6,
        }
    }
}

fn open_store(config: &Config) -> Result<PgStore, JobsError> {
    Ok(PgStore::connect(&config.database)?)
}

async fn open_queue(config: &Config) -> Result<SqsQueue, JobsError> {
    // Sends never long-poll: the per-attempt timeout only needs the SDK's margin.
    Ok(SqsQueue::connect(&config.queue, &config.aws, Duration::ZERO).await?)
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

/// `enqueue --all` or `enqueue --entity TYPE:ID`.
pub async fn enqueue(config: &Config, args: &EnqueueArgs) -> Result<Exit, JobsError> {
    let queue = open_queue(config).await?;
    if let Some(entity) = args.entity {
        // A message without a job always regenerates, so `--force` changes nothing here.
        let message_id = enqueue_one(&queue, entity).await?;
        if args.json {
            print_json(&json!({
                "entity": entity.to_string(),
                "job_id": null,
                "force": true,
                "message_id": message_id,
            }))?;
        } else {
            print_text(&format!("queued {entity} (message {message_id})\n"))?;
        }
        return Ok(Exit::Success);
    }

    let store = open_store(config)?;
    let owner = resolve_owner(&store, args.owner_id).await?;
    let report = enqueue_all(&store, &queue, owner, args.force).await?;
    let exit = match &report {
        EnqueueReport::Started { failures, .. } if !failures.is_empty() => Exit::Unsent,
        _ => Exit::Success,
    };
    if args.json {
        print_json(&enqueue_json(&report))?;
    } else {
        print_text(&enqueue_text(&report))?;
    }
    Ok(exit)
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
pub async fn status(config: &Config, args: &StatusArgs) -> Result<Exit, JobsError> {
    let store = open_store(config)?;
    let Some(job) = store.job(&args.job_id).await? else {
        eprintln!("profile-worker: no job with id {}", args.job_id);
        return Ok(Exit::NotFound);
    };
    if !args.watch {
        let report = JobReport::new(job.clone(), store.job_usage(&job.id).await?, Utc::now());
        if args.json {
            print_json(&report.to_json())?;
        } else {
            print_text(&report.to_text())?;
        }
        return Ok(Exit::Success);
    }
    let interval = Duration::from_secs_f64(args.interval);
    let job = if std::io::stdout().is_terminal() && !args.json {
        watch_with_bar(&store, job, interval).await?
    } else {
        watch_with_lines(&store, job, interval, args.json).await?
    };
    let Some(job) = job else {
        eprintln!("profile-worker: job {} disappeared", args.job_id);
        return Ok(Exit::NotFound);
    };
    Ok(if job.status == JobStatus::Completed {
        Exit::Success
    } else {
        Exit::EndedUnsuccessfully
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
pub async fn cancel(config: &Config, job_id: &str) -> Result<Exit, JobsError> {
    let store = open_store(config)?;
    match store.cancel_job(job_id).await? {
        CancelOutcome::Cancelled(job) => {
            let p = progress(&job, Utc::now());
            print_text(&format!(
                "job {} cancelled at {}/{}; its remaining messages will be skipped\n",
                job.id, p.processed, job.total_entities
            ))?;
            Ok(Exit::Success)
        }
        CancelOutcome::NotFound => {
            eprintln!("profile-worker: no job with id {job_id}");
            Ok(Exit::NotFound)
        }
        CancelOutcome::AlreadyTerminal(status) => {
            eprintln!("profile-worker: job {job_id} already {status}; nothing changed");
            Ok(Exit::AlreadyTerminal)
        }
    }
}

/// `jobs [--limit N] [--json]`.
pub async fn list(config: &Config, limit: i64, json: bool) -> Result<Exit, JobsError> {
    let store = open_store(config)?;
    let jobs = store.recent_jobs(limit).await?;
    if json {
        print_json(&serde_json::Value::Array(
            jobs.iter().map(job_json).collect(),
        ))?;
    } else if jobs.is_empty() {
        print_text("no jobs\n")?;
    } else {
        let lines: String = jobs.iter().map(|j| list_line(j) + "\n").collect();
        print_text(&lines)?;
    }
    Ok(Exit::Success)
}
