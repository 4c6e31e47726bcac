//! Talking to JSON-RPC providers: the only module that knows JSON-RPC framing.
//!
//! - [`http::HttpClient`]: calls and batches over HTTP with deadlines.
//! - [`ws::WsClient`]: a WebSocket connection as an actor, with subscriptions.
//! - [`methods`]: the methods Livechain calls, typed: [`Request`]s built from alloy's types and
//!   their answers read back ([`methods::read_blocks`] and the like).
//! - [`LogFilter`]: a `logs` filter in the JSON shape nodes take.
//! - [`decode`]: provider JSON to domain values, with a cheap identity-only read for dedupe.
//! - [`ProviderError`]: errors that classify themselves (fault, rate limit, range, ...).

pub mod decode;
mod error;
mod filter;
pub mod http;
pub mod jsonrpc;
pub mod methods;
pub mod ws;

pub use error::ProviderError;
pub use filter::LogFilter;
pub use http::HttpClient;
pub use methods::{BlocksError, FINALITY_TAGS, Method, Request};
pub use ws::{Burst, Notification, WsClient, WsOptions};

/// A URL fit for logs: scheme and host only, since paths and queries carry API keys.
pub fn redact(url: &url::Url) -> String {
    crate::config::redacted_url(url)
}
