//! `profile-worker`: parse the command line, load configuration, dispatch, exit. What each
//! subcommand does is in `app::commands`; the exit statuses are in `app::exit`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use profile_worker::app::commands;
use profile_worker::app::exit::{Exit, finish};
use profile_worker::build_info;
use profile_worker::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return Exit::of_clap(&err).into();
        }
    };
    if let Command::Version = cli.command() {
        println!("{}", build_info::long_version());
        return ExitCode::SUCCESS;
    }
    let loaded = match commands::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => return finish(Err(err)),
    };
    finish(match cli.command() {
        Command::Version => unreachable!("answered before the configuration is loaded"),
        Command::Run => commands::run(loaded),
        Command::Config => commands::config(&loaded),
        Command::Migrate => commands::migrate(&loaded),
        Command::Demo(args) => commands::demo(loaded, args),
        Command::Healthcheck { url, timeout } => {
            commands::healthcheck(&loaded, url.as_deref(), Duration::from_secs(*timeout))
        }
        Command::Enqueue(args) => commands::enqueue(loaded, args),
        Command::Status(args) => commands::status(loaded, args),
        Command::Cancel { job_id } => commands::cancel(loaded, job_id),
        Command::Jobs { limit, json } => commands::jobs(loaded, *limit, *json),
    })
}
