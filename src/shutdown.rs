//! Turns SIGTERM / SIGINT into a cancellation token that every task receives (no globals), and
//! keeps the clock of the periodic background tasks that stop with it.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::app::exit::Exit;

/// Spawns the signal listener: the first SIGTERM or SIGINT cancels the returned token so the
/// daemon drains; a second one exits the process at once with [`Exit::Interrupted`].
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; draining (send again to exit at once)"
        );
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal; exiting without draining");
        std::process::exit(Exit::Interrupted.code().into());
    });
    Ok(token)
}

/// The clock of a periodic background task: a round every `period` (the first at once; a late
/// round delays the next instead of bunching), until `stop` is cancelled.
pub struct Every {
    ticks: Interval,
    stop: CancellationToken,
}

impl Every {
    pub fn new(period: Duration, stop: CancellationToken) -> Self {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticks, stop }
    }

    /// Waits for the next tick and runs `round`; `None` once `stop` is cancelled, which also
    /// abandons a round in flight.
    pub async fn round<T>(&mut self, round: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            _ = self.stop.cancelled() => return None,
            _ = self.ticks.tick() => {}
        }
        tokio::select! {
            _ = self.stop.cancelled() => None,
            result = round => Some(result),
        }
    }
}
