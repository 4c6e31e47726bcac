//! The providers of one chain as ingest sees them: an HTTP client each, a WebSocket URL,
//! an order of preference, and failover across them for HTTP work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use url::Url;

use crate::breaker::{Outcome, Permit};
use crate::domain::ProviderIndex;
use crate::health::ChainHealth;
use crate::provider::{HttpClient, Method, ProviderError, Request, methods};
use crate::telemetry::metrics as m;

/// One provider of a chain.
#[derive(Debug, Clone)]
pub struct ChainProvider {
    pub index: ProviderIndex,
    pub id: String,
    pub http: HttpClient,
    pub ws_url: Option<Url>,
    pub priority: u32,
    /// False once the provider refused a JSON-RPC batch: its calls are then sent one by one.
    pub batches: Arc<AtomicBool>,
    /// Blocks per `eth_getLogs` range it accepts: the range sync's limit at start, halved below
    /// each range it refuses (one provider's limit is not another's).
    pub range_limit: Arc<AtomicU64>,
}

/// Single calls in flight at once to a provider that refuses batches.
const UNBATCHED_CONCURRENCY: usize = 8;

/// Every provider of a chain, in order of preference (priority, then configuration order),
/// with their shared [`ChainHealth`]: HTTP work goes through each provider's breaker and tries
/// the healthiest first.
#[derive(Debug, Clone)]
pub struct ProviderSet {
    providers: Arc<[ChainProvider]>,
    health: ChainHealth,
}

impl ProviderSet {
    /// `health` addresses providers by their [`ProviderIndex`].
    pub fn new(mut providers: Vec<ChainProvider>, health: ChainHealth) -> ProviderSet {
        providers.sort_by_key(|p| (p.priority, p.index));
        ProviderSet {
            providers: providers.into(),
            health,
        }
    }

    pub fn all(&self) -> &[ChainProvider] {
        &self.providers
    }

    pub fn health(&self) -> &ChainHealth {
        &self.health
    }

    pub fn id(&self, index: ProviderIndex) -> &str {
        self.providers
            .iter()
            .find(|p| p.index == index)
            .map_or("unknown", |p| p.id.as_str())
    }

    /// Every provider in the order calls try them: [`ChainHealth::ranked`].
    pub fn ranked(&self) -> Vec<&ChainProvider> {
        self.order(None)
    }

    /// [`ProviderSet::ranked`], by `latency_ms` where it knows a provider's (see
    /// [`ChainHealth::ranked_by`]).
    pub fn ranked_by(&self, latency_ms: impl Fn(usize) -> Option<f64>) -> Vec<&ChainProvider> {
        self.health
            .ranked_by(latency_ms)
            .into_iter()
            .filter_map(|i| self.by_index(i))
            .collect()
    }

    fn by_index(&self, index: usize) -> Option<&ChainProvider> {
        self.providers
            .iter()
            .find(|p| usize::from(p.index) == index)
    }

    /// Blocks per range worth asking for: the largest limit among the healthy providers (all of
    /// them when none is healthy). A provider with a smaller one is asked such a range last.
    pub fn range_limit(&self) -> u64 {
        let limit = |p: &ChainProvider| p.range_limit.load(Ordering::Relaxed);
        let healthy = self
            .providers
            .iter()
            .filter(|p| self.health.is_healthy(usize::from(p.index)))
            .map(limit)
            .max();
        healthy
            .or_else(|| self.providers.iter().map(limit).max())
            .unwrap_or(1)
    }

    /// `index` refused a range of `blocks` blocks as too large: its limit becomes half of that
    /// (not of its limit: several ranges in flight may be refused for one limit), at least one.
    /// Its limit now; `None` for an index not in the set.
    pub fn refused_range(&self, index: ProviderIndex, blocks: u64) -> Option<u64> {
        let provider = self.by_index(usize::from(index))?;
        let half = (blocks / 2).max(1);
        let before = provider.range_limit.fetch_min(half, Ordering::Relaxed);
        Some(before.min(half))
    }

