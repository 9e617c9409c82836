//! `profile-worker dlq list` and `dlq redrive`: the console's dead-letter tools from a shell.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::dlq::{DeadLetters, DlqError, MoveStatus};
use crate::jobs::JobsError;
use crate::queue::{QueueError, SqsQueue};

/// `dlq` options.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the dead-letter queue's depth and its newest messages without consuming them.
    List {
        /// How many messages to show.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
        limit: u16,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move every dead letter back to the main queue (SQS StartMessageMoveTask) and follow it.
    Redrive {
        /// Return once the move has started instead of waiting for it to finish.
        #[arg(long)]
        no_wait: bool,
        /// Print JSON (the final status).
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `dlq` subcommand on `queue`; `Ok(false)` when a redrive ended failed or cancelled.
pub async fn run(queue: Arc<SqsQueue>, args: &DlqArgs) -> Result<bool, JobsError> {
    let letters = DeadLetters::new(queue);
    match &args.command {
        DlqCommand::List { limit, json } => {
            let depth = letters.dead_letter_depth().await?;
            let recent = letters
                .peek(usize::from(*limit))
                .await
                .map_err(queue_error)?;
            let mut out = std::io::stdout().lock();
            if *json {
                writeln!(out, "{}", json!({"depth": depth, "recent": recent}))?;
            } else {
                if let Some(d) = &depth {
                    writeln!(
                        out,
                        "{}: {} visible, {} in flight, {} delayed",
                        d.url, d.visible, d.in_flight, d.delayed
                    )?;
                }
                for m in &recent {
                    let attrs: Vec<String> = m
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    writeln!(
                        out,
                        "{}  {}  receives={}  {}\n    {}",
                        m.sent_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                        m.message_id,
                        m.receive_count,
                        attrs.join(" "),
                        m.body_preview.replace('\n', " ")
                    )?;
                }
            }
            Ok(true)
        }
        DlqCommand::Redrive { no_wait, json } => {
            let mut status = letters.redrive().await.map_err(queue_error)?;
            tracing::info!(
                mode = status.mode,
                "dlq redrive started from the command line"
            );
            // The local mover runs in this process, so it is always followed to the end.
            while status.running() && (!*no_wait || status.mode == "local") {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(s) = letters.status().await.map_err(queue_error)? {
                    status = s;
                }
            }
            let mut out = std::io::stdout().lock();
            if *json {
                writeln!(out, "{}", json!(status))?;
            } else {
                writeln!(out, "{}", status_line(&status))?;
            }
            Ok(status.status != "FAILED" && status.status != "CANCELLED")
        }
    }
}

fn status_line(s: &MoveStatus) -> String {
    format!(
        "redrive ({}) {}: {} moved{}{}",
        s.mode,
        s.status,
        s.moved,
        s.to_move.map(|n| format!(" of {n}")).unwrap_or_default(),
        s.failure
            .as_deref()
            .map(|f| format!(" — {f}"))
            .unwrap_or_default()
    )
}

fn queue_error(err: DlqError) -> JobsError {
    match err {
        DlqError::Queue(e) => JobsError::Queue(e),
        other => JobsError::Queue(QueueError::Rejected(other.to_string())),
    }
}
