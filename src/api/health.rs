//! Liveness and metrics: `GET /health`, `GET /metrics`, and the request counter they show.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::openapi::Status;
use crate::telemetry::metrics as m;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// Liveness: the process answers. Readiness (`/ready`) is a separate, stricter check.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The process answers", body = Status)))]
pub(super) async fn health() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

/// Prometheus text exposition of every recorded metric.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition (docs/operations.md lists the metrics)", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::collect_process_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Middleware: counts every request by route pattern (`/v1/events/{cursor}`, never the raw
/// path, so the label set stays bounded) and status code.
pub(super) async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    response
}
