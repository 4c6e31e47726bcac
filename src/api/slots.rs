//! What bounds the stream's memory in total, each session's being bounded on its own (see
//! `stream`): a cap on open `/v1/stream` sessions (`server.max_stream_sessions`) and on those of
//! one client address (`server.max_stream_sessions_per_client`: one client cannot take every
//! slot), and turns for reading replay pages.
//!
//! A session slot is taken before the WebSocket upgrade and held by the session until it ends;
//! one request too many is answered 503 with the JSON error shape and a `Retry-After`, never
//! upgraded. A replay turn is held while a session reads a page from the store: a page is in
//! memory from its read until it is written (without waiting), so the turns bound how many
//! pages all sessions hold at once, however many catch up together.
//!
//! When sessions end, the heap is trimmed once they have settled: glibc's malloc keeps what a
//! burst of sessions freed in its arenas (300 idle clients left RSS ~30 MB above its baseline
//! after they were gone; trimmed, 8 MB, what the store's page caches keep; see BENCHMARKS.md,
//! "Idle stream clients").

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::telemetry::metrics as m;

/// Seconds a refused client is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";
/// Replay pages read at once, whatever the number of sessions catching up: half the store's
/// read connections, so that REST pages always find the other half free (with every
/// connection busy replaying, twenty resuming clients raised the REST p99 twentyfold).
const REPLAY_TURNS: usize = 2;

/// How long after a session ends the heap is trimmed: the rest of a burst ends meanwhile, and
/// one trim serves them all.
const TRIM_AFTER: Duration = Duration::from_secs(2);

/// Open sessions per counted client address, shared by the slots.
type Clients = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// What a set of slots holds, as refusals and metrics name it.
#[derive(Clone, Copy, Debug)]
pub struct SlotNames {
    /// What a slot is for, plural (`streams`).
    pub what: &'static str,
    /// The config keys of the cap and of the per-client cap.
    pub max_key: &'static str,
    pub per_client_key: &'static str,
    /// The counter of refusals (labelled by `reason`).
    pub metric: &'static str,
}

/// `/v1/stream` sessions.
pub const STREAMS: SlotNames = SlotNames {
    what: "streams",
    max_key: "server.max_stream_sessions",
    per_client_key: "server.max_stream_sessions_per_client",
    metric: m::STREAM_REFUSED,
};

/// The gateway's WebSocket sessions (`/rpc/{chain}` upgraded).
pub const GATEWAY_SOCKETS: SlotNames = SlotNames {
    what: "gateway WebSockets",
    max_key: "gateway.max_ws_sessions",
    per_client_key: "gateway.max_ws_sessions_per_client",
    metric: m::GATEWAY_WS_REFUSED,
};

/// Cheap-to-clone handle to the free session slots and replay turns.
#[derive(Clone, Debug)]
pub struct StreamSlots {
    names: SlotNames,
    free: Arc<Semaphore>,
    max: usize,
    replays: Arc<Semaphore>,
    /// Sessions open per client address (only those counted).
    clients: Clients,
    per_client: usize,
}

/// One open session's slot, given back when dropped (and the heap trimmed soon after).
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    /// The client it counts against, if counted.
    client: Option<(IpAddr, Clients)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((ip, clients)) = self.client.take() {
            let mut clients = clients.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = clients.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&ip);
                }
            }
        }
        trim_soon();
    }
}

/// No slot for this session: every slot is taken (503), or its client holds its share (429);
/// both with the JSON error shape and a `Retry-After`.
#[derive(Debug)]
pub enum Refused {
    Full { max: usize, names: SlotNames },
    Client { max: usize, names: SlotNames },
}

