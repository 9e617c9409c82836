//! The exit-status policy of every subcommand, in one place (each subcommand's `--help` and
//! the top-level `--help` document it).

use std::process::ExitCode;

use super::commands::CommandError;
use crate::jobs::JobsError;
use crate::jobs::commands::Outcome;

/// How a subcommand ended, as the process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done as asked (0).
    Success,
    /// A runtime failure: a service unreachable, a migration failed (1).
    Failure,
    /// The job id does not exist (3).
    NotFound,
    /// `cancel` of a job that had already ended (4).
    AlreadyTerminal,
    /// `enqueue` could not send some messages; a job's total was lowered (5).
    Unsent,
    /// `status --watch` saw the job end `failed` or `cancelled` (6).
    EndedUnsuccessfully,
    /// Bad configuration or command line, to be fixed by the operator (64, EX_USAGE).
    Usage,
    /// A second SIGTERM/SIGINT cut the drain short (130, 128 + SIGINT as shells report it).
    Interrupted,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::NotFound => 3,
            Exit::AlreadyTerminal => 4,
            Exit::Unsent => 5,
            Exit::EndedUnsuccessfully => 6,
            Exit::Usage => 64,
            Exit::Interrupted => 130,
        }
    }

    /// The status for a command-line parse error after clap has printed it: 0 for `--help`
    /// and `--version`, 64 for a usage error (clap's own choice would be 2).
    pub fn of_clap(err: &clap::Error) -> Exit {
        use clap::error::ErrorKind;
        match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Exit::Success,
            _ => Exit::Usage,
        }
    }

    /// The status for a failed subcommand.
    pub fn of_error(err: &CommandError) -> Exit {
        match err {
            CommandError::Config(_) | CommandError::Jobs(JobsError::NoOwner) => Exit::Usage,
            _ => Exit::Failure,
        }
    }
}

impl From<Outcome> for Exit {
    fn from(outcome: Outcome) -> Exit {
        match outcome {
            Outcome::Success => Exit::Success,
            Outcome::NotFound => Exit::NotFound,
            Outcome::AlreadyTerminal => Exit::AlreadyTerminal,
            Outcome::Unsent => Exit::Unsent,
            Outcome::EndedUnsuccessfully => Exit::EndedUnsuccessfully,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// Reports a subcommand's result on stderr and turns it into the process status.
pub fn finish(result: Result<Exit, CommandError>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("profile-worker: {err}");
            Exit::of_error(&err).into()
        }
    }
}
