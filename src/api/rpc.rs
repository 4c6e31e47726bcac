//! `/rpc/{chain}`: the JSON-RPC gateway, over HTTP (`POST`) and WebSocket (`GET`, upgraded).
//! The chain is named by its configured name or its chain id; each body goes to
//! [`crate::gateway`] whole.

use std::net::SocketAddr;

use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::access::Grant;
use crate::gateway::{self, Gateway, Session};
use crate::publish::Hub;
use crate::telemetry::metrics as m;

/// Frames a WebSocket caller may have waiting to be written: a caller that does not read is
/// cut off when its queue is full, never slowing the feed or anyone else.
const WS_QUEUE: usize = 4096;
/// How long one frame may take to be written before the caller counts as not reading.
const WS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The response header naming the provider that answered (`gateway.provider_header`).
pub const PROVIDER_HEADER: &str = "x-livechain-provider";
/// `hit` or `partial`: every call, or some, answered without a provider (kept final answers, the
/// streamed head).
pub const CACHE_HEADER: &str = "x-livechain-cache";

pub fn router() -> Router<AppState> {
    Router::new().route("/rpc/{chain}", post(rpc).get(rpc_ws))
}

/// JSON-RPC 2.0 to the chain's providers, one request or a batch (docs/api.md).
#[utoipa::path(post, path = "/rpc/{chain}", tag = "gateway",
    params(("chain" = String, Path, description = "The chain's configured name or decimal chain id")),
    request_body(content = super::openapi::JsonRpcBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC answer(s), errors included, ids as sent", body = super::openapi::JsonRpcBody),
        (status = 404, description = "Unknown chain, or the gateway is off (-32601)", body = super::openapi::JsonRpcBody),
        (status = 413, description = "Over `gateway.max_body_bytes` (-32600)", body = super::openapi::JsonRpcBody),
        (status = 408, description = "The body did not arrive within `server.body_timeout` (-32600)", body = super::openapi::JsonRpcBody),
    ))]
pub(super) async fn rpc(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    grant: Option<Extension<Grant>>,
    body: Body,
) -> Response {
    let Some(gateway) = find(&state, &chain) else {
        return unknown_chain(&state, &chain);
    };
    let limit = gateway.config().max_body_bytes;
    let read = tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, limit));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            metrics::counter!(m::API_TIMEOUTS, "kind" => "body").increment(1);
            let message = format!(
                "request body not received within {:?} (server.body_timeout)",
                state.body_timeout
            );
            return json(
                StatusCode::REQUEST_TIMEOUT,
                gateway::refusal_body(gateway::INVALID_REQUEST, &message),
            );
        }
        Ok(Err(_)) => {
            let message = format!(
                "request body too large: the limit is {limit} bytes (gateway.max_body_bytes)"
            );
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                gateway::refusal_body(gateway::INVALID_REQUEST, &message),
            );
        }
    };
    let answer = gateway
        .handle(
            &bytes,
            gateway::Caller::Address(peer.ip()),
            may_write(grant),
        )
        .await;
    let mut response = json(StatusCode::OK, answer.body);
    if gateway.config().provider_header
        && let Some(provider) = answer.provider.and_then(|p| HeaderValue::from_str(&p).ok())
    {
        response.headers_mut().insert(PROVIDER_HEADER, provider);
    }
    if let Some(cache) = answer.cache {
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(cache));
    }
    response
}

fn find<'a>(state: &'a AppState, key: &str) -> Option<&'a Gateway> {
    state.gateways.iter().find(|g| g.answers_to(key))
}

fn unknown_chain(state: &AppState, chain: &str) -> Response {
    let known: Vec<&str> = state.gateways.iter().map(Gateway::chain).collect();
    let message = if known.is_empty() {
        "the JSON-RPC gateway is off (gateway.enabled: false)".to_owned()
    } else {
        format!(
            "unknown chain {chain:?}: the gateway serves {} (by name or chain id)",
            known.join(", ")
        )
    };
    json(
        StatusCode::NOT_FOUND,
        gateway::refusal_body(gateway::METHOD_NOT_FOUND, &message),
    )
}

