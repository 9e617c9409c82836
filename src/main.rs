//! `profile-worker`: parse the command line, load configuration, start telemetry, dispatch, exit.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use profile_worker::cli::{Cli, Command};
use profile_worker::config::Needs;
use profile_worker::jobs::{JobsError, commands::Exit};
use profile_worker::{app, build_info, config, demo, jobs, server, shutdown, store, telemetry};

/// Exit status for invalid configuration or usage (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Version = cli.command() {
        println!("{}", build_info::long_version());
        return ExitCode::SUCCESS;
    }
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("profile-worker: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match cli.command() {
        Command::Version => unreachable!("handled above"),
        Command::Config => {
            print!("{}", loaded.redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Demo(args) => {
            // A terminal show, not a service: readable, quiet logs unless configured otherwise.
            let mut log = loaded.config.log.clone();
            if loaded.source_of("log.format") == "built-in defaults" {
                log.format = config::LogFormat::Pretty;
            }
            if loaded.source_of("log.level") == "built-in defaults" {
                log.level = "warn".into();
            }
            telemetry::init(&log);
            let options = demo::Options {
                latency: Duration::from_millis(args.latency_ms),
                twice: args.twice,
                database_url: args.database_url.clone(),
                queue_url: args.queue_url.clone(),
                redis_url: args.redis_url.clone(),
                progress: !args.no_progress && std::io::stderr().is_terminal(),
            };
            let result = runtime.block_on(async {
                let token = shutdown::on_signals()?;
                Ok::<_, anyhow::Error>(demo::run(&loaded.config, &options, token).await?)
            });
            match result {
                Ok(report) => {
                    print!(
                        "{}",
                        report.render(options.latency, loaded.config.consumer.concurrency as usize)
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("profile-worker: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url, timeout } => {
            let url = url.clone().unwrap_or_else(|| {
                format!(
                    "http://127.0.0.1:{}/health",
                    loaded.config.server.listen.port()
                )
            });
            match runtime.block_on(server::probe(&url, Duration::from_secs(*timeout))) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("profile-worker: {url} answered {status}");
                    ExitCode::FAILURE
                }
                Err(err) => {
                    eprintln!("profile-worker: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate => {
            if let Err(err) = loaded.require(Needs {
                database: true,
                ..Needs::default()
            }) {
                eprintln!("profile-worker: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
            telemetry::init(&loaded.config.log);
            match runtime.block_on(store::migrate::migrate(&loaded.config.database)) {
                Ok(applied) => {
                    println!("applied {} migration(s)", applied.len());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("profile-worker: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enqueue(args) => operator(
            &loaded,
            &runtime,
            Needs {
                queue: true,
                database: args.all,
            },
            jobs::commands::enqueue(&loaded.config, args),
        ),
        Command::Status(args) => operator(
            &loaded,
            &runtime,
            Needs {
                database: true,
                ..Needs::default()
            },
            jobs::commands::status(&loaded.config, args),
        ),
        Command::Cancel { job_id } => operator(
            &loaded,
            &runtime,
            Needs {
                database: true,
                ..Needs::default()
            },
            jobs::commands::cancel(&loaded.config, job_id),
        ),
        Command::Jobs { limit, json } => operator(
            &loaded,
            &runtime,
            Needs {
                database: true,
                ..Needs::default()
            },
            jobs::commands::list(&loaded.config, *limit, *json),
        ),
        Command::Dlq(args) => operator(
            &loaded,
            &runtime,
            Needs {
                queue: true,
                ..Needs::default()
            },
            profile_worker::console::cli::run(&loaded.config, args),
        ),
        Command::Run => {
            // The diagnostic handler opens no database, so only the queue is required then.
            let mode = match cli.diagnostic_hold_ms {
                Some(ms) => app::Mode::DiagnosticHold(Duration::from_millis(ms)),
                None => app::Mode::Pipeline,
            };
            let needs = Needs {
                queue: true,
                database: matches!(mode, app::Mode::Pipeline),
            };
            if let Err(err) = loaded.require(needs) {
                eprintln!("profile-worker: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
            telemetry::init(&loaded.config.log);
            let result = runtime.block_on(async {
                let token = shutdown::on_signals().map_err(anyhow::Error::from)?;
                app::run(loaded.config, token, mode)
                    .await
                    .map_err(anyhow::Error::from)
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "profile-worker failed");
                    eprintln!("profile-worker: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs an operator subcommand: checks the settings it needs, then maps its result to the exit
/// status documented in its `--help`.
fn operator(
    loaded: &config::Loaded,
    runtime: &tokio::runtime::Runtime,
    needs: Needs,
    work: impl Future<Output = Result<Exit, JobsError>>,
) -> ExitCode {
    if let Err(err) = loaded.require(needs) {
        eprintln!("profile-worker: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    telemetry::init(&loaded.config.log);
    match runtime.block_on(work) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("profile-worker: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
