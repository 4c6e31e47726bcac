//! Per-provider faults, toggled at runtime by tests and benchmarks through [`Faults`].
//!
//! Each provider port has its own `Faults`; the connection and request code reads it on every
//! message, so a change applies at once to open connections as well as new ones. Plain atomics:
//! a fault is a knob, not a transaction, and readers must never block the hot path.
//!
//! Extension points for the fault kinds still to come (DESIGN.md §9), and where each hooks in:
//! - silent stall (socket open, nothing sent) and garbage frames: a flag read by
//!   `connection::run` before it writes, like `drop_after_messages` is;
//! - HTTP 429 / `-32005` rate-limit bursts, 5xx, error rate: a check at the top of
//!   `server::http_rpc` (HTTP status) and `rpc::handle_payload` (JSON-RPC error);
//! - lag behind head: `methods::Ctx::head` is the provider's view of the head, and notices
//!   would be held back by `k` blocks in `connection::run`;
//! - refusing connections: `server::spawn` would wrap the listener so accepts consult a flag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// "Off" for the optional numeric faults, so `Some(0)` keeps its meaning.
const OFF: u64 = u64::MAX;

/// The runtime-toggled faults of one provider. All setters take `&self`.
#[derive(Debug)]
pub struct Faults {
    latency_ms: AtomicU64,
    drop_after_messages: AtomicU64,
    max_logs_range: AtomicU64,
    /// Bumped by [`Faults::drop_sockets`]; each connection watches it from its start.
    drop_epoch: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: AtomicU64::new(0),
            drop_after_messages: AtomicU64::new(OFF),
            max_logs_range: AtomicU64::new(OFF),
            drop_epoch: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Delay added before every HTTP response, WebSocket response and notification. A
    /// notification waits until `latency` after its block was produced, so latency shifts the
    /// stream in time without capping its rate.
    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    /// Closes every open WebSocket connection of this provider now, without a close frame (as
    /// when a provider's load balancer drops a connection). Connections opened later live on.
    pub fn drop_sockets(&self) {
        self.drop_epoch
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
    }

    /// Closes each WebSocket connection once it has sent `n` notifications (`None`: never).
    /// Counts per connection, from the connection's start.
    pub fn set_drop_after_messages(&self, n: Option<u64>) {
        self.drop_after_messages
            .store(n.unwrap_or(OFF), Ordering::Relaxed);
    }

    pub fn drop_after_messages(&self) -> Option<u64> {
        optional(self.drop_after_messages.load(Ordering::Relaxed))
    }

    /// Refuses `eth_getLogs` spanning more than `n` blocks with JSON-RPC error `-32005`
    /// (`"query exceeds max block range n"`), as hosted providers do (`None`: no limit beyond
    /// the devnet's own hard cap).
    pub fn set_max_logs_range(&self, n: Option<u64>) {
        self.max_logs_range
            .store(n.unwrap_or(OFF), Ordering::Relaxed);
    }

    pub fn max_logs_range(&self) -> Option<u64> {
        optional(self.max_logs_range.load(Ordering::Relaxed))
    }

    /// Turns every fault off (does not reopen dropped sockets: clients reconnect).
    pub fn clear(&self) {
        self.set_latency_ms(0);
        self.set_drop_after_messages(None);
        self.set_max_logs_range(None);
    }

    /// A receiver that changes whenever [`Faults::drop_sockets`] is called after this point.
    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_epoch.subscribe()
    }
}

fn optional(raw: u64) -> Option<u64> {
    (raw != OFF).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_round_trip_and_clear() {
        let faults = Faults::default();
        assert_eq!(faults.drop_after_messages(), None);
        faults.set_drop_after_messages(Some(0));
        faults.set_max_logs_range(Some(100));
        faults.set_latency_ms(5);
        assert_eq!(faults.drop_after_messages(), Some(0));
        assert_eq!(faults.max_logs_range(), Some(100));
        assert_eq!(faults.latency(), Duration::from_millis(5));
        faults.clear();
        assert_eq!(faults.max_logs_range(), None);
        assert_eq!(faults.latency(), Duration::ZERO);
    }

    #[test]
    fn drop_signal_fires_only_for_later_drops() {
        let faults = Faults::default();
        faults.drop_sockets();
        let rx = faults.drop_signal();
        assert!(!rx.has_changed().unwrap());
        faults.drop_sockets();
        assert!(rx.has_changed().unwrap());
    }
}
