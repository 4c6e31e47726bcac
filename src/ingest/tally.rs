//! Events committed per chain since start, by kind: what `/v1/chains` shows, so a client (the
//! status page) can tell the rate without reading the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{ChainName, EventKind};

#[derive(Debug, Default)]
pub struct StoredTally {
    blocks: AtomicU64,
    logs: AtomicU64,
    removed: AtomicU64,
}

/// A snapshot of a [`StoredTally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub blocks: u64,
    pub logs: u64,
    pub removed: u64,
}

impl StoredTally {
    pub fn add(&self, kind: EventKind, n: u64) {
        let counter = match kind {
            EventKind::Block => &self.blocks,
            EventKind::Log => &self.logs,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_removed(&self, n: u64) {
        self.removed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> Stored {
        Stored {
            blocks: self.blocks.load(Ordering::Relaxed),
            logs: self.logs.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
        }
    }
}

/// Each chain's tally, by name: what the writer counts into.
pub type Tallies = Arc<HashMap<ChainName, Arc<StoredTally>>>;
