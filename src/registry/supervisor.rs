//! The supervisor: runs each task under the registry on one `TaskTracker` with a child
//! `CancellationToken`, restarts it with backoff when it dies, gives up on critical tasks that
//! keep dying, and persists every status change.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::{BackoffPolicy, CrashWindow, RestartBackoff};
use super::map::Snapshot;
use super::persist::{Persister, ProcessStore};
use super::{
    Criticality, ProcessInfo, ProcessKey, Registration, Registry, RegistryError, TaskError,
};
use crate::telemetry::metrics::PROCESS_RESTARTS;

#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    pub backoff: BackoffPolicy,
    /// Restarts a critical task may need within `critical_window`; the death after that marks
    /// it failed and the supervisor unhealthy.
    pub max_critical_restarts: u32,
    pub critical_window: Duration,
    /// How long a cancelled run may take to return before it is aborted.
    pub stop_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff: BackoffPolicy::default(),
            max_critical_restarts: 5,
            critical_window: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// A cheap-to-clone handle; every clone supervises the same tasks.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    config: SupervisorConfig,
    /// A child of the caller's token: cancelling the app cancels every task, while
    /// [`Supervisor::shutdown`] cancels only these.
    root: CancellationToken,
    tracker: TaskTracker,
    /// False for good once a critical task has failed: the service needs a restart, and
    /// `/ready` says so.
    healthy: AtomicBool,
    persister: Persister,
    close_writer: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The desired set loaded at start.
    restored: Vec<ProcessInfo>,
    /// The processes stored as not desired at start: stopped by an operator, to stay stopped.
    undesired: Vec<ProcessKey>,
}

/// What a supervised task is made from: a fresh run per start, given the run's token.
pub trait TaskFactory:
    Fn(CancellationToken) -> BoxFuture<'static, Result<(), TaskError>> + Send + Sync + 'static
{
}

impl<F> TaskFactory for F where
    F: Fn(CancellationToken) -> BoxFuture<'static, Result<(), TaskError>> + Send + Sync + 'static
{
}

impl Shared {
    fn persist(&self, snapshot: Option<Snapshot>) {
        if let Some(snapshot) = snapshot {
            self.persister.enqueue(snapshot);
        }
    }
}

impl Supervisor {
    /// Loads the persisted processes (see [`Supervisor::restore`]) and starts the status writer.
    /// Tasks are cancelled with `parent` or by [`Supervisor::shutdown`].
    pub async fn start(
        config: SupervisorConfig,
        store: Arc<dyn ProcessStore>,
        parent: &CancellationToken,
    ) -> Result<Supervisor, RegistryError> {
        // A load failure is an error, not an empty set: starting without the desired set would
        // silently drop every process added at run time.
        let mut restored = store.load().await.map_err(RegistryError::Restore)?;
        let undesired = restored
            .iter()
            .filter(|info| !info.desired)
            .map(ProcessInfo::key)
            .collect();
        restored.retain(|info| info.desired);
        restored.sort_unstable_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        let close_writer = CancellationToken::new();
        let (persister, writer) = Persister::start(store, close_writer.clone());
        Ok(Supervisor {
            shared: Arc::new(Shared {
                registry: Registry::new(),
                config,
                root: parent.child_token(),
                tracker: TaskTracker::new(),
                healthy: AtomicBool::new(true),
                persister,
                close_writer,
                writer: Mutex::new(Some(writer)),
                restored,
                undesired,
            }),
        })
    }

    /// The processes that were desired when the service last stopped, sorted by `(kind, id)`.
    /// The app re-spawns those whose spec it still understands.
    pub fn restore(&self) -> Vec<ProcessInfo> {
        self.shared.restored.clone()
    }

    /// Whether `key` was stored as not desired when the service started (an operator stopped
    /// it): the app starts such a task stopped.
    pub fn stopped_before(&self, key: &ProcessKey) -> bool {
        self.shared.undesired.contains(key)
    }

    /// Registers `key` and runs `factory`'s future under it until stopped, restarting it after
    /// every error, panic or unexpected return. A [`Criticality::Critical`] task that dies more
    /// than `max_critical_restarts` times within `critical_window` is marked failed and turns
    /// [`Supervisor::healthy`] false.
    pub fn spawn<F>(
        &self,
        key: ProcessKey,
        spec: serde_json::Value,
        criticality: Criticality,
        factory: F,
    ) -> Result<(), RegistryError>
    where
        F: TaskFactory,
    {
        let snapshot = self.spawn_inner(key, spec, criticality, factory)?;
        self.shared.persist(snapshot);
        Ok(())
    }

