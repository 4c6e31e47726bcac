//! `GET /v1/stream`: the live tail over WebSocket, resumable from a cursor with no gap and no
//! duplicate (invariant 3).
//!
//! A session subscribes to the hub *first*, then replays the store after `since`, then forwards
//! the live queue, skipping what the replay already sent (cursor ≤ last sent). Anything
//! committed before the subscription is in the store; anything after is in the queue: the seam
//! has no gap, and the cursor check removes the overlap. A session the hub cut off for lagging
//! goes back to the store from its last cursor; one that keeps lagging is told `lagged` and
//! closed, so a slow client never slows ingestion or anyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::events::parse_query;
use super::json::EventJson;
use super::{ApiError, AppState};
use crate::domain::{ChainName, Cursor, Finality};
use crate::publish::{FeedFilter, FeedItem, Subscription, replay};
use crate::store::{EventQuery, Order};
use crate::telemetry::metrics as m;

/// Largest client frame accepted: filters fit in a few KiB.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How long a connection without filters in its URL may take to send `subscribe`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats (with the chains' heads) this often; they also keep proxies from idling us out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Items per replay page.
const REPLAY_PAGE: u32 = 500;
/// A session cut off this many times within [`LAG_WINDOW`] is told `lagged` and closed.
const MAX_LAGS: usize = 3;
const LAG_WINDOW: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stream", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query = query.unwrap_or_default();
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            metrics::gauge!(m::STREAM_CONNECTIONS).increment(1.0);
            Session { state, socket }.run(query).await;
            metrics::gauge!(m::STREAM_CONNECTIONS).decrement(1.0);
        })
}

/// What a subscriber asked for.
struct Request {
    filter: FeedFilter,
    since: Option<Cursor>,
}

/// Splits `since` off and reads the rest as `/v1/events` filters.
fn parse_request(raw: &str) -> Result<Request, ApiError> {
    let mut since = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "since" => {
                since = Some(
                    value
                        .parse::<Cursor>()
                        .ok()
                        .filter(|c| *c >= 0)
                        .ok_or_else(|| {
                            ApiError::bad_request("since", "not a non-negative integer")
                        })?,
                );
            }
            "limit" | "order" | "after" => {
                return Err(ApiError::bad_request(
                    key.as_ref(),
                    "not a stream parameter",
                ));
            }
            _ => {
                rest.append_pair(&key, &value);
            }
        }
    }
    let q = parse_query(&rest.finish())?;
    if q.include_removed {
        // Retractions are always streamed; the flag only has a meaning for history queries.
    }
    Ok(Request {
        filter: FeedFilter {
            chain: q.chain,
            kind: q.kind,
            addresses: q.addresses,
            topics: q.topics,
            from_block: q.from_block,
            to_block: q.to_block,
            tx_hash: q.tx_hash,
            block_hash: q.block_hash,
            finality: q.finality,
        },
        since,
    })
}

/// A `subscribe` message: the same parameters as the query string, as JSON values.
fn parse_subscribe(text: &str) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request("message", format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("message", "expected a JSON object"))?;
    if object.get("type").and_then(Value::as_str) != Some("subscribe") {
        return Err(ApiError::bad_request("type", "expected \"subscribe\""));
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in object {
        if key == "type" {
            continue;
        }
        let values: Vec<&Value> = match value {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(
                        key.as_str(),
                        "expected a string, number or boolean",
                    ));
                }
            };
            query.append_pair(key, &text);
        }
    }
    parse_request(&query.finish())
}

/// The wire text of a feed item (also the hub's renderer).
pub fn render(item: &FeedItem) -> Arc<str> {
    let value = match item {
        FeedItem::Added(event) => {
            json!({"type": "event", "cursor": event.cursor, "event": EventJson::from(event)})
        }
        FeedItem::Restored { cursor, event } => {
            json!({"type": "event", "cursor": cursor, "event": EventJson::from(event)})
        }
        FeedItem::Removed { cursor, event } => {
            json!({"type": "removed", "cursor": cursor, "event": EventJson::from(event)})
        }
        FeedItem::Finality(a) => json!({
            "type": "finality", "cursor": a.cursor, "chain": &*a.chain,
            "finality": a.finality.as_str(), "to_block": a.to_block,
        }),
    };
    Arc::from(value.to_string())
}