/// `GET /rpc/{chain}` upgraded: the same JSON-RPC over WebSocket, plus `eth_subscribe`
/// `newHeads` / `logs` from the change feed.
#[utoipa::path(get, path = "/rpc/{chain}", tag = "gateway",
    params(("chain" = String, Path, description = "The chain's configured name or decimal chain id")),
    responses(
        (status = 101, description = "Upgraded: JSON-RPC frames follow"),
        (status = 404, description = "Unknown chain (-32601)", body = super::openapi::JsonRpcBody),
        (status = 426, description = "Not a WebSocket request: POST calls, or upgrade (-32600)", body = super::openapi::JsonRpcBody),
        (status = 429, description = "This client holds `gateway.max_ws_sessions_per_client` sockets already (-32005)", body = super::openapi::JsonRpcBody),
        (status = 503, description = "`gateway.max_ws_sessions` sockets are open (-32005)", body = super::openapi::JsonRpcBody),
    ))]
pub(super) async fn rpc_ws(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    grant: Option<Extension<Grant>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(gateway) = find(&state, &chain).cloned() else {
        return unknown_chain(&state, &chain);
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let message = format!(
                "{}: GET /rpc/{chain} is the gateway's WebSocket; send calls with POST",
                rejection.body_text()
            );
            return json(
                StatusCode::UPGRADE_REQUIRED,
                gateway::refusal_body(gateway::INVALID_REQUEST, &message),
            );
        }
    };
    // Taken before the upgrade, held by the session; counted per client address unless the
    // access rules trust the caller.
    let client = state
        .access
        .counted(peer.map(|Extension(ConnectInfo(p))| p));
    let slot = match state.gateway_slots.take(client) {
        Ok(slot) => slot,
        Err(refused) => {
            let err = refused.error();
            let mut response = json(
                err.status_code(),
                gateway::refusal_body(gateway::LIMIT_EXCEEDED, &err.to_string()),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
    };
    let limit = gateway.config().max_body_bytes;
    let (hub, shutdown) = (state.hub.clone(), state.shutdown.clone());
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            ws_session(socket, gateway, hub, shutdown, may_write(grant)).await;
            drop(slot);
        })
}

/// Writes go upstream only for callers the access rules trust with everything.
fn may_write(grant: Option<Extension<Grant>>) -> bool {
    matches!(grant, Some(Extension(Grant::Admin)))
}

/// Reads the caller's frames and answers each; a writer task drains the frames queued for it.
async fn ws_session(
    socket: WebSocket,
    gateway: Gateway,
    hub: Hub,
    shutdown: CancellationToken,
    may_write: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut queued) = mpsc::channel::<String>(WS_QUEUE);
    let closing = CancellationToken::new();
    let chain = gateway.chain().to_owned();
    let mut session = Session::new(gateway, hub, out.clone(), closing.clone(), may_write);
    let writer_closing = closing.clone();
    let writer_chain = chain.clone();
    let writer = tokio::spawn(async move {
        while let Some(text) = tokio::select! {
            next = queued.recv() => next,
            _ = writer_closing.cancelled() => None,
        } {
            let sent =
                tokio::time::timeout(WS_WRITE_TIMEOUT, sink.send(Message::Text(text.into())));
            match sent.await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break, // the caller went away
                Err(_) => {
                    gateway::cut_off(&writer_chain, "write_timeout", &writer_closing);
                    break;
                }
            }
        }
        writer_closing.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    });
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = closing.cancelled() => break,
            _ = shutdown.cancelled() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        if let Some(answer) = session.handle(&text).await
            && out.try_send(answer).is_err()
        {
            gateway::cut_off(&chain, "queue_full", &closing);
            break;
        }
    }
    drop(session);
    closing.cancel();
    let _ = writer.await;
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
