//! `GET /v1/stream`: the live tail over WebSocket, resumable from a cursor with no gap and no
//! duplicate (invariant 3).
//!
//! A session subscribes to the hub *first*, then replays the store after `since`, then forwards
//! the live queue, skipping what the replay already sent (cursor ≤ last sent). Anything
//! committed before the subscription is in the store; anything after is in the queue: the seam
//! has no gap, and the cursor check removes the overlap. A session the hub cut off for lagging
//! goes back to the store from its last cursor; one that keeps lagging, or whose socket stopped
//! accepting writes (the client is not reading: the store would only refill the same socket),
//! is told `lagged` with the cursor to resume from and closed, so a slow client never slows
//! ingestion or anyone else. Live batches go out as one burst of frames and one flush.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;

mod catchup;
mod request;
mod wire;

pub use wire::render;

use super::events::check_chain;
use super::ws::{close_after, close_frame, over_limit, oversize};
use super::{ApiError, AppState};
use crate::domain::{ChainName, Cursor, EventFilter, Finality};
use crate::publish::{Batch, Subscription, Text};
use crate::telemetry::metrics as m;
use request::{Request, parse_request, parse_subscribe};
pub use wire::ServerMessage;

/// Largest client message accepted: filters fit in a few KiB. A larger one is answered with an
/// `error` and a close 1009, whether tungstenite read it whole or refused it (`ws::over_limit`).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// tungstenite's own limit, above ours: a message a little over ours is read whole and refused
/// on a connection that then ends cleanly. One tungstenite refuses leaves its unread rest in the
/// socket, and closing it then is a TCP reset (the answer still gets there first).
const TRANSPORT_LIMIT: usize = 2 * MAX_CLIENT_MESSAGE;
/// Read buffer of a subscriber's socket. Clients send a few small frames; tungstenite's 128 KiB
/// default is zero-filled at every poll of the socket and held per connection. Larger frames
/// still arrive, in several reads.
const READ_BUFFER: usize = 4 * 1024;
/// Write buffer of a subscriber's socket: frames are gathered up to this size before a write
/// (a live batch usually fits in one). A session holds at most this plus one frame for a client
/// that does not read: it feeds a frame only once the socket took the buffer (tungstenite's
/// 128 KiB default, which grows, would be most of what a non-reading client costs).
const WRITE_BUFFER: usize = 16 * 1024;
/// How long a connection without filters in its URL may take to send `subscribe`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats (with the chains' heads) this often; they also keep proxies from idling us out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A session cut off this many times within [`LAG_WINDOW`] is told `lagged` and closed.
const MAX_LAGS: usize = 3;
const LAG_WINDOW: Duration = Duration::from_secs(60);
/// A socket write blocked this long means the client is not reading: if it also falls behind
/// the feed, it is told `lagged` rather than refilled from the store.
const SEND_STALL: Duration = Duration::from_secs(1);
/// A socket that accepts nothing for this long is dropped (a peer that vanished without a FIN).
const SEND_DEAD: Duration = Duration::from_secs(30);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stream", get(upgrade))
}

/// The change feed over WebSocket: replay after `since`, then the live tail. Server messages
/// are `ServerMessage`s; a client may send one `SubscribeMessage` instead of the query.
#[utoipa::path(get, path = "/v1/stream", tag = "stream",
    params(super::openapi::StreamParams, super::openapi::FilterParams),
    responses(
        (status = 101, description = "Upgraded: server messages follow (schema ServerMessage)"),
        (status = 426, description = "Not a WebSocket request (`upgrade_required`)", body = super::error::ErrorBody),
        (status = 429, description = "This client is at `server.max_stream_sessions_per_client` (`too_many_requests`)", body = super::error::ErrorBody),
        (status = 503, description = "At `server.max_stream_sessions` (`not_ready`)", body = super::error::ErrorBody),
    ))]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain HTTP request (curl) gets the JSON error shape, not axum's text rejection.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let message = format!(
                "{}: /v1/stream is a WebSocket; connect with a WebSocket client",
                rejection.body_text()
            );
            return ApiError::UpgradeRequired(message).into_response();
        }
    };
    // Taken before the upgrade: at the cap, one more is answered 503, not opened.
    // Counted per client address, unless the access rules trust the caller (on this host).
    let client = state
        .access
        .counted(peer.map(|Extension(ConnectInfo(p))| p));
    let slot = match state.stream_slots.take(client) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let query = query.unwrap_or_default();
    ws.max_message_size(TRANSPORT_LIMIT)
        .max_frame_size(TRANSPORT_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            metrics::gauge!(m::STREAM_CONNECTIONS).increment(1.0);
            Session {
                state,
                socket,
                last_stall: None,
                batch: false,
            }
            .run(query)
            .await;
            metrics::gauge!(m::STREAM_CONNECTIONS).decrement(1.0);
        })
}

