//! The providers of one chain as ingest sees them: an HTTP client each, a WebSocket URL,
//! an order of preference, and failover across them for HTTP work.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::value::RawValue;
use url::Url;

use super::dedupe::ProviderIndex;
use crate::provider::{HttpClient, ProviderError};

/// One provider of a chain.
#[derive(Debug, Clone)]
pub struct ChainProvider {
    pub index: ProviderIndex,
    pub id: String,
    pub http: HttpClient,
    pub ws_url: Option<Url>,
    pub priority: u32,
}

/// Every provider of a chain, in order of preference (priority, then configuration order).
#[derive(Debug, Clone)]
pub struct ProviderSet {
    providers: Arc<[ChainProvider]>,
}

impl ProviderSet {
    pub fn new(mut providers: Vec<ChainProvider>) -> ProviderSet {
        providers.sort_by_key(|p| (p.priority, p.index));
        ProviderSet {
            providers: providers.into(),
        }
    }

    pub fn all(&self) -> &[ChainProvider] {
        &self.providers
    }

    pub fn id(&self, index: ProviderIndex) -> &str {
        self.providers
            .iter()
            .find(|p| p.index == index)
            .map_or("unknown", |p| p.id.as_str())
    }

    /// One call, tried on each provider in turn until one answers. Errors the request itself
    /// caused (bad params, range refusals) are returned at once: another provider would give the
    /// same answer, and the caller must react (split the range).
    pub async fn call(
        &self,
        method: &str,
        params: &RawValue,
    ) -> Result<(ProviderIndex, Box<RawValue>), ProviderError> {
        let mut last = ProviderError::Transport("chain has no provider".into());
        for provider in self.providers.iter() {
            match provider.http.call(method, params).await {
                Ok(raw) => return Ok((provider.index, raw)),
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => {
                    tracing::warn!(provider = %provider.id, method, error = %err, "provider call failed; trying the next");
                    last = err;
                }
            }
        }
        Err(last)
    }
}

/// Reconnect and retry delays: exponential from 100 ms to 30 s, with jitter so that many
/// listeners losing one provider at once do not reconnect in lock-step.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Outcomes of one batch, one per call in order, and the provider that answered.
pub type BatchAnswer = (ProviderIndex, Vec<Result<Box<RawValue>, ProviderError>>);

impl ProviderSet {
    /// A batch, tried on each provider in turn while the whole batch fails retryably.
    pub async fn batch(&self, calls: &[(&str, &RawValue)]) -> Result<BatchAnswer, ProviderError> {
        let mut last = ProviderError::Transport("chain has no provider".into());
        for provider in self.providers.iter() {
            match provider.http.batch(calls).await {
                Ok(answers) => return Ok((provider.index, answers)),
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => {
                    tracing::warn!(provider = %provider.id, error = %err, "provider batch failed; trying the next");
                    last = err;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_ends() {
        let delays: Vec<Duration> = backoff().take(40).collect();
        assert_eq!(delays.len(), 40);
        // Jitter adds up to one more base delay, so the bounds are doubled.
        assert!(delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(delays[39] >= Duration::from_secs(30));
    }
}
