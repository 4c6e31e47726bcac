//! Provider errors that classify themselves, so callers (breaker, backfill, retry) decide by
//! kind, never by parsing messages.

use std::time::Duration;

use crate::config::ErrorClass;

/// Why a request to a provider did not produce a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Connecting, sending or receiving failed (refused, reset, TLS, socket closed).
    #[error("transport: {0}")]
    Transport(String),
    /// Connecting failed: the request was never sent (safe to send elsewhere, even a write).
    #[error("connecting: {0}")]
    Connect(String),
    /// No answer within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The provider asked us to slow down (HTTP 429, JSON-RPC -32005 and similar).
    #[error("rate limited{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// An HTTP status other than 2xx and 429.
    #[error("HTTP status {0}")]
    Http(u16),
    /// The provider refused an `eth_getLogs` range or result size: split the range.
    #[error("range too large: {message}")]
    RangeTooLarge { message: String },
    /// A JSON-RPC error object the provider answered with.
    #[error("JSON-RPC error {code}: {message}")]
    Rpc {
        code: i64,
        message: String,
        /// Fault, missing or caller ([`super::ErrorRules`] decided; rate limits and range
        /// refusals have their own variants).
        class: ErrorClass,
    },
    /// The answer did not parse or broke the protocol.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The connection is gone (the WebSocket service stopped); reconnect.
    #[error("connection closed")]
    Closed,
}

impl ProviderError {
    /// Whether this counts against the provider's health (the breaker's failure count).
    /// Rate limits and errors caused by the request itself do not.
    pub fn is_fault(&self) -> bool {
        match self {
            ProviderError::Transport(_)
            | ProviderError::Connect(_)
            | ProviderError::Timeout(_)
            | ProviderError::Malformed(_)
            | ProviderError::Closed => true,
            ProviderError::Http(status) => *status >= 500,
            ProviderError::Rpc { class, .. } => *class == ErrorClass::Fault,
            ProviderError::RateLimited { .. } | ProviderError::RangeTooLarge { .. } => false,
        }
    }

    /// Whether the same request may succeed if sent again (here or to another provider).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Rpc { class, .. } => *class != ErrorClass::Caller,
            ProviderError::Http(status) => *status >= 500 || *status == 408,
            ProviderError::RangeTooLarge { .. } => false,
            _ => true,
        }
    }

    pub fn is_rate_limit(&self) -> bool {
        matches!(self, ProviderError::RateLimited { .. })
    }

    pub fn is_range_error(&self) -> bool {
        matches!(self, ProviderError::RangeTooLarge { .. })
    }

    /// Classifies a JSON-RPC error object by the built-in table alone (see
    /// [`super::ErrorRules`], which puts the configured rules first).
    pub fn from_rpc(code: i64, message: &str) -> ProviderError {
        super::ErrorRules::default().error(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_what_the_breaker_counts() {
        assert!(ProviderError::Timeout(Duration::from_secs(1)).is_fault());
        assert!(ProviderError::Http(502).is_fault());
        assert!(ProviderError::Malformed("x".into()).is_fault());
        assert!(!ProviderError::Http(404).is_fault());
        assert!(!ProviderError::RateLimited { retry_after: None }.is_fault());
        assert!(!ProviderError::from_rpc(-32602, "invalid params").is_fault());
        assert!(!ProviderError::from_rpc(3, "execution reverted").is_fault());
        assert!(ProviderError::from_rpc(-32603, "internal error").is_fault());
        // Behind or pruned: another provider is asked, nobody is blamed.
        let missing = ProviderError::from_rpc(-32000, "header not found");
        assert!(!missing.is_fault() && missing.is_retryable());
    }
}
