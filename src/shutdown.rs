//! Turns SIGTERM / SIGINT into a cancellation token that every task receives (no globals).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status when a second signal cuts the drain short (128 + SIGINT, as shells report it).
pub const FORCED_EXIT: i32 = 130;

/// Spawns the signal listener: the first SIGTERM or SIGINT cancels the returned token so the
/// daemon drains; a second one exits the process at once with [`FORCED_EXIT`].
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
        std::process::exit(FORCED_EXIT);
    });
    Ok(token)
}
