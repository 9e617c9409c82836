//! What each subcommand does with the configuration: check the settings it needs, start
//! logging, ask the [`App`] for its adapters, run, and say how it ended.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use super::exit::Exit;
use super::{Adapters, App, AppError, QueueAdapter, SharedCacheAdapter, StoreAdapter};
use crate::cli::{DemoArgs, EnqueueArgs, StatusArgs};
use crate::config::{self, ConfigError, GeneratorBackend, Loaded, LogFormat, Needs, SecretUrl};
use crate::demo::{self, DemoError};
use crate::jobs::JobsError;
use crate::jobs::commands::{self as operator, JobOptions, StatusOptions};
use crate::store::migrate::{self, MigrateError};
use crate::{server, shutdown, telemetry};

/// Why a subcommand failed; [`Exit::of_error`] picks its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("{0}")]
    Probe(String),
}

type Result<T = Exit> = std::result::Result<T, CommandError>;

fn block_on<T>(work: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
        .block_on(work)
}

/// Checks the settings a subcommand needs, then starts logging as configured.
fn prepare(loaded: &Loaded, needs: Needs) -> Result<()> {
    loaded.require(needs)?;
    telemetry::init(&loaded.config.log);
    Ok(())
}

/// `config`: the effective configuration, secrets redacted.
pub fn config(loaded: &Loaded) -> Result {
    print!("{}", loaded.redacted_toml());
    Ok(Exit::Success)
}

/// `run`: the daemon until SIGTERM.
pub fn run(loaded: Loaded) -> Result {
    let needs = Needs {
        queue: true,
        database: true,
    };
    prepare(&loaded, needs)?;
    let app = App::new(loaded.config, Adapters::PRODUCTION);
    let result = block_on(async {
        let token = shutdown::on_signals().map_err(CommandError::Signals)?;
        Ok(super::run(&app, token).await?)
    });
    if let Err(err) = &result {
        tracing::error!(error = %err, "profile-worker failed");
    }
    result.map(|()| Exit::Success)
}

