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

/// A backfill under way as the progress follower last measured it (every half second), for
/// `/v1/chains`; `None` while the chain is not backfilling.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackfillRate {
    pub done_blocks: u64,
    pub total_blocks: u64,
    pub blocks_per_second: f64,
    pub logs_per_second: f64,
    /// At the rate so far; `None` before any block is done.
    pub eta_seconds: Option<u64>,
}

/// Where the progress follower leaves a chain's [`BackfillRate`].
#[derive(Debug, Default)]
pub struct BackfillBoard(std::sync::Mutex<Option<BackfillRate>>);

impl BackfillBoard {
    pub fn set(&self, rate: Option<BackfillRate>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rate;
    }

    pub fn get(&self) -> Option<BackfillRate> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
