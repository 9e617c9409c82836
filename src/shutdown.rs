//! Turns SIGTERM / SIGINT into a cancellation token that every task receives (no globals).

use tokio::signal::unix::{SignalKind, signal};
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
