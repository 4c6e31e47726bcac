//! The HTTP API (axum): the only module that knows HTTP and response JSON shapes.
//!
//! Each route module exposes `fn router() -> Router<AppState>`; [`router`] merges them.

mod error;
mod health;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::store::Store;

/// Cheap handles shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: &'static metrics_exporter_prometheus::PrometheusHandle,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new().merge(health::router()).with_state(state)
}

/// Serves `router` on `listener` until `shutdown` fires, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the API listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))
}