struct Session {
    state: AppState,
    socket: WebSocket,
    /// When a socket write last took [`SEND_STALL`] or longer: the client is not reading.
    last_stall: Option<Instant>,
    /// The subscriber takes several messages per frame.
    batch: bool,
}

/// Why a session ends.
enum End {
    /// The client went away or the socket failed: nothing more to send.
    Gone,
    /// Tell the client, then close.
    Error(ApiError),
    Lagged(Cursor),
    Shutdown,
}

impl Session {
    async fn run(mut self, query: String) {
        let request = if query.is_empty() {
            match self.first_message().await {
                Ok(Some(request)) => Ok(request),
                Ok(None) => return,
                Err(err) => Err(err),
            }
        } else {
            parse_request(&query)
        };
        let request = request.and_then(|r| {
            check_chain(r.filter.chain.as_deref(), &self.state.chain_names()).map(|()| r)
        });
        let end = match request {
            Ok(request) => self.serve(request).await,
            Err(err) => End::Error(err),
        };
        let (last_words, close) = match end {
            End::Gone => return,
            End::Shutdown => (
                None,
                close_frame(close_code::AWAY, "the service is stopping"),
            ),
            End::Error(err) => {
                let words = ServerMessage::Error {
                    error: err.detail(),
                };
                (Some(words.text()), close_after(&err))
            }
            End::Lagged(resume_from) => {
                metrics::counter!(m::STREAM_LAGGED).increment(1);
                let words = ServerMessage::Lagged { resume_from };
                let reason = format!("lagged: resume from cursor {resume_from}");
                (Some(words.text()), close_frame(close_code::AGAIN, &reason))
            }
        };
        // The last words and the close frame leave in one write. After a frame too large to
        // read, its unread rest makes dropping the socket a TCP reset, which discards whatever
        // is still queued to send: one segment sent at once gets there ahead of it.
        let goodbye = async {
            if let Some(body) = last_words {
                self.socket.feed(Message::Text(body)).await?;
            }
            self.socket.send(Message::Close(Some(close))).await
        };
        // Bounded like every write: a client that stopped reading cannot hold the task.
        let _ = tokio::time::timeout(SEND_DEAD, goodbye).await;
    }