/// `demo`: the daemon's wiring over the embedded adapters (or the real ones given), a
/// generate-all pass or two, and a summary.
pub fn demo(loaded: Loaded, args: &DemoArgs) -> Result {
    // A terminal show, not a service: readable, quiet logs unless configured otherwise.
    let mut config = loaded.config.clone();
    if loaded.source_of("log.format") == "built-in defaults" {
        config.log.format = LogFormat::Pretty;
    }
    if loaded.source_of("log.level") == "built-in defaults" {
        config.log.level = "warn".into();
    }
    telemetry::init(&config.log);
    config.generator.backend = GeneratorBackend::Offline;
    config.generator.offline_latency_ms = args.latency_ms;
    // Short polls keep the end of each pass prompt.
    config.consumer.wait_seconds = 1;
    config.cache.redis_url = SecretUrl::new(args.redis_url.clone().unwrap_or_default());
    let mut adapters = Adapters {
        store: StoreAdapter::Sample,
        queue: QueueAdapter::Memory,
        shared_cache: if args.redis_url.is_some() {
            SharedCacheAdapter::Redis
        } else {
            SharedCacheAdapter::Memory
        },
    };
    if let Some(url) = &args.database_url {
        config.database.url = SecretUrl::new(url.clone());
        adapters.store = StoreAdapter::PostgresWithSample {
            allow_shared_database: args.allow_shared_database,
        };
    }
    if let Some(url) = &args.queue_url {
        config.queue.url = url.clone();
        adapters.queue = QueueAdapter::Sqs;
    }
    let options = demo::Options {
        twice: args.twice,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let app = App::new(config, adapters);
    let report = block_on(async {
        let token = shutdown::on_signals().map_err(CommandError::Signals)?;
        Ok::<_, CommandError>(demo::run(&app, &options, token).await?)
    })?;
    print!("{}", report.render(app.config()));
    Ok(Exit::Success)
}

/// `healthcheck`: exit 0 when the side server answers 200.
pub fn healthcheck(loaded: &Loaded, url: Option<&str>, timeout: Duration) -> Result {
    let default = format!(
        "http://127.0.0.1:{}/health",
        loaded.config.server.listen.port()
    );
    let url = url.unwrap_or(&default);
    match block_on(server::probe(url, timeout)) {
        Ok(200) => Ok(Exit::Success),
        Ok(status) => Err(CommandError::Probe(format!("{url} answered {status}"))),
        Err(err) => Err(CommandError::Probe(err)),
    }
}

/// `migrate`: apply pending migrations (`standalone`: also the API's domain tables, for a
/// database without the API).
pub fn migrate(loaded: &Loaded, standalone: bool) -> Result {
    let needs = Needs {
        database: true,
        ..Needs::default()
    };
    prepare(loaded, needs)?;
    let mode = if standalone {
        migrate::Mode::Standalone
    } else {
        migrate::Mode::Shared
    };
    let app = App::new(loaded.config.clone(), Adapters::PRODUCTION);
    let applied = block_on(app.migrate(mode))?;
    println!("applied {} migration(s)", applied.len());
    Ok(Exit::Success)
}

/// `enqueue --all [--limit N]` or `enqueue --entity TYPE:ID,…`.
pub fn enqueue(loaded: Loaded, args: &EnqueueArgs) -> Result {
    let needs = Needs {
        queue: true,
        database: args.all,
    };
    prepare(&loaded, needs)?;
    let app = App::new(loaded.config, Adapters::PRODUCTION);
    block_on(async {
        let queue = app.sender_queue().await?;
        let outcome = if args.all {
            let store = app.store().await?;
            let options = JobOptions {
                owner_id: args.owner_id,
                limit: args.limit.map(|n| n as usize),
                force: args.force,
                json: args.json,
            };
            operator::start_job(store.as_ref(), queue.as_ref(), options).await?
        } else {
            operator::queue_entities(queue.as_ref(), &args.entity, args.json).await?
        };
        Ok(outcome.into())
    })
}

/// `status`, `cancel` and `jobs`: commands over the store alone.
fn with_store<F, Fut>(loaded: Loaded, work: F) -> Result
where
    F: FnOnce(std::sync::Arc<dyn crate::store::Store>) -> Fut,
    Fut: Future<Output = std::result::Result<operator::Outcome, JobsError>>,
{
    let needs = Needs {
        database: true,
        ..Needs::default()
    };
    prepare(&loaded, needs)?;
    let app = App::new(loaded.config, Adapters::PRODUCTION);
    block_on(async {
        let store = app.store().await?;
        Ok(work(store).await?.into())
    })
}

/// `status JOB_ID [--watch] [--json]`.
pub fn status(loaded: Loaded, args: &StatusArgs) -> Result {
    let options = StatusOptions {
        job_id: args.job_id.clone(),
        watch: args.watch,
        json: args.json,
        interval: Duration::from_secs_f64(args.interval),
    };
    with_store(loaded, |store| async move {
        operator::status(store.as_ref(), &options).await
    })
}

/// `cancel JOB_ID`.
pub fn cancel(loaded: Loaded, job_id: &str) -> Result {
    with_store(loaded, |store| async move {
        operator::cancel(store.as_ref(), job_id).await
    })
}

/// `jobs [--limit N] [--json]`.
pub fn jobs(loaded: Loaded, limit: i64, json: bool) -> Result {
    with_store(loaded, |store| async move {
        operator::list(store.as_ref(), limit, json).await
    })
}

/// `dlq list` / `dlq redrive`: the dead-letter queue from the command line.
pub fn dlq(loaded: Loaded, args: &crate::console::cli::DlqArgs) -> Result {
    let needs = Needs {
        queue: true,
        ..Needs::default()
    };
    prepare(&loaded, needs)?;
    let app = App::new(loaded.config, Adapters::PRODUCTION);
    block_on(async {
        app.queue(Duration::ZERO).await?;
        let queue = app
            .opened_sqs()
            .expect("the production queue adapter is SQS");
        let ok = crate::console::cli::run(queue, args).await?;
        Ok(if ok {
            Exit::Success
        } else {
            Exit::EndedUnsuccessfully
        })
    })
}

/// Loads the configuration (file, environment), or says why it is invalid.
pub fn load(file: Option<&std::path::Path>) -> Result<Loaded> {
    Ok(config::load(file)?)
}