struct Session {
    state: AppState,
    socket: WebSocket,
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
        let end = match request {
            Ok(request) => self.serve(request).await,
            Err(err) => End::Error(err),
        };
        match end {
            End::Gone => {}
            End::Shutdown => {
                let _ = self.socket.send(Message::Close(None)).await;
            }
            End::Error(err) => {
                let (field, message) = match &err {
                    ApiError::BadRequest { field, message } => {
                        (Some(field.clone()), message.clone())
                    }
                    ApiError::Internal(e) => {
                        tracing::error!(error = %format!("{e:#}"), "stream session failed");
                        (None, "internal error".to_owned())
                    }
                    other => (None, other.to_string()),
                };
                let body = json!({"type": "error", "error": {"code": error_code(&err), "message": message, "field": field}});
                let _ = self
                    .socket
                    .send(Message::Text(body.to_string().into()))
                    .await;
                let _ = self.socket.send(Message::Close(None)).await;
            }
            End::Lagged(resume_from) => {
                metrics::counter!(m::STREAM_LAGGED).increment(1);
                let body = json!({"type": "lagged", "resume_from": resume_from});
                let _ = self
                    .socket
                    .send(Message::Text(body.to_string().into()))
                    .await;
                let _ = self.socket.send(Message::Close(None)).await;
            }
        }
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
                Some(Ok(Message::Text(text))) => return parse_subscribe(text.as_str()).map(Some),
                Some(Ok(Message::Binary(_))) => {
                    return Err(ApiError::bad_request("message", "expected a text frame"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => {} // ping / pong
            }
        }
    }

