//! Command line: clap derive. `run` is what happens when no subcommand is given.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// SQS consumer daemon that generates entity profiles with Amazon Bedrock.
#[derive(Debug, Parser)]
#[command(name = "profile-worker", version = crate::build_info::VERSION, long_version = LONG_VERSION)]
pub struct Cli {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(
        long,
        global = true,
        env = "PROFILE_WORKER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Diagnostics only: `run` holds each message this many milliseconds and reports it done,
    /// instead of running the profile pipeline. Lets end-to-end tests drive the real binary.
    #[arg(long, global = true, hide = true, value_name = "MS")]
    pub diagnostic_hold_ms: Option<u64>,

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