    /// The order to try providers in: [`ChainHealth::ranked`], its healthy head rotated by
    /// `start` so that concurrent callers starting at different turns spread the load.
    fn order(&self, start: Option<usize>) -> Vec<&ChainProvider> {
        let mut ranked = self.health.ranked();
        if let Some(start) = start {
            let healthy = self.health.healthy_count().min(ranked.len());
            if healthy > 1 {
                ranked[..healthy].rotate_left(start % healthy);
            }
        }
        ranked
            .into_iter()
            .filter_map(|i| self.by_index(i))
            .collect()
    }

    /// One call, tried on each provider in turn (healthiest first, skipping those whose breaker
    /// is open or cooling down) until one answers. Errors the request itself caused (bad
    /// params, range refusals) are returned at once: another provider would give the same
    /// answer, and the caller must react (split the range).
    pub async fn call(
        &self,
        request: &Request,
    ) -> Result<(ProviderIndex, Box<RawValue>), ProviderError> {
        let answer = self.call_on(self.order(None), request).await;
        if let Ok((served, _)) = &answer {
            self.count_failover(0, *served);
        }
        answer
    }

    /// One call to `index` only, through its breaker (the idle probe).
    pub async fn call_one(
        &self,
        index: ProviderIndex,
        request: &Request,
    ) -> Result<Box<RawValue>, ProviderError> {
        let provider = self
            .by_index(usize::from(index))
            .ok_or_else(|| ProviderError::Transport("no such provider".into()))?;
        self.call_on(vec![provider], request)
            .await
            .map(|(_, raw)| raw)
    }

    /// The chain's head over HTTP, from the first provider that answers (see
    /// [`ProviderSet::call`]).
    pub async fn block_number(&self) -> Result<u64, ProviderError> {
        let (_, raw) = self.call(&Request::block_number()?).await?;
        methods::read_block_number(&raw)
    }

    /// A head answered (`eth_blockNumber`) updates the provider's head in its health record.
    async fn call_on(
        &self,
        order: Vec<&ChainProvider>,
        request: &Request,
    ) -> Result<(ProviderIndex, Box<RawValue>), ProviderError> {
        let method = request.method();
        let mut last = None;
        for provider in order {
            let index = usize::from(provider.index);
            let permit = match self.health.acquire(index) {
                Ok(permit) => permit,
                Err(retry_in) => {
                    last.get_or_insert(unavailable(retry_in));
                    continue;
                }
            };
            let started = Instant::now();
            let best_then = self.health.best_head();
            let result = provider.http.request(request).await;
            self.health
                .record(index, permit, Outcome::of(&result), Some(started.elapsed()));
            match result {
                Ok(raw) => {
                    if method == Method::BlockNumber
                        && let Ok(head) = methods::read_block_number(&raw)
                    {
                        self.health.observe_polled_head(index, head, best_then);
                    }
                    return Ok((provider.index, raw));
                }
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => {
                    tracing::warn!(chain = %self.health.chain(), provider = %provider.id, method = method.as_str(), error = %err, "provider call failed; trying the next");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::Transport("chain has no provider".into())))
    }

    /// Counts a failover when `served` is not the provider the static order (priority, then
    /// configuration order, rotated by `start`) would have asked first: the request moved
    /// because that one was unhealthy, open, cooling down or failing.
    fn count_failover(&self, start: usize, served: ProviderIndex) {
        let count = self.providers.len().max(1);
        let Some(preferred) = self.providers.get(start % count) else {
            return;
        };
        if preferred.index != served {
            metrics::counter!(m::FAILOVERS, "chain" => self.health.chain().to_string(), "from" => preferred.id.clone(), "provider" => self.id(served).to_owned())
                .increment(1);
        }
    }
}

/// What a caller gets when every provider's breaker refused: fail fast, the caller retries.
fn unavailable(retry_in: Duration) -> ProviderError {
    ProviderError::Transport(format!(
        "no provider available (breakers open, cooling down or retrying after a failure at start; the first may answer in {} ms)",
        retry_in.as_millis()
    ))
}

/// Outcomes of one batch, one per call in order, and the provider that answered.
pub type BatchAnswer = (ProviderIndex, Vec<Result<Box<RawValue>, ProviderError>>);

impl ProviderSet {
    /// A batch, tried on each provider in turn while the whole batch fails retryably.
    pub async fn batch(&self, calls: &[Request]) -> Result<BatchAnswer, ProviderError> {
        self.batch_from(0, None, 0, calls).await
    }