    /// Registers and starts `key`'s task; the snapshot of its row to save.
    fn spawn_inner<F>(
        &self,
        key: ProcessKey,
        spec: serde_json::Value,
        criticality: Criticality,
        factory: F,
    ) -> Result<Option<Snapshot>, RegistryError>
    where
        F: TaskFactory,
    {
        if self.shared.root.is_cancelled() {
            return Err(RegistryError::ShuttingDown);
        }
        let token = self.shared.root.child_token();
        let registration = self
            .shared
            .registry
            .register_with(key, spec, token.clone())?;
        let snapshot = registration.running();
        let shared = Arc::clone(&self.shared);
        self.shared.tracker.spawn(supervise(
            shared,
            registration,
            token,
            criticality == Criticality::Critical,
            factory,
        ));
        Ok(snapshot)
    }

    /// Stops the task under `key` for good: clears `desired` (persisted, so a restore leaves it
    /// out) and cancels its token. False if no live task has the key.
    pub fn stop(&self, key: &ProcessKey) -> bool {
        let snapshot = self.shared.registry.stop(key);
        let found = snapshot.is_some();
        self.shared.persist(snapshot);
        found
    }

    /// [`Supervisor::stop`], the cleared `desired` saved before returning (an operator's
    /// pause survives a kill the moment after). False if no live task has the key.
    pub async fn stop_saved(&self, key: &ProcessKey) -> Result<bool, RegistryError> {
        let Some(snapshot) = self.shared.registry.stop(key) else {
            return Ok(false);
        };
        self.shared
            .persister
            .save_now(snapshot)
            .await
            .map_err(RegistryError::Save)?;
        Ok(true)
    }

    /// [`Supervisor::spawn`], the task's row (desired, running) saved before returning.
    pub async fn spawn_saved<F>(
        &self,
        key: ProcessKey,
        spec: serde_json::Value,
        criticality: Criticality,
        factory: F,
    ) -> Result<(), RegistryError>
    where
        F: TaskFactory,
    {
        let snapshot = self.spawn_inner(key, spec, criticality, factory)?;
        if let Some(snapshot) = snapshot {
            self.shared
                .persister
                .save_now(snapshot)
                .await
                .map_err(RegistryError::Save)?;
        }
        Ok(())
    }

    /// Ends the current run of `key` as a death: the run is cancelled (given `stop_grace` to
    /// return), recorded as killed, and restarted with backoff like any other death. For
    /// operators and fault-injection tests. False if no live task has the key.
    pub fn kill(&self, key: &ProcessKey) -> bool {
        self.shared.registry.kill(key)
    }