    async fn serve(&mut self, request: Request) -> End {
        let Request { filter, since } = request;
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
                        Some(Ok(Message::Text(_))) => {
                            return End::Error(ApiError::bad_request("type", "one subscription per connection"));
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Gone,
                        Some(Ok(_)) => {}
                    },
                    item = subscription.items.recv() => match item {
                        Some(published) => {
                            if published.item.cursor() <= last {
                                continue;
                            }
                            let sent = match settled {
                                Some(level) => self.settle(&filter, level, &published.item, &mut settled_to).await,
                                None => self.send(published.text.clone()).await,
                            };
                            if let Err(end) = sent {
                                return end;
                            }
                            last = published.item.cursor();
                        }
                        None => break, // cut off (lagged) or the hub stopped
                    },
                    _ = heartbeat.tick() => {
                        let heads: serde_json::Map<String, Value> = self.state.chains.iter()
                            .map(|c| (c.name.to_string(), json!(*c.best_head.borrow())))
                            .collect();
                        let body = json!({"type": "heartbeat", "head": heads, "cursor": last});
                        if let Err(end) = self.send(Arc::from(body.to_string())).await {
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
            let now = Instant::now();
            lags.retain(|t| now.duration_since(*t) < LAG_WINDOW);
            lags.push(now);
            if lags.len() >= MAX_LAGS {
                return End::Lagged(last);
            }
            tracing::debug!(
                resume_from = last,
                "stream subscriber lagged; catching up from the database"
            );
            subscription = resubscribe(&hub, &filter, subscription);
        }
    }

    /// Sends every stored item after `last` matching `filter`, advancing `last`.
    async fn replay(
        &mut self,
        filter: &FeedFilter,
        settled: Option<Finality>,
        settled_to: &mut HashMap<ChainName, u64>,
        last: &mut Cursor,
    ) -> Result<(), End> {
        let mut after = *last;
        for _ in 0..u32::MAX {
            let page = replay::page(&self.state.store, filter, after, REPLAY_PAGE)
                .await
                .map_err(|e| End::Error(ApiError::Internal(e.into())))?;
            for item in &page.items {
                match settled {
                    Some(level) => self.settle(filter, level, item, settled_to).await?,
                    None => self.send(render(item)).await?,
                }
                *last = (*last).max(item.cursor());
            }
            match page.through {
                Some(through) => {
                    after = through;
                    *last = (*last).max(through);
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// For a settled-only subscriber: a finality advance of its level becomes the events of the
    /// newly settled blocks (canonical, matching), each carrying the advance's cursor, then the
    /// advance itself as the marker to resume from.
    async fn settle(
        &mut self,
        filter: &FeedFilter,
        level: Finality,
        item: &FeedItem,
        settled_to: &mut HashMap<ChainName, u64>,
    ) -> Result<(), End> {
        let FeedItem::Finality(advance) = item else {
            return Ok(());
        };
        if advance.finality != level {
            return Ok(());
        }
        let store = self.state.store.clone();
        let from = match settled_to.get(&advance.chain) {
            Some(to) => to + 1,
            None => store
                .finality_before(&advance.chain, level, advance.cursor)
                .await
                .map_err(|e| End::Error(ApiError::Internal(e.into())))?
                .saturating_add(1),
        };
        let from = from.max(filter.from_block.unwrap_or(0));
        let to = advance.to_block.min(filter.to_block.unwrap_or(u64::MAX));
        let mut after = 0;
        // Paged by cursor; `from..=to` may be empty (nothing new settled for this filter).
        let pages = if from <= to { u32::MAX } else { 0 };
        for _ in 0..pages {
            let query = EventQuery {
                chain: Some(advance.chain.to_string()),
                kind: filter.kind,
                addresses: filter.addresses.clone(),
                topics: filter.topics,
                from_block: Some(from),
                to_block: Some(to),
                tx_hash: filter.tx_hash,
                block_hash: filter.block_hash,
                include_removed: false,
                finality: None,
                after: Some(after),
                limit: REPLAY_PAGE,
                order: Order::Asc,
            };
            let events = store
                .query_events(&query)
                .await
                .map_err(|e| End::Error(ApiError::Internal(e.into())))?;
            for event in &events {
                let body = json!({"type": "event", "cursor": advance.cursor, "event": EventJson::from(event)});
                self.send(Arc::from(body.to_string())).await?;
            }
            match events.last() {
                Some(e) if events.len() == REPLAY_PAGE as usize => after = e.cursor,
                _ => break,
            }
        }
        settled_to.insert(advance.chain.clone(), advance.to_block);
        self.send(render(item)).await
    }

    async fn send(&mut self, text: Arc<str>) -> Result<(), End> {
        self.socket
            .send(Message::Text(Utf8Bytes::from(text.as_ref())))
            .await
            .map_err(|_| End::Gone)
    }
}

/// A fresh subscription replacing one the hub cut off.
fn resubscribe(hub: &crate::publish::Hub, filter: &FeedFilter, old: Subscription) -> Subscription {
    drop(old);
    hub.subscribe(filter.clone())
}

fn error_code(err: &ApiError) -> &'static str {
    match err {
        ApiError::BadRequest { .. } => "bad_request",
        ApiError::NotFound(_) => "not_found",
        ApiError::NotReady(_) => "not_ready",
        ApiError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_urls_and_subscribe_messages() {
        let r = parse_request("since=42&chain=devnet&kind=log").unwrap();
        assert_eq!(r.since, Some(42));
        assert_eq!(r.filter.chain.as_deref(), Some("devnet"));
        let m = parse_subscribe(r#"{"type":"subscribe","since":7,"address":["0x00000000000000000000000000000000000000aa"],"finality":"finalized"}"#).unwrap();
        assert_eq!(m.since, Some(7));
        assert_eq!(m.filter.addresses.len(), 1);
        assert_eq!(m.filter.finality, Some(Finality::Finalized));
        for (bad, field) in [
            ("since=-1", "since"),
            ("limit=5", "limit"),
            ("kind=tx", "kind"),
        ] {
            match parse_request(bad) {
                Err(ApiError::BadRequest { field: f, .. }) => assert_eq!(f, field),
                _ => panic!("{bad} should be refused"),
            }
        }
        for (bad, field) in [
            ("nope", "message"),
            ("[]", "message"),
            (r#"{"type":"unsubscribe"}"#, "type"),
            (r#"{"type":"subscribe","chain":{"x":1}}"#, "chain"),
        ] {
            match parse_subscribe(bad) {
                Err(ApiError::BadRequest { field: f, .. }) => assert_eq!(f, field),
                _ => panic!("{bad} should be refused"),
            }
        }
    }
}
