//! Per-provider faults, toggled at runtime by tests and benchmarks through [`Faults`].
//!
//! Each provider port has its own `Faults`; the connection and request code reads it on every
//! message, so a change applies at once to open connections as well as new ones. Plain atomics
//! (and two `watch` channels for the faults something must wait on): a fault is a knob, not a
//! transaction, and readers must never block the hot path.
//!
//! Where each fault takes effect:
//! - latency, drop after N messages, garbage frames, stalls: `connection` (WebSocket) and
//!   `server::http_rpc` (HTTP; stalls and latency only);
//! - 429 / `-32005` rate limits and 5xx: `server::http_rpc` as HTTP statuses, and
//!   `rpc::handle_request` as JSON-RPC errors over WebSocket; the error rate in
//!   `rpc::handle_request` for both;
//! - lag behind head: `methods::Ctx::head` (requests) and `connection` (notifications);
//! - refusing connections and dropping sockets: `listener` and `connection`.
//!
//! Random-looking faults (error rate, garbage kinds) draw from SplitMix64 over the devnet seed,
//! the provider and a counter, so a test that sends the same requests sees the same failures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::rpc_error::RpcError;

/// "Off" for the optional numeric faults, so `Some(0)` keeps its meaning.
const OFF: u64 = u64::MAX;

/// Longest a stalled provider holds an HTTP request before answering 504, so that a stall
/// can never pin a task for good (clients time out long before).
pub const MAX_STALL_HOLD: Duration = Duration::from_secs(60);

/// The malformed WebSocket frames a provider with [`Faults::set_garbage_every`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarbageKind {
    /// A text frame that is not JSON at all (an HTML error page).
    NotJson,
    /// The first half of the real message that follows it.
    Truncated,
    /// A well-formed `eth_subscription` notification whose `result` has wrong types and
    /// misses fields.
    MalformedNotification,
}

/// An HTTP-level refusal: what `server::http_rpc` answers instead of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpFault {
    /// 429 with `Retry-After: 1`.
    RateLimited,
    /// This 5xx status.
    Status(u16),
}

