//! Command line: clap derive. `run` is what happens when no subcommand is given.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::model::EntityRef;

/// SQS consumer daemon that generates entity profiles with Amazon Bedrock.
#[derive(Debug, Parser)]
#[command(
    name = "profile-worker",
    version = crate::build_info::VERSION,
    long_version = LONG_VERSION,
    after_help = "Exit status: 0 success; 1 runtime failure; 64 bad configuration or usage; \
                  130 a second SIGTERM/SIGINT ended the drain early; enqueue, status and cancel \
                  add 3-6 (see their --help)."
)]
pub struct Cli {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(
        long,
        global = true,
        env = "PROFILE_WORKER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PW_BUILD_COMMIT"),
    ", built ",
    env!("PW_BUILD_DATE"),
    ")"
);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: consume the queue until SIGTERM (the default).
    Run,
    /// Apply pending database migrations (under an advisory lock; safe to run from several hosts).
    Migrate,
    /// Print the effective configuration (TOML, secrets redacted) and exit.
    Config,
    /// GET the side server's /health; exit 0 when it answers 200, else 1 (for container health checks).
    Healthcheck {
        /// URL to probe; default: /health on the configured server.listen port of 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print version, git commit and build date.
    Version,
    /// Run the whole pipeline on the bundled sample collection, with no external service.
    Demo(DemoArgs),
    /// Start a batch job over the collection (--all [--limit N]), or queue entities (--entity).
    #[command(after_help = ENQUEUE_EXIT)]
    Enqueue(EnqueueArgs),
    /// Show a job's status, counters, rate, ETA and Bedrock usage; --watch follows it to the end.
    #[command(after_help = STATUS_EXIT)]
    Status(StatusArgs),
    /// Cancel an active job (atomic); its remaining messages are skipped without Bedrock calls.
    #[command(after_help = CANCEL_EXIT)]
    Cancel {
        /// Id of the job to cancel.
        job_id: String,
    },
    /// List recent jobs, newest first, one line each.
    Jobs {
        /// How many jobs to list.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print a JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
}

const ENQUEUE_EXIT: &str = "Exit status: 0 messages sent (or an active job already exists, or the \
collection is empty); 5 some messages could not be sent (they are listed; with --all the job's \
total was lowered, so it can still complete); 64 bad configuration, usage or no job owner (use \
--owner-id); 1 other errors (database or queue unreachable).";

const STATUS_EXIT: &str = "Exit status: 0 shown (with --watch: the job completed); 3 no such job; \
6 with --watch: the job ended failed or cancelled; 64 bad configuration; 1 other errors.";

const CANCEL_EXIT: &str = "Exit status: 0 cancelled; 3 no such job; 4 the job had already ended \
(completed, failed or cancelled) and nothing changed; 64 bad configuration; 1 other errors.";

/// `enqueue` options: exactly one of `--all` and `--entity`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["all", "entity"])))]
pub struct EnqueueArgs {
    /// Every author, publisher and binder with a qualifying book, as one batch job.
    #[arg(long)]
    pub all: bool,
    /// With --all: only the first N entities (authors, then publishers, then binders, each by
    /// id), for the first rounds of a rollout.
    #[arg(long, value_name = "N", conflicts_with = "entity",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Entities as TYPE:ID (e.g. author:12), outside any job; repeat the flag or separate
    /// them with commas.
    #[arg(long, value_name = "TYPE:ID", value_parser = parse_entity, value_delimiter = ',')]
    pub entity: Vec<EntityRef>,
    /// Regenerate even profiles that are still fresh (always so for --entity: a message without
    /// a job is a person's request and regenerates regardless).
    #[arg(long)]
    pub force: bool,
    /// users.id recorded as the job's owner; default: the lowest id of an admin user.
    #[arg(long, value_name = "N", conflicts_with = "entity")]
    pub owner_id: Option<i32>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Id of the job.
    pub job_id: String,
    /// Follow the job until it ends: a progress bar in a terminal, a line per change otherwise.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (with --watch: one object per line, on each change).
    #[arg(long)]
    pub json: bool,
    /// Seconds between polls with --watch.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_interval)]
    pub interval: f64,
}

fn parse_entity(s: &str) -> Result<EntityRef, String> {
    s.parse()
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in 0.05..=3600")),
    }
}

impl Cli {
    /// The subcommand, with `run` standing in when none was given.
    pub fn command(&self) -> &Command {
        self.command.as_ref().unwrap_or(&Command::Run)
    }
}

/// `demo` options: embedded adapters by default, real ones on request.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Simulated latency of each generator call, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub latency_ms: u64,
    /// Run a second generate-all pass, which finds every profile fresh and skips it.
    #[arg(long)]
    pub twice: bool,
    /// Use this PostgreSQL database (migrated; the sample is loaded if it has no collection).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Use this SQS queue instead of the in-memory one (endpoint and credentials from the AWS chain).
    #[arg(long, value_name = "URL")]
    pub queue_url: Option<String>,
    /// Share graphs through this Redis instead of only the in-process cache.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// No progress bar (also implied when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}