    /// Waits for the `subscribe` message of a connection whose URL carried no parameters.
    async fn first_message(&mut self) -> Result<Option<Request>, ApiError> {
        let deadline = tokio::time::sleep(SUBSCRIBE_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let message = tokio::select! {
                _ = &mut deadline => {
                    return Err(ApiError::bad_request("type", "send a subscribe message or put filters in the URL"));
                }
                message = self.socket.recv() => message,
            };
            match message {
                Some(Ok(message)) if oversize(&message, MAX_CLIENT_MESSAGE) => {
                    return Err(too_large());
                }
                Some(Ok(Message::Text(text))) => return parse_subscribe(text.as_str()).map(Some),
                Some(Ok(Message::Binary(_))) => {
                    return Err(ApiError::bad_request("message", "expected a text frame"));
                }
                Some(Err(err)) if over_limit(&err) => return Err(too_large()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => {} // ping / pong
            }
        }
    }

    async fn serve(&mut self, request: Request) -> End {
        let Request {
            filter,
            since,
            batch,
        } = request;
        self.batch = batch;
        let hub = self.state.hub.clone();
        let shutdown = self.state.shutdown.clone();
        let settled = match filter.finality {
            Some(level @ (Finality::Safe | Finality::Finalized)) => Some(level),
            _ => None,
        };
        // Per chain: where the settled-only subscriber's last delivery ended.
        let mut settled_to: HashMap<ChainName, u64> = HashMap::new();
        let mut lags: Vec<Instant> = Vec::new();
        let mut subscription = hub.subscribe(filter.clone());
        // Every change up to `last` has been sent (if it matched) and written to the socket.
        let mut last = match since {
            Some(since) => since,
            None => self.state.store.max_cursor().await,
        };
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            // Catch up from the store after `last`, then forward the live queue.
            if let Err(end) = self
                .replay(&filter, settled, &mut settled_to, &mut last)
                .await
            {
                return end;
            }
            loop {
                // Biased: shutdown first; then the client (a close must not wait behind a busy
                // feed); then items; heartbeats last.
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return End::Shutdown,
                    incoming = self.socket.recv() => match incoming {
                        Some(Ok(message)) if oversize(&message, MAX_CLIENT_MESSAGE) => return End::Error(too_large()),
                        Some(Err(err)) if over_limit(&err) => return End::Error(too_large()),
                        Some(Ok(Message::Text(_))) => {
                            return End::Error(ApiError::bad_request("type", "one subscription per connection"));
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Gone,
                        Some(Ok(_)) => {}
                    },
                    batch = subscription.recv() => match batch {
                        Some(batch) => {
                            if let Err(end) = self.forward(&filter, settled, &mut settled_to, &batch, &mut last).await {
                                return end;
                            }
                        }
                        None => break, // cut off (lagged) or the hub stopped
                    },
                    _ = heartbeat.tick() => {
                        let head = self.state.chains.iter()
                            .map(|c| {
                                let polled = c.progress.borrow().head;
                                (c.name.to_string(), polled.max(*c.best_head.borrow()))
                            })
                            .collect();
                        let body = ServerMessage::Heartbeat { head, cursor: last };
                        if let Err(end) = self.send(body.text()).await {
                            return end;
                        }
                    }
                }
            }
            if shutdown.is_cancelled() {
                return End::Shutdown;
            }
            if !subscription.lagged() {
                return End::Shutdown; // the hub is gone: the service is stopping
            }
            if let Some(end) = self.lagged(&mut lags, last) {
                return end;
            }
            metrics::counter!(m::STREAM_CATCHUPS).increment(1);
            subscription = resubscribe(&hub, &filter, subscription);
        }
    }

    /// The hub cut this session off: it catches up from the store again, unless it is not
    /// reading (it would only be refilled) or keeps lagging, when it is told `lagged`.
    fn lagged(&self, lags: &mut Vec<Instant>, last: Cursor) -> Option<End> {
        let now = Instant::now();
        lags.retain(|t| now.duration_since(*t) < LAG_WINDOW);
        lags.push(now);
        let not_reading = self
            .last_stall
            .is_some_and(|t| now.duration_since(t) < LAG_WINDOW);
        if not_reading || lags.len() >= MAX_LAGS {
            return Some(End::Lagged(last));
        }
        tracing::debug!(
            resume_from = last,
            "stream subscriber lagged; catching up from the database"
        );
        None
    }

    /// Writes the items of a live batch this subscriber has not seen and wants, as one burst.
    async fn forward(
        &mut self,
        filter: &EventFilter,
        settled: Option<Finality>,
        settled_to: &mut HashMap<ChainName, u64>,
        batch: &Batch,
        last: &mut Cursor,
    ) -> Result<(), End> {
        let Some(end) = batch.last().map(|p| p.item.cursor()) else {
            return Ok(());
        };
        if end <= *last {
            return Ok(()); // already replayed
        }
        // The hub sends a batch if any item matches: pick this subscriber's own.
        let fresh = batch
            .iter()
            .filter(|p| p.item.cursor() > *last && p.item.matches(filter));
        match settled {
            Some(level) => {
                for published in fresh {
                    self.settle(filter, level, &published.item, settled_to)
                        .await?;
                }
            }
            None => {
                let texts: Vec<Text> = fresh.map(|p| p.text()).collect();
                self.send_all(texts).await?;
            }
        }
        // Every change of the batch was considered: resume after it, matching or not.
        *last = end;
        Ok(())
    }