/// The runtime-toggled faults of one provider. All setters take `&self`.
#[derive(Debug)]
pub struct Faults {
    /// The devnet seed mixed with the provider index: the stream random faults draw from.
    seed: u64,
    latency_ms: AtomicU64,
    drop_after_messages: AtomicU64,
    max_logs_range: AtomicU64,
    omit_logs: AtomicBool,
    /// Bumped by [`Faults::drop_sockets`]; each connection watches it from its start.
    drop_epoch: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    garbage_every: AtomicU64,
    http_garbage: AtomicBool,
    rate_limited: AtomicBool,
    rate_limit_burst: AtomicU64,
    /// An HTTP status, 0 when off.
    server_error: AtomicU64,
    /// An `f64` fraction, as bits.
    error_rate: AtomicU64,
    error_draws: AtomicU64,
    lag_blocks: AtomicU64,
    refusing: AtomicBool,
    /// Bumped when refusing starts: sockets accepted under an older epoch are cut.
    socket_epoch: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            latency_ms: AtomicU64::new(0),
            drop_after_messages: AtomicU64::new(OFF),
            max_logs_range: AtomicU64::new(OFF),
            omit_logs: AtomicBool::new(false),
            drop_epoch: watch::channel(0).0,
            stalled: watch::channel(false).0,
            garbage_every: AtomicU64::new(OFF),
            http_garbage: AtomicBool::new(false),
            rate_limited: AtomicBool::new(false),
            rate_limit_burst: AtomicU64::new(0),
            server_error: AtomicU64::new(0),
            error_rate: AtomicU64::new(0f64.to_bits()),
            error_draws: AtomicU64::new(0),
            lag_blocks: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            socket_epoch: AtomicU64::new(0),
        }
    }

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

    /// Answers every `eth_getLogs` with `[]`, as a node behind a load balancer that does not
    /// have the blocks yet does (the blocks themselves, and their logs blooms, are served).
    pub fn set_omit_logs(&self, on: bool) {
        self.omit_logs.store(on, Ordering::Relaxed);
    }

    pub fn omits_logs(&self) -> bool {
        self.omit_logs.load(Ordering::Relaxed)
    }

    /// A silent stall: WebSocket connections stay open but send nothing and answer nothing
    /// (requests received meanwhile are dropped, blocks produced meanwhile are skipped, as a
    /// stuck node does not replay); HTTP requests hang until the stall is lifted, the client
    /// gives up, or [`MAX_STALL_HOLD`] passes (then 504). `false` lifts it.
    pub fn set_stalled(&self, on: bool) {
        self.stalled.send_replace(on);
    }

    pub fn is_stalled(&self) -> bool {
        *self.stalled.borrow()
    }

    /// Sends a malformed text frame before every `n`-th WebSocket message (responses and
    /// notifications, counted per connection; `None` or `Some(0)`: never). The real message
    /// still follows, so a client that discards the frame loses nothing. The kind of each
    /// frame is drawn from the seed and the message's position ([`Faults::garbage_kind`]).
    pub fn set_garbage_every(&self, n: Option<u64>) {
        let n = n.filter(|&n| n > 0).unwrap_or(OFF);
        self.garbage_every.store(n, Ordering::Relaxed);
    }

    pub fn garbage_every(&self) -> Option<u64> {
        optional(self.garbage_every.load(Ordering::Relaxed))
    }

    /// The kind of garbage sent before a connection's `message`-th message (1-based).
    pub fn garbage_kind(&self, message: u64) -> GarbageKind {
        match mix(self.seed ^ mix(message)) % 3 {
            0 => GarbageKind::NotJson,
            1 => GarbageKind::Truncated,
            _ => GarbageKind::MalformedNotification,
        }
    }

    /// Garbage over HTTP: every HTTP request is answered 200 with an HTML page instead of
    /// JSON-RPC (a misconfigured proxy in front of a node).
    pub fn set_http_garbage(&self, on: bool) {
        self.http_garbage.store(on, Ordering::Relaxed);
    }

    pub fn http_garbage(&self) -> bool {
        self.http_garbage.load(Ordering::Relaxed)
    }

    /// Rate limiting: HTTP requests get 429 with `Retry-After: 1`, WebSocket requests get
    /// JSON-RPC error `-32005` `"rate limit exceeded"`; notifications continue.
    pub fn set_rate_limited(&self, on: bool) {
        self.rate_limited.store(on, Ordering::Relaxed);
        if !on {
            self.rate_limit_burst.store(0, Ordering::Relaxed);
        }
    }

    /// Rate-limits only the next `n` requests (an HTTP request or one request of a WebSocket
    /// payload each), then lifts by itself.
    pub fn rate_limit_burst(&self, n: u64) {
        self.rate_limit_burst.store(n, Ordering::Relaxed);
    }

    /// Whether the next request would be rate-limited.
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited.load(Ordering::Relaxed)
            || self.rate_limit_burst.load(Ordering::Relaxed) > 0
    }

    /// Server errors: HTTP requests answer `status` (clamped into 500..=599), WebSocket
    /// requests get JSON-RPC error `-32603` `"internal error"`. `None` lifts it.
    pub fn set_server_error(&self, status: Option<u16>) {
        let status = status.map_or(0, |s| u64::from(s.clamp(500, 599)));
        self.server_error.store(status, Ordering::Relaxed);
    }

    pub fn server_error(&self) -> Option<u16> {
        match self.server_error.load(Ordering::Relaxed) {
            0 => None,
            status => u16::try_from(status).ok(),
        }
    }

    /// Fails this fraction (0.0 to 1.0) of requests, HTTP or WebSocket, with JSON-RPC error
    /// `-32603`. Which ones is drawn from the seed and a per-provider request counter, so the
    /// same sequence of requests fails the same way on every run.
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.error_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate.load(Ordering::Relaxed))
    }

    /// Serves a head `k` blocks behind the real one: `latest`, `eth_blockNumber`, the tags,
    /// block and log lookups above it (null / empty), and notifications all lag by `k`.
    pub fn set_lag_blocks(&self, k: u64) {
        self.lag_blocks.store(k, Ordering::Relaxed);
    }

    pub fn lag_blocks(&self) -> u64 {
        self.lag_blocks.load(Ordering::Relaxed)
    }

    /// Refusing connections: new TCP connections are accepted and closed at once, and every
    /// existing one is cut (WebSockets now, idle HTTP keep-alive ones at their next use).
    pub fn set_refuse_connections(&self, on: bool) {
        if on {
            self.socket_epoch.fetch_add(1, Ordering::SeqCst);
            self.refusing.store(true, Ordering::SeqCst);
            self.drop_sockets();
        } else {
            self.refusing.store(false, Ordering::SeqCst);
        }
    }

    pub fn refuses_connections(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    /// Turns every fault off and lifts a stall (does not reopen dropped sockets: clients
    /// reconnect).
    pub fn clear(&self) {
        self.set_latency_ms(0);
        self.set_drop_after_messages(None);
        self.set_max_logs_range(None);
        self.set_omit_logs(false);
        self.set_stalled(false);
        self.set_garbage_every(None);
        self.set_http_garbage(false);
        self.set_rate_limited(false);
        self.set_server_error(None);
        self.set_error_rate(0.0);
        self.set_lag_blocks(0);
        self.set_refuse_connections(false);
    }

    /// A receiver that changes whenever [`Faults::drop_sockets`] is called after this point.
    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_epoch.subscribe()
    }

    /// Watches the stall flag.
    pub(crate) fn stall_signal(&self) -> watch::Receiver<bool> {
        self.stalled.subscribe()
    }

    /// The epoch a socket accepted now belongs to; it is cut once this changes.
    pub(crate) fn socket_epoch(&self) -> u64 {
        self.socket_epoch.load(Ordering::SeqCst)
    }

    /// Takes one request from a rate-limit burst, or reports a permanent rate limit.
    fn take_rate_limit(&self) -> bool {
        if self.rate_limited.load(Ordering::Relaxed) {
            return true;
        }
        self.rate_limit_burst
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Draws from the error rate: whether this request fails.
    fn draw_error(&self) -> bool {
        let rate = self.error_rate();
        if rate <= 0.0 {
            return false;
        }
        let draw = self.error_draws.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits as a uniform fraction in [0, 1).
        let unit = (mix(self.seed ^ mix(draw)) >> 11) as f64 / (1u64 << 53) as f64;
        unit < rate
    }

    /// What an HTTP request gets instead of an answer, if anything (consumes a burst slot).
    pub(crate) fn http_fault(&self) -> Option<HttpFault> {
        if self.take_rate_limit() {
            return Some(HttpFault::RateLimited);
        }
        self.server_error().map(HttpFault::Status)
    }

    /// The injected error for one JSON-RPC request, if any. Over HTTP the rate limit and
    /// server errors were already answered as statuses, so only the error rate applies.
    pub(crate) fn request_error(&self, over_ws: bool) -> Option<RpcError> {
        if over_ws && self.take_rate_limit() {
            return Some(RpcError::new(
                RpcError::LIMIT_EXCEEDED,
                "rate limit exceeded",
            ));
        }
        if (over_ws && self.server_error().is_some()) || self.draw_error() {
            return Some(RpcError::new(RpcError::INTERNAL_ERROR, "internal error"));
        }
        None
    }
}

