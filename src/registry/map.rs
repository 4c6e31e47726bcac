//! The `(kind, id)` → entry map: O(1) lookup, one live entry per key, and the guard that frees a
//! key when its task ends. No I/O and no async: the supervisor persists what this returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use super::{ProcessInfo, ProcessKey, RegistryError, Status};

/// A cheap-to-clone handle to the shared map.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    // A std mutex is enough: every critical section is one hash lookup plus a few field writes,
    // it is never held across an `.await`, and writers come at restart frequency, so there is
    // nothing for an async mutex (or sharding) to win.
    shared: Arc<Mutex<Map>>,
}

#[derive(Debug, Default)]
struct Map {
    /// Keys are shared with their [`Registration`] rather than copied.
    entries: HashMap<Arc<ProcessKey>, Entry>,
    /// Tells registrations of the same key apart, so a stale guard never removes its successor.
    next_generation: u64,
}

/// Per-entry state, kept small (the seed promises under 1 MB per 1 000 tasks): the key lives
/// once, shared with the registration; the spec is kept as compact JSON text, which for a
/// typical spec is a tenth of a parsed `Value`'s size, and shared with every [`Snapshot`].
#[derive(Debug)]
struct Entry {
    generation: u64,
    /// False once the [`Registration`] is dropped; only failed entries outlive it (see there).
    live: bool,
    status: Status,
    desired: bool,
    restarts: u32,
    started_at_ms: i64,
    last_error: Option<Arc<str>>,
    spec: Arc<str>,
    /// The current run's token, cancelled by [`Registry::stop`] and [`Registry::kill`]; the
    /// supervisor hands a child of its root here, then one per run.
    cancel: CancellationToken,
}

impl Entry {
    fn snapshot(&self, key: &Arc<ProcessKey>) -> Snapshot {
        Snapshot {
            key: Arc::clone(key),
            status: self.status,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            started_at_ms: self.started_at_ms,
            desired: self.desired,
            spec: Arc::clone(&self.spec),
        }
    }
}

/// An entry as it stood at one change. Made under the lock with reference counts only, so a
/// burst of registrations queues no parsed specs for the writer; turned into a [`ProcessInfo`]
/// (which parses the spec) outside the lock, when read or saved.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) key: Arc<ProcessKey>,
    pub(super) status: Status,
    pub(super) restarts: u32,
    pub(super) last_error: Option<Arc<str>>,
    pub(super) started_at_ms: i64,
    pub(super) desired: bool,
    spec: Arc<str>,
}

impl Snapshot {
    pub(super) fn info(&self) -> ProcessInfo {
        ProcessInfo {
            kind: self.key.kind.clone().into_owned(),
            id: self.key.id.clone(),
            status: self.status,
            restarts: self.restarts,
            last_error: self.last_error.as_deref().map(str::to_owned),
            started_at_ms: self.started_at_ms,
            desired: self.desired,
            // Cannot fail on text from `Value`'s `Display` (compact JSON) except past
            // serde_json's nesting limit of 128 levels, which no task spec comes near; null then,
            // rather than a panic in a lookup.
            spec: serde_json::from_str(&self.spec).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `key` as running and desired. Refused while another registration of the key
    /// is live; a dead (failed) entry under the key is replaced.
    pub fn register(
        &self,
        key: ProcessKey,
        spec: serde_json::Value,
    ) -> Result<Registration, RegistryError> {
        self.register_with(key, spec, CancellationToken::new())
    }

    pub(super) fn register_with(
        &self,
        key: ProcessKey,
        spec: serde_json::Value,
        cancel: CancellationToken,
    ) -> Result<Registration, RegistryError> {
        let mut map = self.lock();
        if map.entries.get(&key).is_some_and(|entry| entry.live) {
            return Err(RegistryError::Duplicate {
                kind: key.kind.into_owned(),
                id: key.id,
            });
        }
        let generation = map.next_generation;
        map.next_generation += 1;
        let entry = Entry {
            generation,
            live: true,
            status: Status::Running,
            desired: true,
            restarts: 0,
            started_at_ms: super::wall_ms(),
            last_error: None,
            spec: spec.to_string().into(),
            cancel,
        };
        let key = Arc::new(key);
        map.entries.insert(Arc::clone(&key), entry);
        Ok(Registration {
            registry: self.clone(),
            key,
            generation,
        })
    }

    pub fn get(&self, key: &ProcessKey) -> Option<ProcessInfo> {
        let snapshot = {
            let map = self.lock();
            let (key, entry) = map.entries.get_key_value(key)?;
            entry.snapshot(key)
        };
        Some(snapshot.info())
    }

    /// Every entry, sorted by `(kind, id)`.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let snapshots: Vec<Snapshot> = {
            let map = self.lock();
            map.entries.iter().map(|(key, e)| e.snapshot(key)).collect()
        };
        let mut infos: Vec<ProcessInfo> = snapshots.iter().map(Snapshot::info).collect();
        infos.sort_unstable_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        infos
    }

