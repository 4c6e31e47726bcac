//! The runtime the writer's commits run on: a current-thread tokio runtime on a thread of its
//! own (`livechain-commit`), owned by the running pipeline's owner and stopped at shutdown.
//!
//! A commit is some eight round trips to SQLite's worker thread (begin, the insert chunks, the
//! checkpoint, the cursor sequence, commit), and after each one the committing task must be
//! scheduled again. On the service's runtime it waits in line behind the intake's tasks (frame
//! parsing, the listeners, the aggregators) and the publisher's fan-out, round trip after round
//! trip; here nothing else runs. It must outlive the store's last use: sqlx returns a
//! connection to its pool in a task spawned on the runtime that used it, so the runtime is
//! stopped only after the store is closed.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The commit thread and its runtime; stopped by [`CommitRuntime::stop`] or on drop.
#[derive(Debug)]
pub struct CommitRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CommitRuntime {
    /// Starts the thread and waits for its runtime's handle.
    pub fn start() -> std::io::Result<CommitRuntime> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        // The runtime is built, run and dropped on its own thread: a runtime must not be
        // dropped in an async context.
        let thread = std::thread::Builder::new()
            .name("livechain-commit".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = ready_tx.send(Ok(runtime.handle().clone()));
                        // A dropped sender stops it as surely as a sent stop.
                        let _ = runtime.block_on(stopped);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the commit thread ended before it started"))??;
        Ok(CommitRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where commits are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the runtime and waits for its thread (on a blocking thread, so the caller's
    /// runtime goes on meanwhile). Commits still pending are dropped: call it after the store
    /// is closed.
    pub async fn stop(mut self) {
        self.signal();
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::warn!("the commit thread did not stop cleanly");
            }
        }
    }

    fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for CommitRuntime {
    fn drop(&mut self) {
        self.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_on_its_own_thread_and_stops() {
        let commits = CommitRuntime::start().expect("the commit thread starts");
        let name = commits
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("the task ran");
        assert_eq!(name.as_deref(), Some("livechain-commit"));
        let handle = commits.handle();
        commits.stop().await;
        // A stopped runtime takes no more work: the task is cancelled, not run.
        let late = handle.spawn(async { 1 }).await;
        assert!(late.is_err(), "a task ran after the stop");
    }
}