fn optional(raw: u64) -> Option<u64> {
    (raw != OFF).then_some(raw)
}

/// SplitMix64's finalizer: the faults' deterministic draws, and the devnet's other seeded
/// values.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
        faults.set_stalled(true);
        faults.set_garbage_every(Some(3));
        faults.set_rate_limited(true);
        faults.set_server_error(Some(404));
        faults.set_error_rate(f64::NAN);
        assert_eq!(faults.error_rate(), 0.0);
        faults.set_error_rate(7.0);
        faults.set_lag_blocks(4);
        faults.set_refuse_connections(true);
        assert_eq!(faults.drop_after_messages(), Some(0));
        assert_eq!(faults.max_logs_range(), Some(100));
        assert_eq!(faults.latency(), Duration::from_millis(5));
        assert!(faults.is_stalled() && faults.is_rate_limited() && faults.refuses_connections());
        assert_eq!(faults.garbage_every(), Some(3));
        assert_eq!(faults.server_error(), Some(500), "clamped into 5xx");
        assert_eq!(faults.error_rate(), 1.0);
        assert_eq!(faults.lag_blocks(), 4);
        faults.clear();
        assert_eq!(faults.max_logs_range(), None);
        assert_eq!(faults.latency(), Duration::ZERO);
        assert!(!faults.is_stalled() && !faults.is_rate_limited());
        assert!(!faults.refuses_connections());
        assert_eq!(
            (
                faults.garbage_every(),
                faults.server_error(),
                faults.lag_blocks()
            ),
            (None, None, 0)
        );
        faults.set_garbage_every(Some(0));
        assert_eq!(faults.garbage_every(), None, "every 0th means never");
    }

    #[test]
    fn drop_signal_fires_only_for_later_drops() {
        let faults = Faults::default();
        faults.drop_sockets();
        let rx = faults.drop_signal();
        assert!(!rx.has_changed().unwrap());
        faults.drop_sockets();
        assert!(rx.has_changed().unwrap());
        let epoch = faults.socket_epoch();
        faults.set_refuse_connections(true);
        assert!(rx.has_changed().unwrap(), "refusing drops sockets too");
        assert_ne!(faults.socket_epoch(), epoch);
    }

    #[test]
    fn bursts_run_out_and_rates_are_deterministic() {
        let faults = Faults::new(9);
        faults.rate_limit_burst(2);
        assert_eq!(faults.http_fault(), Some(HttpFault::RateLimited));
        let error = faults.request_error(true).unwrap();
        assert_eq!(
            (error.code, error.message.as_str()),
            (-32005, "rate limit exceeded")
        );
        assert_eq!(faults.request_error(true), None, "the burst is spent");
        faults.set_server_error(Some(502));
        assert_eq!(faults.http_fault(), Some(HttpFault::Status(502)));
        assert_eq!(faults.request_error(true).unwrap().code, -32603);
        assert_eq!(
            faults.request_error(false),
            None,
            "HTTP got its 502 already"
        );
        faults.set_server_error(None);

        let draws = |seed| {
            let faults = Faults::new(seed);
            faults.set_error_rate(0.3);
            (0..1_000)
                .map(|_| faults.request_error(false).is_some())
                .collect::<Vec<bool>>()
        };
        let (one, again, other) = (draws(1), draws(1), draws(2));
        assert_eq!(one, again);
        assert_ne!(one, other);
        let failed = one.iter().filter(|f| **f).count();
        assert!((200..400).contains(&failed), "{failed} of 1000 at 30%");
        let kinds: Vec<GarbageKind> = (1..=30).map(|m| faults.garbage_kind(m)).collect();
        for kind in [
            GarbageKind::NotJson,
            GarbageKind::Truncated,
            GarbageKind::MalformedNotification,
        ] {
            assert!(kinds.contains(&kind), "{kind:?} drawn");
        }
    }
}
