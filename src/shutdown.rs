//! Process signals to the one root cancellation token.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM; a second one ends the process at once
/// (exit code 130), so an operator can always force an exit while a shutdown drains.
///
/// The token is cancelled before anything is logged: logging must never stand between a
/// signal and the shutdown it asks for.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut signals = Signals::listen();
        signals.next().await;
        token.cancel();
        tracing::info!("shutdown signal received; stopping (a second signal exits at once)");
        signals.next().await;
        tracing::warn!("second shutdown signal; exiting now");
        std::process::exit(130);
    });
}

/// Keeps the process alive when a file reaches the process's size limit (`ulimit -f`): the
/// kernel then sends SIGXFSZ, whose default action ends the process; handled, the write fails
/// with `EFBIG` instead, and the writer waits that out like a full disk.
pub fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            Ok(mut xfsz) => {
                tokio::spawn(async move {
                    while xfsz.recv().await.is_some() {
                        tracing::warn!(
                            "a write went past the file size limit (ulimit -f); retrying until it is lifted"
                        );
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot handle SIGXFSZ; a file size limit would end the process")
            }
        }
    }
}

/// SIGINT and SIGTERM, received in a loop (tokio keeps its handler installed once listened to,
/// so the default "terminate" action never comes back by itself).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = match signal(SignalKind::terminate()) {
                Ok(term) => Some(term),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                    None
                }
            };
            Signals { term }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never resolve rather than spin.
            std::future::pending::<()>().await;
        }
    }
}