    /// Entries listed, live or failed.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries whose task is still live (the count a shutdown waits on).
    pub fn live(&self) -> usize {
        self.lock().entries.values().filter(|e| e.live).count()
    }

    /// Clears `desired` and cancels the entry's token; `None` if no live entry has the key.
    pub(super) fn stop(&self, key: &ProcessKey) -> Option<Snapshot> {
        let mut map = self.lock();
        let key = Arc::clone(map.entries.get_key_value(key).filter(|(_, e)| e.live)?.0);
        let entry = map.entries.get_mut(&key)?;
        entry.desired = false;
        entry.cancel.cancel();
        Some(entry.snapshot(&key))
    }

    /// Cancels the current run of `key`, leaving it desired (the supervisor restarts it).
    pub(super) fn kill(&self, key: &ProcessKey) -> bool {
        let map = self.lock();
        match map.entries.get(key).filter(|e| e.live) {
            Some(entry) => {
                entry.cancel.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // Every update is a handful of plain stores that cannot be left half done in a way that
        // matters, so a panic elsewhere while holding the lock leaves nothing to repair.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Proof that a key is registered; dropping it ends the registration. The entry is removed,
/// except a [`Status::Failed`] one, which stays listed (no longer live, so the key can be
/// registered again) so that operators can see which task made the service unhealthy.
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    key: Arc<ProcessKey>,
    generation: u64,
}

impl Registration {
    pub fn key(&self) -> &ProcessKey {
        &self.key
    }

    /// The token of the run about to start: what [`Registry::stop`] and [`Registry::kill`]
    /// cancel from now on.
    pub(super) fn set_run_token(&self, token: CancellationToken) {
        self.update(|entry| entry.cancel = token);
    }

    /// A run started now.
    pub(super) fn running(&self) -> Option<Snapshot> {
        let started_at_ms = super::wall_ms();
        self.update(|entry| {
            entry.status = Status::Running;
            entry.started_at_ms = started_at_ms;
        })
    }

    /// A run ended with `error` and will be restarted.
    pub(super) fn restarting(&self, error: &str) -> Option<Snapshot> {
        self.update(|entry| {
            entry.status = Status::Restarting;
            entry.restarts = entry.restarts.saturating_add(1);
            entry.last_error = Some(error.into());
        })
    }

    /// A run ended with `error` and will not be restarted.
    pub(super) fn failed(&self, error: &str) -> Option<Snapshot> {
        self.update(|entry| {
            entry.status = Status::Failed;
            entry.last_error = Some(error.into());
        })
    }

    /// The task ended because it was asked to; `error` if its last run still ended badly.
    pub(super) fn stopped(&self, error: Option<&str>) -> Option<Snapshot> {
        self.update(|entry| {
            entry.status = Status::Stopped;
            if let Some(error) = error {
                entry.last_error = Some(error.into());
            }
        })
    }

    /// Whether the task should still run (cleared by [`Registry::stop`]).
    pub(super) fn desired(&self) -> bool {
        let map = self.registry.lock();
        map.entries
            .get(&self.key)
            .is_some_and(|entry| entry.generation == self.generation && entry.desired)
    }

    fn update(&self, change: impl FnOnce(&mut Entry)) -> Option<Snapshot> {
        let mut map = self.registry.lock();
        let entry = map
            .entries
            .get_mut(&*self.key)
            .filter(|entry| entry.generation == self.generation)?;
        change(entry);
        Some(entry.snapshot(&self.key))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        let Some(entry) = map.entries.get_mut(&self.key) else {
            return;
        };
        if entry.generation != self.generation {
            return;
        }
        if entry.status == Status::Failed {
            entry.live = false;
        } else {
            map.entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(kind: &'static str, id: &str) -> ProcessKey {
        ProcessKey::new(kind, id)
    }

    #[test]
    fn duplicate_is_refused_while_live_and_accepted_after_the_first_ends() {
        let registry = Registry::new();
        let first = registry.register(key("listener", "a"), json!(1)).unwrap();
        assert_eq!(
            registry
                .register(key("listener", "a"), json!(2))
                .unwrap_err(),
            RegistryError::Duplicate {
                kind: "listener".into(),
                id: "a".into()
            }
        );
        // Same id under another kind is another process.
        let _other = registry.register(key("writer", "a"), json!(3)).unwrap();
        drop(first);
        assert!(registry.get(&key("listener", "a")).is_none());
        let second = registry.register(key("listener", "a"), json!(4)).unwrap();
        assert_eq!(registry.get(second.key()).unwrap().spec, json!(4));
    }

    #[test]
    fn lookup_list_and_len() {
        let registry = Registry::new();
        assert!(registry.is_empty());
        let _guards: Vec<Registration> = [("writer", "x"), ("listener", "b"), ("listener", "a")]
            .into_iter()
            .map(|(kind, id)| {
                registry
                    .register(key(kind, id), json!({ "id": id }))
                    .unwrap()
            })
            .collect();
        assert_eq!(registry.len(), 3);
        let found = registry.get(&key("listener", "b")).unwrap();
        assert_eq!(
            (found.status, found.restarts, found.desired),
            (Status::Running, 0, true)
        );
        assert_eq!(found.spec, json!({ "id": "b" }));
        assert!(found.started_at_ms > 0);
        assert!(registry.get(&key("listener", "c")).is_none());
        let order: Vec<(String, String)> = registry
            .list()
            .into_iter()
            .map(|i| (i.kind, i.id))
            .collect();
        let expected = [("listener", "a"), ("listener", "b"), ("writer", "x")];
        assert_eq!(order, expected.map(|(k, i)| (k.to_owned(), i.to_owned())));
    }

    #[test]
    fn specs_come_back_as_registered() {
        let registry = Registry::new();
        let specs = [
            json!(null),
            json!({ "chain": "mainnet", "n": 18_446_744_073_709_551_615u64, "neg": -3 }),
            json!({ "ratio": 0.1, "tiny": 5e-324, "nested": [[{ "a": "é\"\n" }]] }),
        ];
        let _guards: Vec<Registration> = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                registry
                    .register(key("x", &i.to_string()), spec.clone())
                    .unwrap()
            })
            .collect();
        for (i, spec) in specs.iter().enumerate() {
            assert_eq!(&registry.get(&key("x", &i.to_string())).unwrap().spec, spec);
        }
    }

    #[test]
    fn status_updates_show_in_snapshots() {
        let registry = Registry::new();
        let reg = registry
            .register(key("listener", "a"), json!(null))
            .unwrap();
        let info = reg.restarting("boom").unwrap().info();
        assert_eq!((info.status, info.restarts), (Status::Restarting, 1));
        assert_eq!(info.last_error.as_deref(), Some("boom"));
        let info = reg.running().unwrap().info();
        assert_eq!((info.status, info.restarts), (Status::Running, 1));
        assert_eq!(registry.get(reg.key()).unwrap(), info);
    }

    #[test]
    fn stop_clears_desired_and_cancels_only_live_entries() {
        let registry = Registry::new();
        let token = CancellationToken::new();
        let reg = registry
            .register_with(key("listener", "a"), json!(null), token.clone())
            .unwrap();
        assert!(reg.desired());
        let info = registry.stop(reg.key()).unwrap();
        assert!(!info.desired && !reg.desired() && token.is_cancelled());
        assert!(registry.stop(&key("listener", "nope")).is_none());
    }

    #[test]
    fn a_failed_entry_stays_listed_but_frees_its_key() {
        let registry = Registry::new();
        let reg = registry.register(key("writer", "w"), json!(null)).unwrap();
        reg.failed("disk full").unwrap();
        drop(reg);
        assert_eq!(
            registry.get(&key("writer", "w")).unwrap().status,
            Status::Failed
        );
        assert_eq!((registry.len(), registry.live()), (1, 0));
        let again = registry.register(key("writer", "w"), json!(null)).unwrap();
        assert_eq!(registry.get(again.key()).unwrap().status, Status::Running);
        assert_eq!(registry.live(), 1);
    }

    #[test]
    fn a_stale_guard_does_not_touch_its_successor() {
        let registry = Registry::new();
        let old = registry.register(key("writer", "w"), json!(1)).unwrap();
        old.failed("x").unwrap();
        let old_key = Arc::clone(&old.key);
        // Simulate the old guard outliving the re-registration: end it, register anew, then
        // check the old one's updates miss.
        let stale = Registration {
            registry: registry.clone(),
            key: old_key.clone(),
            generation: old.generation,
        };
        drop(old);
        let new = registry.register((*old_key).clone(), json!(2)).unwrap();
        assert!(stale.restarting("late").is_none());
        drop(stale);
        assert_eq!(registry.get(new.key()).unwrap().spec, json!(2));
    }
}
