//! Talking to JSON-RPC providers: the only module that knows JSON-RPC framing.
//!
//! - [`http::HttpClient`]: calls and batches over HTTP with deadlines.
//! - [`ws::WsClient`]: a WebSocket connection as an actor, with subscriptions.
//! - [`decode`]: provider JSON to domain values, with a cheap identity-only read for dedupe.
//! - [`ProviderError`]: errors that classify themselves (fault, rate limit, range, ...).

pub mod decode;
mod error;
pub mod http;
pub mod jsonrpc;
pub mod ws;

pub use error::ProviderError;
pub use http::HttpClient;
pub use ws::{Burst, Notification, WsClient, WsOptions};

/// A URL fit for logs: scheme and host only, since paths and queries carry API keys.
pub fn redact(url: &url::Url) -> String {
    crate::config::redacted_url(url)
}