impl Refused {
    /// The JSON error the caller gets.
    pub fn error(&self) -> ApiError {
        match *self {
            Refused::Full { max, names } => ApiError::NotReady(format!(
                "too many open {}: {max} ({}); retry later",
                names.what, names.max_key
            )),
            Refused::Client { max, names } => ApiError::TooManyRequests(format!(
                "this client has {max} {} open ({}); close one, or subscribe once with a wider \
                 filter",
                names.what, names.per_client_key
            )),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let err = self.error();
        ([(RETRY_AFTER, RETRY_AFTER_SECS)], err).into_response()
    }
}

/// A turn to read a replay page, given back when dropped.
#[derive(Debug)]
pub struct ReplayTurn(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl StreamSlots {
    /// Room for `max` sessions at once (at least one), `per_client` of them for one client.
    pub fn new(names: SlotNames, max: usize, per_client: usize) -> StreamSlots {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        StreamSlots {
            names,
            free: Arc::new(Semaphore::new(max)),
            max,
            replays: Arc::new(Semaphore::new(REPLAY_TURNS)),
            clients: Arc::new(Mutex::new(HashMap::new())),
            per_client: per_client.max(1),
        }
    }

    /// A slot for a session of `client` (`None`: a client not counted, such as a trusted one
    /// on this host), or the refusal to answer.
    pub fn take(&self, client: Option<IpAddr>) -> Result<Slot, Refused> {
        let Ok(permit) = self.free.clone().try_acquire_owned() else {
            metrics::counter!(self.names.metric, "reason" => "full").increment(1);
            return Err(Refused::Full {
                max: self.max,
                names: self.names,
            });
        };
        let Some(ip) = client else {
            return Ok(Slot {
                _permit: permit,
                client: None,
            });
        };
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let open = clients.entry(ip).or_insert(0);
        if *open >= self.per_client {
            metrics::counter!(self.names.metric, "reason" => "per_client").increment(1);
            return Err(Refused::Client {
                max: self.per_client,
                names: self.names,
            });
        }
        *open += 1;
        Ok(Slot {
            _permit: permit,
            client: Some((ip, Arc::clone(&self.clients))),
        })
    }

    /// A turn to read a replay page, once one is free; hold it until the page is read.
    pub async fn replay_turn(&self) -> ReplayTurn {
        // The semaphore is never closed; were it, reading without a turn is still correct.
        ReplayTurn(self.replays.clone().acquire_owned().await.ok())
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.max - self.free.available_permits()
    }
}

/// A trim is scheduled and has not started yet.
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// Trims the heap [`TRIM_AFTER`] from now, unless a trim is already scheduled (this call joins
/// it). Outside a Tokio runtime it does nothing.
fn trim_soon() {
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    // Clears the flag when dropped: after the wait, or with the task if its runtime stops first.
    struct Pending;
    impl Drop for Pending {
        fn drop(&mut self) {
            TRIM_PENDING.store(false, Ordering::Release);
        }
    }
    let pending = Pending;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        tokio::time::sleep(TRIM_AFTER).await;
        // Cleared first: a session ending during the trim schedules the next one.
        drop(pending);
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    });
}

/// Gives the free pages of every malloc arena back to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        "heap trimmed after stream sessions ended"
    );
}

/// Other allocators (musl's, macOS's) are left to their own ways.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn a_slot_too_many_is_a_503_with_the_error_shape_until_one_is_given_back() {
        let slots = StreamSlots::new(STREAMS, 2, 10);
        let a = slots.take(None).expect("first");
        let _b = slots.take(None).expect("second");
        assert_eq!(slots.open(), 2);
        let refused = slots.take(None).expect_err("third").into_response();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[RETRY_AFTER], RETRY_AFTER_SECS);
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"]["code"], "not_ready");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("max_stream_sessions"), "{message}");
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.take(None).is_ok(), "a slot given back is free again");
    }

    #[tokio::test]
    async fn one_client_holds_its_share_and_no_more() {
        let slots = StreamSlots::new(STREAMS, 10, 2);
        let (x, y): (IpAddr, IpAddr) = ([203, 0, 113, 7].into(), [198, 51, 100, 1].into());
        let first = slots.take(Some(x)).expect("first");
        let _second = slots.take(Some(x)).expect("second");
        let refused = slots.take(Some(x)).expect_err("third").into_response();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], RETRY_AFTER_SECS);
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"]["code"], "too_many_requests");
        assert_eq!(slots.open(), 2, "the refusal holds no slot");
        // Another client, and an uncounted one, are not held back by it.
        assert!(slots.take(Some(y)).is_ok());
        assert!(slots.take(None).is_ok());
        drop(first);
        let _again = slots.take(Some(x)).expect("its share given back");
        drop(slots.take(Some(y)));
        let counted = slots.clients.lock().expect("lock").clone();
        assert_eq!(counted.get(&x), Some(&2));
        assert_eq!(
            counted.get(&y),
            None,
            "a client with nothing open is forgotten"
        );
    }

    #[tokio::test]
    async fn replay_turns_are_few_and_shared_by_every_session() {
        let slots = StreamSlots::new(STREAMS, 100, 100);
        let mut turns = Vec::new();
        for _ in 0..REPLAY_TURNS {
            turns.push(slots.replay_turn().await);
        }
        let waiting = slots.clone();
        let next = tokio::spawn(async move { waiting.replay_turn().await });
        tokio::task::yield_now().await;
        assert!(
            !next.is_finished(),
            "every turn is taken: the next one waits"
        );
        turns.pop();
        let turn = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("a turn given back is taken")
            .expect("task");
        assert!(turn.0.is_some());
    }
}
