//! A provider's errors counted by kind since start: `/v1/providers` `errors_by_class`, the
//! status page, and `livechain_provider_errors_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::ErrorClass;
use crate::telemetry::metrics as m;

use super::ProviderError;

/// Every kind an error is counted under, in the order `/v1/providers` lists them.
pub const ERROR_KINDS: [&str; 11] = [
    "connect",
    "transport",
    "closed",
    "timeout",
    "http_status",
    "malformed",
    "rate_limited",
    "range",
    "fault",
    "missing",
    "caller",
];

impl ProviderError {
    /// The kind this error is counted under (one of [`ERROR_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "connect",
            ProviderError::Transport(_) => "transport",
            ProviderError::Closed => "closed",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Http(_) => "http_status",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::RangeTooLarge { .. } => "range",
            ProviderError::Rpc { class, .. } => match class {
                ErrorClass::Fault => "fault",
                ErrorClass::Missing => "missing",
                ErrorClass::Caller => "caller",
                ErrorClass::RateLimit => "rate_limited",
                ErrorClass::Range => "range",
            },
        }
    }
}

/// One provider's error counts; clones share them. The HTTP client counts its own calls'
/// errors; the listener counts its WebSocket's (connecting, subscribing, the socket closing).
#[derive(Clone)]
pub struct ErrorTally {
    inner: Arc<Inner>,
}

struct Inner {
    chain: String,
    provider: String,
    counts: [AtomicU64; ERROR_KINDS.len()],
}

impl std::fmt::Debug for ErrorTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.counts()).finish()
    }
}

impl ErrorTally {
    pub fn new(chain: &str, provider: &str) -> ErrorTally {
        ErrorTally {
            inner: Arc::new(Inner {
                chain: chain.to_owned(),
                provider: provider.to_owned(),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }

    /// Counts `error` under its kind.
    pub fn record(&self, error: &ProviderError) {
        self.count(error.kind());
    }

    /// Counts one error of `kind` (one of [`ERROR_KINDS`]; the gateway's judgements of
    /// answers it forwarded are counted this way).
    pub fn count(&self, kind: &'static str) {
        let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) else {
            debug_assert!(false, "{kind} is not an error kind");
            return;
        };
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            m::PROVIDER_ERRORS,
            "chain" => self.inner.chain.clone(),
            "provider" => self.inner.provider.clone(),
            "class" => kind,
        )
        .increment(1);
    }

    /// Every kind with its count, zeros included, in [`ERROR_KINDS`]' order.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        ERROR_KINDS
            .iter()
            .zip(&self.inner.counts)
            .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_error_is_counted_under_its_own_kind() {
        let tally = ErrorTally::new("c", "p");
        tally.record(&ProviderError::Timeout(Duration::from_secs(1)));
        tally.record(&ProviderError::Timeout(Duration::from_secs(2)));
        tally.record(&ProviderError::Http(503));
        tally.record(&ProviderError::from_rpc(-32000, "header not found"));
        tally.record(&ProviderError::from_rpc(-32602, "invalid params"));
        tally.record(&ProviderError::from_rpc(-32005, "limit exceeded"));
        let counts: std::collections::BTreeMap<_, _> = tally.counts().into_iter().collect();
        assert_eq!(counts.len(), ERROR_KINDS.len());
        assert_eq!(counts["timeout"], 2);
        assert_eq!(counts["http_status"], 1);
        assert_eq!(counts["missing"], 1);
        assert_eq!(counts["caller"], 1);
        assert_eq!(counts["rate_limited"], 1);
        assert_eq!(counts["connect"] + counts["fault"], 0);
        // Clones share the counts.
        tally.clone().record(&ProviderError::Closed);
        assert_eq!(tally.counts()[2], ("closed", 1));
    }

    #[test]
    fn every_kind_is_listed() {
        let errors = [
            ProviderError::Connect(String::new()),
            ProviderError::Transport(String::new()),
            ProviderError::Closed,
            ProviderError::Timeout(Duration::ZERO),
            ProviderError::Http(500),
            ProviderError::Malformed(String::new()),
            ProviderError::RateLimited { retry_after: None },
            ProviderError::RangeTooLarge {
                message: String::new(),
            },
            ProviderError::from_rpc(-32603, "internal error"),
        ];
        for error in errors {
            assert!(ERROR_KINDS.contains(&error.kind()), "{error}");
        }
    }
}
