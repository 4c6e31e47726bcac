//! Process registry and supervisor (`docs/operations.md`, "Supervised tasks"): every long-running task is registered
//! under `(kind, id)`, supervised, restarted with backoff when it dies, and persisted.
//!
//! Layout:
//! - `map.rs` — [`Registry`]: the `(kind, id)` → entry map with O(1) lookup, and the
//!   [`Registration`] guard that removes an entry when its task ends.
//! - `supervisor.rs` — [`Supervisor`]: spawns tasks under the registry on one `TaskTracker`,
//!   each with a child `CancellationToken`; restarts them; gives up on critical tasks that keep
//!   dying and turns [`Supervisor::healthy`] false.
//! - `backoff.rs` — the pure parts of restart policy: the delay curve (backon's exponential
//!   backoff with jitter, reset by a stable run) and the critical crash window.
//! - `persist.rs` — [`ProcessStore`], the hook `store/` implements over the `processes` table, the
//!   background writer that feeds it, and [`MemoryProcessStore`] for tests.
//!
//! Use: the app starts one [`Supervisor`] with the store, re-spawns what
//! [`Supervisor::restore`] returns (for the specs it still knows), and spawns every listener,
//! aggregator, writer, backfill and publisher through [`Supervisor::spawn`]. `/ready` reads
//! [`Supervisor::healthy`]; `/processes` reads [`Registry::list`].
//!
//! Invariants:
//! - At most one live entry per key: registering a key whose task is live is
//!   [`RegistryError::Duplicate`]; the key is free again once that task's supervision ends.
//! - A supervised task ends for good only when it is stopped ([`Supervisor::stop`], shutdown) or
//!   is critical and failed too often; anything else (error, panic, even `Ok(())`) is a restart.
//! - Persisting never blocks a restart: status changes are queued, coalesced by key, and saved
//!   by one background writer.
//! - A critical task that failed keeps [`Supervisor::healthy`] false until the process restarts,
//!   and its entry stays listed (no longer live) so operators can see which one it was.
//!
//! Cost: each supervised process is one tokio task (runs are polled inside it, panics caught
//! with `catch_unwind`) plus one small map entry holding its spec as JSON text; about 0.55 KB
//! of resident memory per process beyond the task itself (`tests/memory.rs`).

mod backoff;
mod map;
mod persist;
pub(crate) mod supervisor;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

pub use backoff::BackoffPolicy;

/// What a supervised task's repeated deaths mean for the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criticality {
    /// The service cannot work without it: dying more than the supervisor allows within its
    /// window marks it failed and the service unhealthy (`/ready` false).
    Critical,
    /// Restarted with backoff however often it dies; the service stays ready meanwhile.
    Ordinary,
}
pub use map::{Registration, Registry};
pub use persist::{MemoryProcessStore, ProcessStore};
pub use supervisor::{Supervisor, SupervisorConfig};

/// What a process is registered under. `kind` is usually a literal (`"listener"`), so it is
/// borrowed when it can be; `id` names the instance (`"mainnet/alchemy"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub kind: Cow<'static, str>,
    pub id: String,
}

impl ProcessKey {
    pub fn new(kind: impl Into<Cow<'static, str>>, id: impl Into<String>) -> ProcessKey {
        ProcessKey {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// Where a registered process stands. Stored as [`Status::as_str`] in `processes.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The task is running.
    Running,
    /// The task died and waits out its backoff before the next run.
    Restarting,
    /// A critical task died too often; it is not restarted and the supervisor is unhealthy.
    Failed,
    /// The task ended because it was stopped or the supervisor shut down.
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `processes.status` value that is none of [`Status::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown process status {0:?} (expected running, restarting, failed or stopped)")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Status::Running),
            "restarting" => Ok(Status::Restarting),
            "failed" => Ok(Status::Failed),
            "stopped" => Ok(Status::Stopped),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A snapshot of one registry entry: what `/processes` shows and one `processes` row holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub kind: String,
    pub id: String,
    pub status: Status,
    /// Restarts since this key was last spawned (a restore starts again from 0).
    pub restarts: u32,
    /// Why the last run ended, if it ended badly.
    pub last_error: Option<String>,
    /// Wall-clock milliseconds when the current (or, while restarting, the last) run started.
    pub started_at_ms: i64,
    /// Whether the process should run: cleared by [`Supervisor::stop`], kept through shutdown,
    /// so [`Supervisor::restore`] brings back exactly what was meant to run.
    pub desired: bool,
    /// What the app needs to re-create the task after a restart; opaque here.
    pub spec: serde_json::Value,
}

impl ProcessInfo {
    pub fn key(&self) -> ProcessKey {
        ProcessKey::new(self.kind.clone(), self.id.clone())
    }
}

/// The registry layer's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("process {kind}/{id} is already registered and live")]
    Duplicate { kind: String, id: String },
    #[error("cannot load the persisted processes: {0}")]
    Restore(String),
    #[error("the supervisor is shutting down; nothing new is spawned")]
    ShuttingDown,
    #[error("cannot save the process's status: {0}")]
    Save(String),
    #[error("{still_running} supervised tasks were still running when the shutdown bound passed")]
    ShutdownTimedOut { still_running: usize },
}

impl RegistryError {
    /// Whether the caller did something wrong (a duplicate) rather than hit a lifecycle edge;
    /// the API maps the former to 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, RegistryError::Duplicate { .. })
    }
}

/// Why a supervised run ended badly. Tasks return it with `?` from any error type, like
/// `anyhow::Error`: the message keeps the whole `source()` chain, which is all the supervisor
/// does with it (log, `last_error`). It deliberately does not implement `std::error::Error`,
/// which is what lets the blanket `From` below exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    message: String,
}

impl TaskError {
    pub fn new(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(err: E) -> TaskError {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        TaskError { message }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Wall-clock milliseconds since the Unix epoch, for `started_at_ms`.
fn wall_ms() -> i64 {
    use crate::breaker::Clock as _;
    crate::breaker::SystemClock.wall_ms()
}