    /// A batch sent first to the `start`-th healthy provider (modulo their number), then to the
    /// next ones while it fails retryably: concurrent callers starting at different providers
    /// spread the load. Each attempt goes through the provider's breaker; a provider that
    /// refuses batches gets the same calls one by one (and from then on only so); answers are
    /// in the order of `calls` either way. `avoid` (one that just answered wrong data) is asked
    /// last, whatever its rank, and so are providers whose range limit is below `blocks` (the
    /// range the calls read; 0 when they read none).
    ///
    /// Hedged: an attempt still unanswered after [`ProviderSet::hedge_after`] is joined by one
    /// to the next provider, and the first usable answer wins, so a provider that hangs (a
    /// silent stall) delays a range by the hedge delay, not by the HTTP timeout. At most two attempts are in flight at once.
    pub async fn batch_from(
        &self,
        start: usize,
        avoid: Option<ProviderIndex>,
        blocks: u64,
        calls: &[Request],
    ) -> Result<BatchAnswer, ProviderError> {
        let mut order = self.order(Some(start));
        // Stable: the rotation is kept among those that accept the range, and among the rest.
        order.sort_by_key(|p| p.range_limit.load(Ordering::Relaxed) < blocks);
        if let Some(at) = avoid.and_then(|a| order.iter().position(|p| p.index == a)) {
            let avoided = order.remove(at);
            order.push(avoided);
        }
        let mut candidates = order.into_iter();
        let mut last = None;
        // Permits of the attempts in flight, by attempt number; whatever is left when an
        // answer wins is recorded as neutral (cancelled, says nothing about the provider).
        let mut permits: Vec<Option<(usize, Permit)>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut hedge_at: Option<Instant> = None;
        let answer = loop {
            let hedging = !in_flight.is_empty();
            if !hedging || hedge_at.is_some_and(|at| Instant::now() >= at) {
                hedge_at = None;
                if let Some((provider, permit)) = self.next_permit(&mut candidates, &mut last) {
                    let attempt = permits.len();
                    if hedging && let Some(Some((slow, _))) = permits.last() {
                        metrics::counter!(m::HEDGES, "chain" => self.health.chain().to_string(), "provider" => self.health.id(*slow).to_owned())
                            .increment(1);
                    }
                    permits.push(Some((usize::from(provider.index), permit)));
                    if in_flight.is_empty() {
                        hedge_at = Some(Instant::now() + self.hedge_after(provider.index));
                    }
                    in_flight.push(async move {
                        let started = Instant::now();
                        let result = provider.batch(calls).await;
                        (attempt, provider, started.elapsed(), result)
                    });
                } else if in_flight.is_empty() {
                    break Err(last.unwrap_or_else(|| {
                        ProviderError::Transport("chain has no provider".into())
                    }));
                }
            }
            let sleep_until = hedge_at.unwrap_or_else(|| Instant::now() + HEDGE_MAX);
            let (attempt, provider, elapsed, result) = tokio::select! {
                Some(done) = in_flight.next() => done,
                _ = tokio::time::sleep_until(sleep_until.into()), if hedge_at.is_some() => continue,
                else => continue, // nothing in flight: the top of the loop ends it
            };
            if let Some((index, permit)) = permits.get_mut(attempt).and_then(Option::take) {
                let outcome = batch_outcome(&result);
                self.health.record(index, permit, outcome, Some(elapsed));
            }
            match result {
                Ok(answers) => {
                    self.count_failover(start, provider.index);
                    break Ok((provider.index, answers));
                }
                Err(err) if !err.is_retryable() => break Err(err),
                Err(err) => {
                    tracing::warn!(chain = %self.health.chain(), provider = %provider.id, error = %err, "provider batch failed; trying the next");
                    last = Some(err);
                    // The next provider at once, hedging or not.
                    hedge_at = Some(Instant::now());
                }
            }
        };
        drop(in_flight);
        for (index, permit) in permits.into_iter().flatten() {
            self.health.record(index, permit, Outcome::Neutral, None);
        }
        answer
    }

