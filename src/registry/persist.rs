//! Persisting process status without ever making a restart wait for the disk: status changes
//! go into a map coalesced by key, a bounded channel wakes one writer task, and that task saves
//! the latest snapshot of each changed key through the [`ProcessStore`] hook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::map::Snapshot;
use super::{ProcessInfo, ProcessKey};

/// Where process status survives restarts. `store/` implements it over the `processes` table;
/// errors are strings because the registry only logs them.
#[async_trait::async_trait]
pub trait ProcessStore: Send + Sync {
    /// Upserts one process by `(kind, id)`.
    async fn save(&self, info: &ProcessInfo) -> Result<(), String>;
    /// Every stored process.
    async fn load(&self) -> Result<Vec<ProcessInfo>, String>;
}

/// A [`ProcessStore`] in memory that also keeps every save in order, for tests.
#[derive(Debug, Default)]
pub struct MemoryProcessStore {
    // Std mutex: held for a push or a clone, never across an await.
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    latest: HashMap<ProcessKey, ProcessInfo>,
    history: Vec<ProcessInfo>,
}

impl MemoryProcessStore {
    pub fn new() -> MemoryProcessStore {
        MemoryProcessStore::default()
    }

    /// A store that already holds `infos`, as after a previous run (not in the history).
    pub fn with(infos: impl IntoIterator<Item = ProcessInfo>) -> MemoryProcessStore {
        let store = MemoryProcessStore::new();
        store.lock().latest = infos.into_iter().map(|i| (i.key(), i)).collect();
        store
    }

    /// Every save so far, oldest first.
    pub fn saves(&self) -> Vec<ProcessInfo> {
        self.lock().history.clone()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl ProcessStore for MemoryProcessStore {
    async fn save(&self, info: &ProcessInfo) -> Result<(), String> {
        let mut inner = self.lock();
        inner.latest.insert(info.key(), info.clone());
        inner.history.push(info.clone());
        Ok(())
    }

    async fn load(&self) -> Result<Vec<ProcessInfo>, String> {
        let mut infos: Vec<ProcessInfo> = self.lock().latest.values().cloned().collect();
        infos.sort_unstable_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        Ok(infos)
    }
}

/// The producer side, owned by the supervisor.
pub(super) struct Persister {
    pending: Arc<Mutex<Pending>>,
    store: Arc<dyn ProcessStore>,
    /// Held by the writer while it saves a batch, and by [`Persister::save_now`]: a batch
    /// taken before a change can never be written after that change's direct save.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Capacity one: a wake already queued covers every change made before the writer takes
    /// the map, so a full channel loses nothing.
    wake: mpsc::Sender<()>,
}

impl Persister {
    /// Starts the writer. It saves until `close` is cancelled (then flushes once more) or the
    /// persister is dropped.
    pub(super) fn start(
        store: Arc<dyn ProcessStore>,
        close: CancellationToken,
    ) -> (Persister, JoinHandle<()>) {
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let (wake, woken) = mpsc::channel(1);
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let writer = tokio::spawn(write(
            Arc::clone(&store),
            Arc::clone(&pending),
            Arc::clone(&writing),
            woken,
            close,
        ));
        let persister = Persister {
            pending,
            store,
            writing,
            wake,
        };
        (persister, writer)
    }

    /// Saves `snapshot` before returning (what an operator's change needs: acknowledged means
    /// on disk). A queued older snapshot of the key is dropped; a batch being written finishes
    /// first.
    pub(super) async fn save_now(&self, snapshot: Snapshot) -> Result<(), String> {
        let _writing = self.writing.lock().await;
        lock(&self.pending).remove(&snapshot.key);
        self.store.save(&snapshot.info()).await
    }

    /// Queues `snapshot` for saving, replacing any unsaved one of the same key. Never waits.
    pub(super) fn enqueue(&self, snapshot: Snapshot) {
        lock(&self.pending).insert(Arc::clone(&snapshot.key), snapshot);
        // Full means a wake is already queued; closed means the writer has ended (shutdown).
        let _ = self.wake.try_send(());
    }
}

async fn write(
    store: Arc<dyn ProcessStore>,
    pending: Arc<Mutex<Pending>>,
    writing: Arc<tokio::sync::Mutex<()>>,
    mut woken: mpsc::Receiver<()>,
    close: CancellationToken,
) {
    loop {
        // Biased towards wakes so a close never skips queued work; the final flush below
        // covers anything queued after the last wake.
        let open = tokio::select! {
            biased;
            wake = woken.recv() => wake.is_some(),
            () = close.cancelled() => false,
        };
        {
            let _writing = writing.lock().await;
            flush(store.as_ref(), &pending).await;
        }
        if !open {
            return;
        }
    }
}

async fn flush(store: &dyn ProcessStore, pending: &Mutex<Pending>) {
    let batch = std::mem::take(&mut *lock(pending));
    let mut batch: Vec<Snapshot> = batch.into_values().collect();
    batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    for snapshot in batch {
        let info = snapshot.info();
        if let Err(error) = store.save(&info).await {
            // The next change of this key saves it again; nothing to retry here.
            tracing::warn!(kind = %info.kind, id = %info.id, %error, "cannot persist process status");
        }
    }
}

/// Unsaved snapshots, the latest per key.
type Pending = HashMap<Arc<ProcessKey>, Snapshot>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::{Registry, Status};

    #[tokio::test]
    async fn changes_queued_before_the_writer_runs_coalesce_by_key() {
        let store = Arc::new(MemoryProcessStore::new());
        let close = CancellationToken::new();
        let (persister, writer) = Persister::start(store.clone(), close.clone());
        let registry = Registry::new();
        let a = registry
            .register(ProcessKey::new("listener", "a"), json!(1))
            .unwrap();
        let b = registry
            .register(ProcessKey::new("listener", "b"), json!(2))
            .unwrap();
        persister.enqueue(a.running().unwrap());
        persister.enqueue(b.running().unwrap());
        persister.enqueue(a.restarting("x").unwrap());
        close.cancel();
        writer.await.unwrap();
        let saved: Vec<(String, Status, serde_json::Value)> = store
            .saves()
            .into_iter()
            .map(|i| (i.id, i.status, i.spec))
            .collect();
        let expected = [
            ("a".into(), Status::Restarting, json!(1)),
            ("b".into(), Status::Running, json!(2)),
        ];
        assert_eq!(saved, expected);
    }

    #[tokio::test]
    async fn the_writer_ends_when_the_persister_is_dropped() {
        let store = Arc::new(MemoryProcessStore::new());
        let (persister, writer) = Persister::start(store.clone(), CancellationToken::new());
        let registry = Registry::new();
        let a = registry
            .register(ProcessKey::new("listener", "a"), json!(null))
            .unwrap();
        let stopped = a.stopped(None).unwrap();
        persister.enqueue(stopped.clone());
        drop(persister);
        writer.await.unwrap();
        assert_eq!(store.load().await.unwrap(), [stopped.info()]);
    }
}
