//! The HTTP side of a provider port: one axum router per provider, `POST /` for JSON-RPC over
//! HTTP and `GET /` upgraded to a WebSocket, on the same listener. HTTP-level faults (stalls,
//! 429s, 5xx, latency) are applied here.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection;
use super::faults::{Faults, HttpFault, MAX_STALL_HOLD};
use super::listener::FaultListener;
use super::methods::Ctx;
use super::rpc::{self, MAX_REQUEST_BYTES, RpcError, Session};

/// Largest WebSocket message the protocol layer accepts. Larger than [`MAX_REQUEST_BYTES`] on
/// purpose: a request between the two gets a JSON-RPC error and the connection stays usable;
/// only beyond this is the connection closed.
const WS_MAX_MESSAGE_BYTES: usize = 8 * MAX_REQUEST_BYTES;

/// What each handler of one provider port needs.
#[derive(Clone)]
struct PortState {
    ctx: Ctx,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Serves one provider port on `listener` until `shutdown`, as a task of `tracker`.
pub(crate) fn spawn(
    listener: TcpListener,
    ctx: Ctx,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let provider = ctx.provider;
    let listener = FaultListener::new(listener, std::sync::Arc::clone(&ctx.shared), provider);
    let state = PortState {
        ctx,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    // Any path, as hosted providers take their API key in it (`/v3/<key>`).
    let router = Router::new()
        .route("/", get(ws_upgrade).post(http_rpc))
        .route("/{*path}", get(ws_upgrade).post(http_rpc))
        .with_state(state);
    tracker.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(provider, error = %err, "devnet: provider server failed");
        }
    });
}

/// JSON-RPC over HTTP: one payload in, one payload out.
async fn http_rpc(State(port): State<PortState>, body: Body) -> Response {
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let error = RpcError::invalid_request(format!(
                "request body unreadable or over {MAX_REQUEST_BYTES} bytes: {err}"
            ));
            let body = rpc::error_response(&Value::Null, &error);
            return json(StatusCode::PAYLOAD_TOO_LARGE, body);
        }
    };
    let faults = port.ctx.provider_state().map(|p| &p.faults);
    if let Some(faults) = faults
        && faults.is_stalled()
    {
        match hold(faults, &port.shutdown).await {
            Held::Lifted => {}
            Held::Shutdown => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Held::TooLong => return StatusCode::GATEWAY_TIMEOUT.into_response(),
        }
    }
    if let Some(fault) = faults.and_then(Faults::http_fault) {
        return fault_response(fault);
    }
    if faults.is_some_and(Faults::http_garbage) {
        let page = "<html><body><h1>502 Bad Gateway</h1></body></html>";
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], page).into_response();
    }
    let answer = rpc::handle_payload(&port.ctx, &mut Session::Http, &bytes).await;
    let latency = faults.map(Faults::latency).unwrap_or_default();
    if !delay(latency, &port.shutdown).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer {
        Some(body) => json(StatusCode::OK, body),
        // Only notifications: JSON-RPC says answer nothing; HTTP needs a status.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `GET /`: a WebSocket upgrade, or a hint for a human with a browser.
async fn ws_upgrade(
    State(port): State<PortState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => {
            let hint = "livechain devnet: POST JSON-RPC here, or open a WebSocket on this URL\n";
            return (StatusCode::BAD_REQUEST, hint).into_response();
        }
    };
    upgrade
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let PortState {
                ctx,
                shutdown,
                tracker,
            } = port;
            tracker.track_future(connection::run(socket, ctx, shutdown))
        })
}

/// How a stalled request's wait ended.
enum Held {
    Lifted,
    Shutdown,
    TooLong,
}

/// Holds a request while its provider is stalled: until the stall is lifted, shutdown, or
/// [`MAX_STALL_HOLD`] (clients give up long before; the bound keeps tasks from leaking).
async fn hold(faults: &Faults, shutdown: &CancellationToken) -> Held {
    let mut stall = faults.stall_signal();
    let lifted = async move { stall.wait_for(|stalled| !stalled).await.map(|_| ()) };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Held::Shutdown,
        waited = tokio::time::timeout(MAX_STALL_HOLD, lifted) => match waited {
            // `Err` inside would mean the faults were dropped: nothing left to wait for.
            Ok(_) => Held::Lifted,
            Err(_) => Held::TooLong,
        },
    }
}

/// A refused request: the status, and a JSON-RPC error body as hosted providers send.
fn fault_response(fault: HttpFault) -> Response {
    let (status, error) = match fault {
        HttpFault::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            RpcError::new(RpcError::LIMIT_EXCEEDED, "rate limit exceeded"),
        ),
        HttpFault::Status(code) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            RpcError::new(RpcError::INTERNAL_ERROR, "internal error"),
        ),
    };
    let mut response = json(status, rpc::error_response(&Value::Null, &error));
    if matches!(fault, HttpFault::RateLimited) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Sleeps for a latency fault; `false` if shutdown came first.
async fn delay(latency: Duration, shutdown: &CancellationToken) -> bool {
    if latency.is_zero() {
        return true;
    }
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(latency) => true,
    }
}