    /// False once a critical task has failed.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Cancels every task and waits at most `bound` for them to end and for their final status
    /// to be saved. `desired` is kept, so the next start restores them.
    pub async fn shutdown(&self, bound: Duration) -> Result<(), RegistryError> {
        let deadline = Instant::now() + bound;
        self.shared.root.cancel();
        self.shared.tracker.close();
        let ended = tokio::time::timeout_at(deadline, self.shared.tracker.wait())
            .await
            .is_ok();
        self.shared.close_writer.cancel();
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && tokio::time::timeout_at(deadline, writer).await.is_err()
        {
            tracing::warn!("shutdown bound passed before every process status was saved");
        }
        if ended {
            Ok(())
        } else {
            let still_running = self.shared.registry.live();
            tracing::warn!(
                still_running,
                "supervised tasks outlived the shutdown bound"
            );
            Err(RegistryError::ShutdownTimedOut { still_running })
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("processes", &self.shared.registry.len())
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

/// Restart state of a task that has died at least once.
struct Deaths {
    backoff: RestartBackoff,
    crashes: CrashWindow,
}

impl Deaths {
    fn new(config: &SupervisorConfig) -> Box<Deaths> {
        Box::new(Deaths {
            backoff: RestartBackoff::new(config.backoff),
            crashes: CrashWindow::new(config.max_critical_restarts, config.critical_window),
        })
    }
}

/// How one run ended.
enum Exit {
    Returned,
    Failed(TaskError),
    Panicked(String),
    /// Cancelled, but still running after `stop_grace`.
    Aborted,
}

impl Exit {
    /// What to log and keep as `last_error`; `None` for a clean return.
    fn error(self) -> Option<String> {
        match self {
            Exit::Returned => None,
            Exit::Failed(error) => Some(error.to_string()),
            Exit::Panicked(message) => Some(format!("panicked: {message}")),
            Exit::Aborted => Some("ignored cancellation; aborted after the grace period".into()),
        }
    }
}

/// One task's whole supervised life: run, classify the end, restart or stop. Dropping the
/// registration at the end frees the key.
async fn supervise<F>(
    shared: Arc<Shared>,
    registration: Registration,
    token: CancellationToken,
    critical: bool,
    factory: F,
) where
    F: Fn(CancellationToken) -> BoxFuture<'static, Result<(), TaskError>>,
{
    // Allocated at the first death: most tasks never die, and this future is kept per task.
    let mut deaths: Option<Box<Deaths>> = None;
    let mut token = token;
    loop {
        let started = Instant::now();
        let mut exit = run_once(&shared, &token, &factory).await;
        if killed(&shared, &registration, &token) {
            // [`Supervisor::kill`]: a death like any other. The next run gets a fresh token
            // (a token is only replaced after a kill, so an idle task carries one).
            exit = Exit::Failed(TaskError::new("killed on request"));
            token = renew(&shared, &registration);
        }
        let ran_for = started.elapsed();
        let Some(delay) = after_run(
            &shared,
            &registration,
            &token,
            critical,
            &mut deaths,
            exit,
            ran_for,
        ) else {
            return;
        };
        let sleep = Box::pin(tokio::time::sleep(delay));
        tokio::select! {
            // Biased so a stop during the backoff is seen even if the sleep is also ready.
            biased;
            () = token.cancelled() => {
                if !killed(&shared, &registration, &token) {
                    shared.persist(registration.stopped(None));
                    return;
                }
                // Killed while waiting to restart: restart now.
                token = renew(&shared, &registration);
            }
            // Boxed, like every sleep here, to keep the per-task future small.
            () = sleep => {}
        }
        shared.persist(registration.running());
    }
}

/// Whether `token` was cancelled by [`Supervisor::kill`]: a stop clears `desired` first, a
/// shutdown cancels the root.
fn killed(shared: &Shared, registration: &Registration, token: &CancellationToken) -> bool {
    token.is_cancelled() && !shared.root.is_cancelled() && registration.desired()
}

/// A fresh token for the next run, registered so that stop and kill reach it.
fn renew(shared: &Shared, registration: &Registration) -> CancellationToken {
    let token = shared.root.child_token();
    registration.set_run_token(token.clone());
    token
}

/// Decides what follows a run that ended with `exit` after `ran_for`: logs it, records the new
/// status, and returns the delay before the next run, or `None` if there is none. Synchronous,
/// so that none of its locals are kept in the per-task future.
fn after_run(
    shared: &Shared,
    registration: &Registration,
    token: &CancellationToken,
    critical: bool,
    deaths: &mut Option<Box<Deaths>>,
    exit: Exit,
    ran_for: Duration,
) -> Option<Duration> {
    let key = registration.key();
    let error = exit.error();
    if token.is_cancelled() || !registration.desired() {
        if let Some(error) = &error {
            tracing::info!(kind = %key.kind, id = %key.id, %error, "stopped task ended with an error");
        }
        shared.persist(registration.stopped(error.as_deref()));
        return None;
    }
    // Long-running tasks are not supposed to end: a return is a death like any other.
    let error = error.unwrap_or_else(|| "returned while still desired".into());
    let deaths = deaths.get_or_insert_with(|| Deaths::new(&shared.config));
    if critical && deaths.crashes.exhausted(Instant::now().into_std()) {
        let snapshot = registration.failed(&error);
        let restarts = snapshot.as_ref().map_or(0, |s| s.restarts);
        tracing::error!(
            kind = %key.kind, id = %key.id, %error, restarts,
            "critical task keeps dying; not restarting it, the service is unhealthy"
        );
        shared.healthy.store(false, Ordering::Release);
        shared.persist(snapshot);
        return None;
    }
    let snapshot = registration.restarting(&error);
    let restarts = snapshot.as_ref().map_or(0, |s| s.restarts);
    metrics::counter!(PROCESS_RESTARTS, "kind" => key.kind.clone()).increment(1);
    let delay = deaths.backoff.next_delay(ran_for);
    tracing::warn!(
        kind = %key.kind, id = %key.id, %error, restarts, delay_ms = delay.as_millis(),
        "supervised task died; restarting after backoff"
    );
    shared.persist(snapshot);
    Some(delay)
}

/// Starts one run with `factory` and polls it inside the supervisor's own task, catching a panic as tokio's `JoinHandle`
/// would (tokio itself uses `catch_unwind`), and gives the run `stop_grace` to return once
/// `token` is cancelled. Not a separate tokio task per run: that costs about 350 bytes more per
/// supervised process (measured; see `tests/memory.rs`) and adds nothing, since a task is
/// already one run at a time.
async fn run_once<F>(shared: &Shared, token: &CancellationToken, factory: &F) -> Exit
where
    F: Fn(CancellationToken) -> BoxFuture<'static, Result<(), TaskError>>,
{
    // Unwind safety: after a panic the run is dropped, never polled again, and nothing it
    // borrowed is shared with the supervisor, so no broken invariant can be observed.
    let mut run = AssertUnwindSafe(factory(token.clone())).catch_unwind();
    let ended = tokio::select! {
        // Biased towards the run: a result that is already in is kept even if a cancellation
        // arrived at the same time.
        biased;
        ended = &mut run => ended,
        () = token.cancelled() => {
            match Box::pin(tokio::time::timeout(shared.config.stop_grace, &mut run)).await {
                Ok(ended) => ended,
                // Dropping the run (on return) is the abort.
                Err(_) => return Exit::Aborted,
            }
        }
    };
    match ended {
        Ok(Ok(())) => Exit::Returned,
        Ok(Err(error)) => Exit::Failed(error),
        Err(payload) => Exit::Panicked(panic_message(payload)),
    }
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".into()
    }
}
