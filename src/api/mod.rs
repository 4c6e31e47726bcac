//! The HTTP API (axum): the only module that knows HTTP and response JSON shapes.
//!
//! Each route module exposes `fn router() -> Router<AppState>`; [`router`] merges them.

pub mod access;
mod chains;
mod control;
mod coverage;
mod error;
pub mod events;
mod health;
pub mod json;
pub mod openapi;
mod processes;
mod providers;
pub mod rpc;
mod serve;
pub mod slots;
mod status;
pub mod stream;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use slots::StreamSlots;

use crate::ingest::ChainHandle;
use crate::publish::Hub;
use crate::registry::Supervisor;
use crate::store::Store;

/// Cheap handles shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: &'static metrics_exporter_prometheus::PrometheusHandle,
    pub chains: Arc<[ChainHandle]>,
    pub writer: Arc<crate::ingest::disk::WriterState>,
    /// Every supervised task (`/v1/processes`); unhealthy once a critical one has failed.
    pub supervisor: Supervisor,
    /// Live subscribers' fan-out (`/v1/stream`).
    pub hub: Hub,
    /// Room for `/v1/stream` sessions (`server.max_stream_sessions`).
    pub stream_slots: StreamSlots,
    /// Room for the gateway's WebSocket sessions (`gateway.max_ws_sessions`).
    pub gateway_slots: StreamSlots,
    /// Fires when the service stops: open streams close cleanly.
    pub shutdown: CancellationToken,
    /// The JSON-RPC gateway of each chain (`/rpc/{chain}`); empty when `gateway.enabled` is off.
    pub gateways: Arc<[crate::gateway::Gateway]>,
    /// Who may call what (`server.auth_token`, `server.public`).
    pub access: access::Access,
    /// How long a request body may take to arrive (`server.body_timeout`).
    pub body_timeout: std::time::Duration,
    /// How long one `/v1/events` page may read (`server.query_timeout`).
    pub query_timeout: std::time::Duration,
}

impl AppState {
    /// The configured chains' names: the values a `chain` filter may take.
    pub fn chain_names(&self) -> Vec<&str> {
        self.chains.iter().map(|c| &*c.name).collect()
    }
}

/// The whole API. A path no route knows gets the JSON error shape too (404 `not_found`), so
/// does a known path asked with another method (405 `method_not_allowed`, after the merges: the
/// fallback applies to the routes registered before it), and every request is counted by route
/// and status.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(chains::router())
        .merge(coverage::router())
        .merge(events::router())
        .merge(processes::router())
        .merge(providers::router())
        .merge(rpc::router())
        .merge(stream::router())
        .merge(openapi::router())
        .merge(status::router())
        .merge(control::router())
        .method_not_allowed_fallback(wrong_method)
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            access::guard,
        ))
        .layer(axum::middleware::from_fn(health::count_requests))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; the Allow header lists the methods that are",
        uri.path()
    ))
}

/// Serves the API on `listener` until `shutdown` fires, then drains in-flight requests
/// (`header_timeout`: see [`serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    header_timeout: std::time::Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve(listener, router(state), header_timeout, shutdown).await
}

/// Binds the API listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}
