//! `POST /rpc/{chain}`: the JSON-RPC gateway over HTTP. The chain is named by its configured
//! name or its chain id; the body goes to [`crate::gateway`] whole.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppState;
use crate::gateway::{self, Gateway};

/// The response header naming the provider that answered (`gateway.provider_header`).
pub const PROVIDER_HEADER: &str = "x-livechain-provider";

pub fn router() -> Router<AppState> {
    Router::new().route("/rpc/{chain}", post(rpc))
}

async fn rpc(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let Some(gateway) = find(&state, &chain) else {
        let known: Vec<String> = state
            .gateways
            .iter()
            .map(|g| g.chain().to_owned())
            .collect();
        let message = format!(
            "unknown chain {chain:?}: the gateway serves {} (by name or chain id)",
            if known.is_empty() {
                "no chain".to_owned()
            } else {
                known.join(", ")
            }
        );
        return json(
            StatusCode::NOT_FOUND,
            gateway::refusal_body(gateway::METHOD_NOT_FOUND, &message),
        );
    };
    let limit = gateway.config().max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let message = format!(
                "request body too large: the limit is {limit} bytes (gateway.max_body_bytes)"
            );
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                gateway::refusal_body(gateway::INVALID_REQUEST, &message),
            );
        }
    };
    let answer = gateway.handle(&bytes, gateway::caller_at(peer.ip())).await;
    let mut response = json(StatusCode::OK, answer.body);
    if gateway.config().provider_header
        && let Some(provider) = answer.provider.and_then(|p| HeaderValue::from_str(&p).ok())
    {
        response.headers_mut().insert(PROVIDER_HEADER, provider);
    }
    response
}

fn find<'a>(state: &'a AppState, key: &str) -> Option<&'a Gateway> {
    state.gateways.iter().find(|g| g.answers_to(key))
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
