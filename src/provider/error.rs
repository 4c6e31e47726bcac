//! Provider errors that classify themselves, so callers (breaker, backfill, retry) decide by
//! kind, never by parsing messages.

use std::time::Duration;

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
    Rpc { code: i64, message: String },
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
            ProviderError::Rpc { code, .. } => is_server_side_code(*code),
            ProviderError::RateLimited { .. } | ProviderError::RangeTooLarge { .. } => false,
        }
    }

    /// Whether the same request may succeed if sent again (here or to another provider).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Rpc { code, .. } => is_server_side_code(*code),
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

    /// Classifies a JSON-RPC error object. Range and result-size refusals are told apart from
    /// rate limits by their message: providers reuse -32005 for both.
    pub fn from_rpc(code: i64, message: &str) -> ProviderError {
        let lower = message.to_ascii_lowercase();
        let range_hint = [
            "range",
            "more than",
            "too many results",
            "response size",
            "result size",
            "query returned",
            "too large",
        ];
        let rate_hint = ["rate limit", "too many requests", "capacity", "throttl"];
        if range_hint.iter().any(|h| lower.contains(h)) && !lower.contains("rate") {
            return ProviderError::RangeTooLarge {
                message: message.to_owned(),
            };
        }
        if matches!(code, -32005 | -32029 | -32090 | 429)
            || rate_hint.iter().any(|h| lower.contains(h))
        {
            return ProviderError::RateLimited { retry_after: None };
        }
        ProviderError::Rpc {
            code,
            message: message.to_owned(),
        }
    }
}

/// JSON-RPC codes that blame the server rather than the request: -32603 internal error and
/// the implementation-defined server range -32000..=-32099 (minus the limit codes above).
fn is_server_side_code(code: i64) -> bool {
    code == -32603 || (-32099..=-32000).contains(&code) && code != -32005
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(i64, &str, &str)] = &[
            (-32005, "query returned more than 10000 results", "range"),
            (-32005, "query exceeds max block range 100", "range"),
            (-32602, "block range is too wide", "range"),
            (-32000, "Log response size exceeded", "range"),
            (-32005, "limit exceeded", "rate"),
            (-32016, "rate limit reached, slow down", "rate"),
            (429, "Too Many Requests", "rate"),
            (
                -32602,
                "invalid argument 0: hex string without 0x prefix",
                "rpc",
            ),
            (3, "execution reverted", "rpc"),
            (-32000, "header not found", "rpc"),
        ];
        for (code, message, want) in cases {
            let got = match ProviderError::from_rpc(*code, message) {
                ProviderError::RangeTooLarge { .. } => "range",
                ProviderError::RateLimited { .. } => "rate",
                ProviderError::Rpc { .. } => "rpc",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, *want, "{code} {message}");
        }
    }

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
    }
}