    async fn send(&mut self, text: Text) -> Result<(), End> {
        self.send_all(vec![text]).await
    }

    /// Writes `texts` in order and flushes once: one burst of frames, not a syscall each.
    ///
    /// Every socket operation is timed: one that takes [`SEND_STALL`] marks the client as not
    /// reading (see `serve`), one that accepts nothing for [`SEND_DEAD`] ends the session.
    async fn send_all(&mut self, texts: Vec<Text>) -> Result<(), End> {
        if texts.is_empty() {
            return Ok(());
        }
        let texts = if self.batch && texts.len() > 1 {
            wire::batch_frames(texts)
        } else {
            texts
        };
        for text in texts {
            self.feed(text).await?;
        }
        self.flush().await
    }

    /// Queues one frame, waiting (timed) while the socket's buffer is full.
    async fn feed(&mut self, text: Text) -> Result<(), End> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(SEND_DEAD, self.socket.feed(Message::Text(text))).await;
        self.written(started, outcome)
    }

    /// Writes out what the socket's buffer holds (timed like every write).
    async fn flush(&mut self) -> Result<(), End> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(SEND_DEAD, self.socket.flush()).await;
        self.written(started, outcome)
    }

    /// Whether the socket takes a frame now (its buffer is below [`WRITE_BUFFER`], or the
    /// buffer was just written out), without waiting.
    async fn ready_now(&mut self) -> Result<bool, End> {
        let socket = &mut self.socket;
        match std::future::poll_fn(|cx| Poll::Ready(socket.poll_ready_unpin(cx))).await {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(_)) => Err(End::Gone),
            Poll::Pending => Ok(false),
        }
    }

    /// Queues a frame on a socket [`Session::ready_now`] found ready: never waits.
    fn feed_now(&mut self, text: Text) -> Result<(), End> {
        self.socket
            .start_send_unpin(Message::Text(text))
            .map_err(|_| End::Gone)
    }

    /// Waits until the socket takes frames again (timed like every write).
    async fn wait_ready(&mut self) -> Result<(), End> {
        let started = Instant::now();
        let socket = &mut self.socket;
        let outcome = tokio::time::timeout(
            SEND_DEAD,
            std::future::poll_fn(|cx| socket.poll_ready_unpin(cx)),
        )
        .await;
        self.written(started, outcome)
    }

    /// Accounts for one socket operation that started at `started`.
    fn written(
        &mut self,
        started: Instant,
        outcome: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>,
    ) -> Result<(), End> {
        let took = started.elapsed();
        if took >= SEND_STALL {
            self.last_stall = Some(Instant::now());
        }
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                tracing::info!(
                    after_ms = took.as_millis() as u64,
                    "stream subscriber accepts nothing; dropping the connection"
                );
                Err(End::Gone)
            }
        }
    }
}

/// For the fuzz target (`crate::fuzzing`): reads `text` as a URL query and as a subscribe
/// message, as a connection's first words are read.
#[doc(hidden)]
pub fn fuzz_request(text: &str) {
    let _ = parse_request(text).map(|r| r.filter);
    let _ = parse_subscribe(text).map(|r| r.filter);
}

/// A fresh subscription replacing one the hub cut off.
fn resubscribe(hub: &crate::publish::Hub, filter: &EventFilter, old: Subscription) -> Subscription {
    drop(old);
    hub.subscribe(filter.clone())
}

fn too_large() -> ApiError {
    ApiError::TooLarge(format!(
        "a client message may hold at most {MAX_CLIENT_MESSAGE} bytes"
    ))
}
