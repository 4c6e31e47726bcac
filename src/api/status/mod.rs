//! `GET /`: the status page, served by the binary itself. Plain HTML, CSS and JavaScript
//! embedded at build time (no framework, no build step, nothing fetched from elsewhere): the
//! page polls `/v1/chains`, `/v1/providers` and `/v1/processes` and follows `/v1/stream` for its
//! live tail. A content security policy keeps every request on this origin.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("status.js");
const STYLE: &str = include_str!("status.css");

/// Only this origin, for everything: no CDN, no font, no beacon can load.
const POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                      form-action 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/status.js", get(script))
        .route("/ui/status.css", get(style))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The status page.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The status page (HTML)", body = String, content_type = "text/html")))]
pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
