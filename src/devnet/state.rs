//! State shared by the producer, the HTTP handlers and the WebSocket connections: the chain,
//! and per provider its faults, its open connections and its subscription count.
//!
//! The producer reaches connections only through [`ProviderState::connections`], a registry of
//! bounded queues; it never touches a socket, so a slow client can only fill its own queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::block::BlockData;
use super::chain::Chain;
use super::faults::{Faults, mix};

/// Queue length, in blocks, of a connection in timed mode: a client this far behind is
/// disconnected rather than buffered for.
pub(crate) const TIMED_QUEUE_BLOCKS: usize = 64;
/// Queue length in throughput mode: the producer runs at most this far ahead of its slowest
/// reader, which bounds memory and is the back-pressure.
pub(crate) const THROUGHPUT_QUEUE_BLOCKS: usize = 8;
/// In throughput mode, a connection whose queue stays full this long is deemed stuck and
/// disconnected, so one dead client cannot freeze the chain for everyone.
pub(crate) const THROUGHPUT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How blocks are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One block per period; slow subscribers are disconnected.
    Timed(Duration),
    /// As fast as subscribers read; nothing is produced while there are none.
    Throughput,
}

impl Mode {
    pub(crate) fn queue_blocks(self) -> usize {
        match self {
            Mode::Timed(_) => TIMED_QUEUE_BLOCKS,
            Mode::Throughput => THROUGHPUT_QUEUE_BLOCKS,
        }
    }
}

/// A new head on its way to a connection. The connection reads the blocks up to it from the
/// chain (after an automatic reorg, the whole new branch), using `block` when it is the one.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub block: Arc<BlockData>,
    /// When the block was produced: latency faults count from here.
    pub produced_at: Instant,
}

/// What the producer holds for one open WebSocket connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    pub notices: mpsc::Sender<Notice>,
    /// Cancelled to disconnect a connection that cannot keep up.
    pub kick: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub chain: Chain,
    pub providers: Vec<ProviderState>,
    pub mode: Mode,
    /// Subscriptions across all providers; the throughput producer idles at zero.
    total_subscriptions: AtomicUsize,
    /// Signalled when a subscription is added, to wake an idle throughput producer.
    pub subscriber_arrived: Notify,
    next_subscription: AtomicU64,
    /// See [`super::Devnet::set_send_removed_logs`].
    send_removed_logs: AtomicBool,
    /// When each recent height was produced, for latency measurements (`benches/stream.rs`).
    emitted: Mutex<Vec<(u64, std::time::Instant)>>,
}

/// Heights whose production instant is kept (a ring indexed by height; ~24 bytes each).
pub(crate) const EMISSION_LOG: usize = 8192;

impl Shared {
    pub(crate) fn new(chain: Chain, providers: usize, mode: Mode, seed: u64) -> Self {
        Self {
            chain,
            providers: (0..providers)
                .map(|index| ProviderState::new(index, seed))
                .collect(),
            mode,
            total_subscriptions: AtomicUsize::new(0),
            subscriber_arrived: Notify::new(),
            next_subscription: AtomicU64::new(1),
            send_removed_logs: AtomicBool::new(false),
            emitted: Mutex::new(Vec::new()),
        }
    }

    /// Records that block `n` was produced (handed to the connections) at `at`.
    pub(crate) fn record_emission(&self, n: u64, at: std::time::Instant) {
        let mut log = self.emitted.lock().unwrap_or_else(|e| e.into_inner());
        if log.is_empty() {
            log.resize(EMISSION_LOG, (u64::MAX, at));
        }
        if let Some(slot) = log.get_mut((n % EMISSION_LOG as u64) as usize) {
            *slot = (n, at);
        }
    }

    /// When block `n` was last produced, if it is among the last [`EMISSION_LOG`] heights.
    pub(crate) fn emitted_at(&self, n: u64) -> Option<std::time::Instant> {
        let log = self.emitted.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (n % EMISSION_LOG as u64) as usize;
        log.get(slot).filter(|(m, _)| *m == n).map(|(_, at)| *at)
    }

    pub(crate) fn set_send_removed_logs(&self, on: bool) {
        self.send_removed_logs.store(on, Ordering::Relaxed);
    }

    pub(crate) fn sends_removed_logs(&self) -> bool {
        self.send_removed_logs.load(Ordering::Relaxed)
    }

    pub(crate) fn total_subscriptions(&self) -> usize {
        self.total_subscriptions.load(Ordering::SeqCst)
    }

    pub(crate) fn subscription_added(&self, provider: usize) {
        if let Some(p) = self.providers.get(provider) {
            p.active_subscriptions.fetch_add(1, Ordering::SeqCst);
        }
        self.total_subscriptions.fetch_add(1, Ordering::SeqCst);
        self.subscriber_arrived.notify_waiters();
    }

    pub(crate) fn subscriptions_removed(&self, provider: usize, count: usize) {
        if count == 0 {
            return;
        }
        if let Some(p) = self.providers.get(provider) {
            p.active_subscriptions.fetch_sub(count, Ordering::SeqCst);
        }
        self.total_subscriptions.fetch_sub(count, Ordering::SeqCst);
    }

    /// A fresh subscription id, unique within this devnet: `0x` and 32 hex digits, like geth.
    pub(crate) fn next_subscription_id(&self, provider: usize) -> String {
        let counter = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        // The finalizer of SplitMix64 is a bijection, so distinct counters give distinct ids
        // that still look random (clients must not rely on ids being sequential).
        format!("0x{:016x}{:016x}", mix(provider as u64), mix(counter))
    }
}

/// One provider port.
#[derive(Debug)]
pub(crate) struct ProviderState {
    pub index: usize,
    pub faults: Faults,
    active_subscriptions: AtomicUsize,
    connections: Mutex<HashMap<u64, ConnHandle>>,
    next_connection: AtomicU64,
}

impl ProviderState {
    fn new(index: usize, seed: u64) -> Self {
        Self {
            index,
            // Each provider draws its random faults from its own stream.
            faults: Faults::new(mix(seed ^ mix(index as u64))),
            active_subscriptions: AtomicUsize::new(0),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        }
    }

    pub(crate) fn active_subscriptions(&self) -> usize {
        self.active_subscriptions.load(Ordering::SeqCst)
    }

    /// Registers an open connection; returns its id for [`Self::unregister`].
    pub(crate) fn register(&self, handle: ConnHandle) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, handle);
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// A snapshot of the open connections, so the producer never awaits with the lock held.
    pub(crate) fn connections(&self) -> Vec<(u64, ConnHandle)> {
        self.lock()
            .iter()
            .map(|(id, handle)| (*id, handle.clone()))
            .collect()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.lock().len()
    }

    // `std` mutex: held for a map operation, never across an `.await`; a poisoned guard is
    // recovered because the map stays consistent whatever panicked.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConnHandle>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