    /// The next provider of `candidates` whose breaker grants a permit; those refusing leave
    /// their reason in `last` if nothing better is there.
    fn next_permit<'a>(
        &self,
        candidates: &mut impl Iterator<Item = &'a ChainProvider>,
        last: &mut Option<ProviderError>,
    ) -> Option<(&'a ChainProvider, Permit)> {
        for provider in candidates.by_ref() {
            match self.health.acquire(usize::from(provider.index)) {
                Ok(permit) => return Some((provider, permit)),
                Err(retry_in) => {
                    last.get_or_insert(unavailable(retry_in));
                }
            }
        }
        None
    }

    /// How long an attempt on `index` may go unanswered before it is hedged: a few times its
    /// recent p99, within [`HEDGE_MIN`]..=[`HEDGE_MAX`] ([`HEDGE_MAX`] before any is measured).
    pub fn hedge_after(&self, index: ProviderIndex) -> Duration {
        self.health
            .latency_p99(usize::from(index))
            .map_or(HEDGE_MAX, |p99| p99.saturating_mul(HEDGE_FACTOR))
            .clamp(HEDGE_MIN, HEDGE_MAX)
    }
}

/// What a batch's answer says of its provider: a batch answered is a success even if some
/// calls failed for their own reasons; a call failing at the provider's fault inside it is its
/// fault.
fn batch_outcome(
    result: &Result<Vec<Result<Box<RawValue>, ProviderError>>, ProviderError>,
) -> Outcome {
    match result {
        Ok(answers) => answers
            .iter()
            .filter_map(|a| a.as_ref().err())
            .map(Outcome::of_error)
            .find(|o| !matches!(o, Outcome::Neutral))
            .unwrap_or(Outcome::Success),
        Err(err) => Outcome::of_error(err),
    }
}

/// Bounds of the hedge delay: short enough that a hung provider costs a range seconds, not the
/// HTTP timeout; long enough that a busy but working provider is rarely doubled up on.
const HEDGE_MIN: Duration = Duration::from_millis(250);
const HEDGE_MAX: Duration = Duration::from_secs(2);
/// Multiples of a provider's p99 it may take before its attempt is hedged.
const HEDGE_FACTOR: u32 = 4;

impl ChainProvider {
    /// A provider that sends batches and accepts ranges of [`super::sync::MAX_RANGE`] blocks
    /// until it shows otherwise.
    pub fn new(
        index: ProviderIndex,
        id: String,
        http: HttpClient,
        ws_url: Option<Url>,
        priority: u32,
    ) -> ChainProvider {
        ChainProvider {
            index,
            id,
            http,
            ws_url,
            priority,
            batches: Arc::new(AtomicBool::new(true)),
            range_limit: Arc::new(AtomicU64::new(super::sync::MAX_RANGE)),
        }
    }

    async fn batch(
        &self,
        calls: &[Request],
    ) -> Result<Vec<Result<Box<RawValue>, ProviderError>>, ProviderError> {
        if self.batches.load(Ordering::Relaxed) {
            match self.http.batch(calls).await {
                Err(err) if refuses_batches(&err) && calls.len() > 1 => {
                    tracing::warn!(provider = %self.id, error = %err, "provider refuses JSON-RPC batches; sending calls one by one");
                    self.batches.store(false, Ordering::Relaxed);
                }
                answer => return answer,
            }
        }
        let mut answers = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(UNBATCHED_CONCURRENCY) {
            let mut pending = Vec::with_capacity(chunk.len());
            for request in chunk {
                pending.push(self.http.request(request));
            }
            answers.extend(futures_util::future::join_all(pending).await);
        }
        // A failure of the transport fails the whole, as it would have for a batch.
        match answers.iter().find_map(|a| a.as_ref().err()) {
            Some(err) if err.is_retryable() => Err(err.clone()),
            _ => Ok(answers),
        }
    }
}

/// A refusal of the batch as such (a JSON-RPC error for the whole batch, a 4xx status), rather
/// than of its calls: range refusals, rate limits and server faults are not.
fn refuses_batches(err: &ProviderError) -> bool {
    matches!(err, ProviderError::Rpc { .. } | ProviderError::Http(_)) && !err.is_retryable()
}
