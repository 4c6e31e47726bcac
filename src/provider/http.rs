//! JSON-RPC over HTTP (reqwest): single calls and batches, with a deadline per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::value::RawValue;
use url::Url;

use super::decode::Head;
use super::jsonrpc::{self, Incoming};
use super::methods::{self, Request};
use super::{ErrorRules, ErrorTally, ProviderError, redact};
use crate::telemetry::metrics as m;

/// Idle keep-alive connections kept per provider.
const IDLE_CONNECTIONS: usize = 256;

/// A cheap-to-clone HTTP JSON-RPC client for one provider.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: Url,
    chain: String,
    provider: String,
    timeout: Duration,
    next_id: AtomicU64,
    rules: ErrorRules,
    errors: ErrorTally,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("provider", &self.inner.provider)
            .field("url", &redact(&self.inner.url))
            .finish()
    }
}

impl HttpClient {
    pub fn new(
        chain: &str,
        provider: &str,
        url: Url,
        timeout: Duration,
    ) -> Result<HttpClient, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // The gateway may have many calls in flight to one provider: connections beyond
            // this many idle ones are closed after each answer, and reopened for the next.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build()
            .map_err(|e| ProviderError::Transport(e.to_string()))?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                url,
                chain: chain.to_owned(),
                provider: provider.to_owned(),
                timeout,
                next_id: AtomicU64::new(1),
                rules: ErrorRules::default(),
                errors: ErrorTally::new(chain, provider),
            }),
        })
    }

    /// The same client classifying error objects by `rules` (the configured `error_rules`).
    pub fn with_error_rules(self, rules: ErrorRules) -> HttpClient {
        let inner = &self.inner;
        HttpClient {
            inner: Arc::new(Inner {
                client: inner.client.clone(),
                url: inner.url.clone(),
                chain: inner.chain.clone(),
                provider: inner.provider.clone(),
                timeout: inner.timeout,
                next_id: AtomicU64::new(inner.next_id.load(Ordering::Relaxed)),
                rules,
                errors: inner.errors.clone(),
            }),
        }
    }

    /// How this client classifies error objects.
    pub fn error_rules(&self) -> &ErrorRules {
        &self.inner.rules
    }

    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// The provider's error counts: this client's calls and (counted by its listener) its
    /// WebSocket's.
    pub fn errors(&self) -> &ErrorTally {
        &self.inner.errors
    }

    /// One call of any method, unread: the raw `result` on success. Livechain's own calls go
    /// through [`HttpClient::request`] and the typed calls below.
    pub async fn call(
        &self,
        method: &str,
        params: &RawValue,
    ) -> Result<Box<RawValue>, ProviderError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = jsonrpc::request(id, method, params);
        self.post(method, body, |mut frames| match frames.pop() {
            Some(frame) if frames.is_empty() => frame.into_outcome(&self.inner.rules),
            _ => Err(ProviderError::Malformed(
                "expected exactly one response".into(),
            )),
        })
        .await
    }

    /// One typed call; the raw `result` on success, for the `read_*` function of its kind.
    pub async fn request(&self, request: &Request) -> Result<Box<RawValue>, ProviderError> {
        self.call(request.method().as_str(), request.params()).await
    }

    /// The node's block at `n`; `None` when it has none there (yet).
    pub async fn block(&self, n: u64) -> Result<Option<Head>, ProviderError> {
        methods::read_block(&self.request(&Request::block(n)?).await?)
    }

    /// The node's head.
    pub async fn block_number(&self) -> Result<u64, ProviderError> {
        methods::read_block_number(&self.request(&Request::block_number()?).await?)
    }

    /// The node's EIP-155 chain id.
    pub async fn chain_id(&self) -> Result<u64, ProviderError> {
        methods::read_chain_id(&self.request(&Request::chain_id()?).await?)
    }

    /// A batch; one outcome per call, in the order given (matched by id, whatever the
    /// provider's order). A provider that rejects batches fails the whole call.
    pub async fn batch(
        &self,
        calls: &[Request],
    ) -> Result<Vec<Result<Box<RawValue>, ProviderError>>, ProviderError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let first = self
            .inner
            .next_id
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        let body = jsonrpc::batch(
            first,
            calls.iter().map(|c| (c.method().as_str(), c.params())),
        );
        let outcomes: Vec<Result<Box<RawValue>, ProviderError>> = self
            .post("batch", body, |frames| {
                let mut out: Vec<Option<Result<Box<RawValue>, ProviderError>>> =
                    (0..calls.len()).map(|_| None).collect();
                for frame in frames {
                    let slot = frame
                        .numeric_id()
                        .and_then(|id| id.checked_sub(first))
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|&i| i < calls.len());
                    match slot {
                        Some(i) => out[i] = Some(frame.into_outcome(&self.inner.rules)),
                        // A single error object for the whole batch (e.g. "batch not supported").
                        None if frame.error.is_some() => {
                            return Err(frame
                                .into_outcome(&self.inner.rules)
                                .err()
                                .unwrap_or(ProviderError::Closed));
                        }
                        None => {}
                    }
                }
                Ok(out
                    .into_iter()
                    .map(|o| {
                        o.unwrap_or_else(|| {
                            Err(ProviderError::Malformed(
                                "batch response missing an id".into(),
                            ))
                        })
                    })
                    .collect())
            })
            .await?;
        // The batch as a whole counted as one request; its calls' own errors are counted here.
        for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            self.inner.errors.record(error);
        }
        Ok(outcomes)
    }

    /// Sends `body` and reads the response, handing its messages (borrowed from its text) to
    /// `read`; records the request's duration and outcome (what `read` makes of it counts: a
    /// body that is not JSON-RPC, an error object).
    async fn post<T>(
        &self,
        method: &str,
        body: String,
        read: impl FnOnce(Vec<Incoming<'_>>) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let result = match self.send(body, self.inner.timeout).await {
            Ok(text) => jsonrpc::parse_frame(&text).and_then(read),
            Err(err) => Err(err),
        };
        self.count(method, started, &result);
        result
    }

    /// Sends a body the gateway built (a caller's calls, renumbered) with its own deadline; the
    /// response's text, which the gateway reads itself. Counted under `method` as every call is.
    pub async fn forward(
        &self,
        method: &str,
        body: String,
        timeout: Duration,
    ) -> Result<String, ProviderError> {
        let started = Instant::now();
        let result = self.send(body, timeout).await;
        self.count(method, started, &result);
        result
    }

    /// Records a request's duration and outcome.
    fn count<T>(&self, method: &str, started: Instant, result: &Result<T, ProviderError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.is_rate_limit() => "rate_limited",
            Err(ProviderError::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        if let Err(error) = result {
            self.inner.errors.record(error);
        }
        let labels = [
            ("chain", self.inner.chain.clone()),
            ("provider", self.inner.provider.clone()),
            ("method", method.to_owned()),
        ];
        metrics::histogram!(m::RPC_DURATION, &labels).record(started.elapsed().as_secs_f64());
        metrics::counter!(
            m::RPC_REQUESTS,
            &[
                ("chain", self.inner.chain.clone()),
                ("provider", self.inner.provider.clone()),
                ("method", method.to_owned()),
                ("outcome", outcome.to_owned()),
            ]
        )
        .increment(1);
    }

    async fn send(&self, body: String, timeout: Duration) -> Result<String, ProviderError> {
        let response = self
            .inner
            .client
            .post(self.inner.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            return Err(ProviderError::RateLimited { retry_after });
        }
        if !status.is_success() {
            return Err(ProviderError::Http(status.as_u16()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        // JSON is UTF-8: validated once, not decoded by a guessed charset.
        String::from_utf8(bytes.into())
            .map_err(|_| ProviderError::Malformed("the answer is not UTF-8".into()))
    }
}

/// reqwest errors carry the URL, which may carry a key: keep only the kind.
fn transport_error(err: reqwest::Error, timeout: Duration) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout(timeout)
    } else if err.is_connect() {
        ProviderError::Connect(err.without_url().to_string())
    } else {
        ProviderError::Transport(err.without_url().to_string())
    }
}

/// A `Retry-After` value (RFC 9110 10.2.3): delay seconds, or an HTTP date (a date already past
/// means no wait). `None` when it is neither.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Tue, 24 Nov 2026 18:00:00 GMT")
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cases: &[(&str, Option<u64>)] = &[
            ("7", Some(7)),
            (" 120 ", Some(120)),
            ("Tue, 24 Nov 2026 18:00:30 GMT", Some(30)),
            ("Tue, 24 Nov 2026 17:00:00 GMT", Some(0)),
            ("soon", None),
            ("-1", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                retry_after(value, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }
}
