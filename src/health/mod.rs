//! Provider health per chain: each provider's breaker and traffic statistics in one place, the
//! order HTTP work tries providers in, and what `/v1/providers` and `/ready` show.
//!
//! Layout:
//! - `mod.rs` — [`ChainHealth`], the cheap-to-clone handle every part of a chain shares
//!   (provider set, listeners, the monitor, the API).
//! - `stats.rs` — [`Stats`]: head, last message, latency EWMA and quantiles, error rate.
//!
//! No I/O here: the caller sends the requests and reports their outcomes; breaker transitions
//! are logged and counted here and marked for persistence, which the chain's monitor task
//! (`ingest::monitor`) writes to the store. The mark is one flag per provider, so memory stays
//! bounded whatever the rate of transitions: two transitions between saves save the later
//! state only (what a restart needs), while the log and the counter see both.
//!
//! A provider is *healthy* when its breaker is not open, it is not failing before it ever
//! answered (a provider down at start: its breaker stays closed, see `breaker::Breaker`, but
//! it is no use yet), it is at most `max_lag_blocks` behind the chain's best head (a head
//! polled over HTTP: behind the best head when it was asked), and its stream (if up) is not
//! stalled.

mod pause;
mod persist;
mod report;
mod stats;
mod verdict;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use persist::Unsaved;
pub use stats::Stats;
pub use verdict::Unhealthy;

use crate::breaker::{Breaker, BreakerState, Clock, Outcome, Permit, Snapshot, Transition};
use crate::config::HealthConfig;
use crate::domain::ChainName;
use crate::telemetry::metrics as m;

/// One provider as health tracking knows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub priority: u32,
    /// Its breaker, new or restored from the store.
    pub breaker: Breaker,
}

/// The health of one chain's providers; clones share it. Providers are addressed by their
/// position in the list given to [`ChainHealth::new`] (its [`crate::domain::ProviderIndex`]).
#[derive(Clone)]
pub struct ChainHealth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChainHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHealth")
            .field("chain", &self.inner.chain)
            .field("providers", &self.inner.slots.len())
            .finish()
    }
}

struct Inner {
    chain: ChainName,
    config: HealthConfig,
    clock: Arc<dyn Clock>,
    slots: Vec<Slot>,
    /// The highest head any provider has shown.
    best_head: AtomicU64,
    /// Woken when a breaker has a transition to persist.
    persist: Notify,
}

struct Slot {
    id: String,
    priority: u32,
    // A std mutex: held for a few arithmetic operations, never across an await.
    state: Mutex<SlotState>,
    /// A transition not yet persisted.
    dirty: AtomicBool,
}

struct SlotState {
    breaker: Breaker,
    stats: Stats,
    /// The verdict the last [`ChainHealth::tick`] published.
    verdict: verdict::LastVerdict,
    /// The breaker's latest saved transitions, oldest first (at most [`BREAKER_HISTORY`]).
    transitions: std::collections::VecDeque<Transition>,
    /// Transitions made but not yet saved (`persist`): not shown until they are.
    pending: Vec<Transition>,
    /// The breaker as last saved (or restored): what reports show while `pending` waits.
    announced: Snapshot,
    /// Paused by an operator: no permit is granted.
    paused: bool,
}

/// How long a paused provider's callers wait before asking again.
const PAUSED_RETRY: Duration = Duration::from_secs(1);

/// Breaker transitions remembered per provider for `/v1/providers` (the counter has them all).
pub const BREAKER_HISTORY: usize = 16;

/// One provider's health as `/v1/providers` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderReport {
    pub id: String,
    pub priority: u32,
    pub healthy: bool,
    /// Why not, when not healthy.
    pub unhealthy: Option<Unhealthy>,
    /// The breaker's latest transitions, oldest first.
    pub transitions: Vec<Transition>,
    pub stalled: bool,
    /// Whether its stream's socket is up.
    pub connected: bool,
    pub head: Option<u64>,
    pub lag_blocks: u64,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at_ms: Option<i64>,
    pub latency_ewma_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub error_rate: f64,
    pub requests: u64,
    pub errors: u64,
}

impl ChainHealth {
    pub fn new(
        chain: ChainName,
        config: HealthConfig,
        clock: Arc<dyn Clock>,
        members: Vec<Member>,
    ) -> ChainHealth {
        let slots: Vec<Slot> = members
            .into_iter()
            .map(|member| Slot {
                id: member.id,
                priority: member.priority,
                state: Mutex::new(SlotState {
                    announced: member.breaker.snapshot(),
                    pending: Vec::new(),
                    breaker: member.breaker,
                    stats: Stats::default(),
                    verdict: verdict::LastVerdict::default(),
                    transitions: std::collections::VecDeque::new(),
                    paused: false,
                }),
                dirty: AtomicBool::new(false),
            })
            .collect();
        let health = ChainHealth {
            inner: Arc::new(Inner {
                chain,
                config,
                clock,
                slots,
                best_head: AtomicU64::new(0),
                persist: Notify::new(),
            }),
        };
        for i in 0..health.inner.slots.len() {
            health.publish_state(i);
        }
        health
    }

    pub fn chain(&self) -> &ChainName {
        &self.inner.chain
    }

    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    pub fn len(&self) -> usize {
        self.inner.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.slots.is_empty()
    }

    pub fn id(&self, index: usize) -> &str {
        self.inner.slots.get(index).map_or("unknown", |s| &s.id)
    }

    /// The highest head `index` is known to have reached (streamed or polled).
    pub fn head(&self, index: usize) -> Option<u64> {
        self.inner
            .slots
            .get(index)
            .and_then(|slot| lock(slot).stats.head)
    }

    pub fn best_head(&self) -> u64 {
        self.inner.best_head.load(Ordering::Relaxed)
    }

    /// Asks `index`'s breaker for a permit: `Err(retry_in)` means skip this provider.
    pub fn acquire(&self, index: usize) -> Result<Permit, Duration> {
        let Some(slot) = self.inner.slots.get(index) else {
            return Err(Duration::MAX);
        };
        let (permit, transitioned) = {
            let mut state = lock(slot);
            if state.paused {
                return Err(PAUSED_RETRY);
            }
            let (permit, transition) = state.breaker.try_acquire(&*self.inner.clock);
            (permit, state.keep(transition))
        };
        if transitioned {
            self.to_save(index);
        }
        match permit {
            Permit::Rejected { retry_in } => Err(retry_in),
            granted => Ok(granted),
        }
    }

    /// The outcome of a request sent under `permit`; `latency` is how long it took, when that
    /// measures the provider (not for a subscription's first notification, which waits for a
    /// block).
    pub fn record(
        &self,
        index: usize,
        permit: Permit,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let Some(slot) = self.inner.slots.get(index) else {
            return;
        };
        let transitioned = {
            let mut state = lock(slot);
            match outcome {
                Outcome::Success => state.stats.request(latency, true),
                Outcome::Failure => state.stats.request(None, false),
                // Neither says anything about the provider's speed or health.
                Outcome::RateLimited { .. } | Outcome::Neutral => {}
            }
            let transition = state.breaker.record(permit, outcome, &*self.inner.clock);
            state.keep(transition)
        };
        if let (Outcome::Success, Some(latency)) = (outcome, latency) {
            metrics::histogram!(m::PROVIDER_LATENCY, "chain" => self.inner.chain.to_string(), "provider" => slot.id.clone())
                .record(latency.as_secs_f64());
        }
        if transitioned {
            self.to_save(index);
        }
    }

    /// A fault seen outside any request (a socket dropped, a stream stalled, a garbage frame):
    /// counted as a failed request if the breaker grants one now.
    pub fn fault(&self, index: usize) {
        if let Ok(permit) = self.acquire(index) {
            self.record(index, permit, Outcome::Failure, None);
        }
    }

    /// A head seen from `index`: from its subscription (`streamed`) or an HTTP answer.
    pub fn observe_head(&self, index: usize, number: u64, streamed: bool) {
        self.observe(index, number, |stats, now| {
            stats.head(number, now, streamed)
        });
    }

    /// A head an HTTP answer of `index` showed, asked for when the chain's best head was
    /// `best_then` ([`ChainHealth::best_head`] read before the request): its lag is measured
    /// against that ([`Stats::polled`]).
    pub fn observe_polled_head(&self, index: usize, number: u64, best_then: u64) {
        self.observe(index, number, |stats, now| {
            stats.polled(number, now, best_then)
        });
    }

    /// Records head `number` of `index` in its stats (`record`) and in the chain's best head.
    fn observe(&self, index: usize, number: u64, record: impl FnOnce(&mut Stats, Instant)) {
        let Some(slot) = self.inner.slots.get(index) else {
            return;
        };
        record(&mut lock(slot).stats, self.inner.clock.now());
        self.inner.best_head.fetch_max(number, Ordering::Relaxed);
    }

    /// Anything else the subscription of `index` delivered.
    pub fn observe_message(&self, index: usize) {
        if let Some(slot) = self.inner.slots.get(index) {
            lock(slot).stats.message(self.inner.clock.now());
        }
    }

    /// The socket of `index` came up or went down.
    pub fn connection(&self, index: usize, up: bool) {
        if let Some(slot) = self.inner.slots.get(index) {
            lock(slot).stats.connection(up, self.inner.clock.now());
            metrics::gauge!(m::PROVIDER_CONNECTED, "chain" => self.inner.chain.to_string(), "provider" => slot.id.clone())
                .set(f64::from(u8::from(up)));
        }
    }

    /// Whether the stream of `index` is open but silent while the chain moved on.
    pub fn stalled(&self, index: usize) -> bool {
        let best = self.best_head();
        let now = self.inner.clock.now();
        self.inner.slots.get(index).is_some_and(|slot| {
            lock(slot)
                .stats
                .stalled(best, self.inner.config.stall_timeout, now)
        })
    }

    /// Whether the stream of `index` is more than `max_lag_blocks` behind `best`: the best head
    /// as it was a while ago (the listener's watchdog passes the one of its previous look). A
    /// stream that has not reached by now where the best one was then is lagging; one that is
    /// merely a burst behind another at this instant is not (providers' bursts are written and
    /// read at different moments, and on a fast chain a burst spans several blocks).
    pub fn stream_lagging(&self, index: usize, best: u64) -> bool {
        self.inner.slots.get(index).is_some_and(|slot| {
            lock(slot)
                .stats
                .stream_head
                .is_some_and(|(n, _)| best.saturating_sub(n) > self.inner.config.max_lag_blocks)
        })
    }

    /// The p99 of `index`'s recent successful request latencies.
    pub fn latency_p99(&self, index: usize) -> Option<Duration> {
        let slot = self.inner.slots.get(index)?;
        let ms = lock(slot).stats.latency_quantile_ms(0.99)?;
        Duration::try_from_secs_f64(ms / 1000.0).ok()
    }

    /// Whether `index` has shown no head for `idle` (no live head, no `eth_blockNumber`
    /// answer): a probe is due. Providers whose stream delivers heads are never probed.
    pub fn idle(&self, index: usize, idle: Duration) -> bool {
        let now = self.inner.clock.now();
        self.inner.slots.get(index).is_some_and(|slot| {
            lock(slot)
                .stats
                .head_at
                .is_none_or(|at| now.saturating_duration_since(at) >= idle)
        })
    }

    /// Whether `index` has answered since start (its breaker is past its start-up phase).
    pub fn answered(&self, index: usize) -> bool {
        self.inner
            .slots
            .get(index)
            .is_some_and(|slot| lock(slot).breaker.answered())
    }

    /// Whether any provider has answered since start.
    pub fn any_answered(&self) -> bool {
        (0..self.len()).any(|i| self.answered(i))
    }

    pub fn is_healthy(&self, index: usize) -> bool {
        let (best, now) = (self.best_head(), self.inner.clock.now());
        self.inner
            .slots
            .get(index)
            .is_some_and(|slot| self.healthy(&lock(slot), best, now))
    }

    /// The highest head a healthy provider's open, unstalled stream delivered last: what the
    /// chain's `eth_blockNumber` says now, without asking a provider. `None` when none streams.
    pub fn streamed_head(&self) -> Option<u64> {
        let (best, now) = (self.best_head(), self.inner.clock.now());
        self.inner
            .slots
            .iter()
            .filter_map(|slot| {
                let state = lock(slot);
                let live = state.stats.connected_since.is_some() && self.healthy(&state, best, now);
                state.stats.stream_head.filter(|_| live).map(|(n, _)| n)
            })
            .max()
    }

    /// Whether a provider in `state` is healthy: its breaker lets requests through, its
    /// stream is not stalled and its head is within `max_lag_blocks` of `best`.
    fn healthy(&self, state: &SlotState, best: u64, now: Instant) -> bool {
        let breaker = state.breaker.state(&*self.inner.clock);
        self.verdict(state, breaker, best, now).is_none()
    }

    /// Why a provider in `state` is not healthy (`None`: it is), its breaker taken as
    /// `breaker` (live for routing, as shown for reports).
    fn verdict(
        &self,
        state: &SlotState,
        breaker: BreakerState,
        best: u64,
        now: Instant,
    ) -> Option<Unhealthy> {
        verdict::judge(
            state.paused,
            breaker,
            state.breaker.unreachable(),
            &state.stats,
            &self.inner.config,
            best,
            now,
        )
    }

    /// Whether at least one provider is healthy (`/ready`).
    pub fn any_healthy(&self) -> bool {
        (0..self.len()).any(|i| self.is_healthy(i))
    }

    /// The order HTTP work tries providers in: healthy ones first, then by priority, then by
    /// latency EWMA (unmeasured last within a priority), then by position.
    pub fn ranked(&self) -> Vec<usize> {
        self.ranked_by(|_| None)
    }

    /// [`ChainHealth::ranked`] with `latency_ms(i)`, when it has one, standing for provider
    /// `i`'s overall latency (the gateway ranks by the latency of the method at hand).
    pub fn ranked_by(&self, latency_ms: impl Fn(usize) -> Option<f64>) -> Vec<usize> {
        let best = self.best_head();
        let now = self.inner.clock.now();
        let mut keyed: Vec<(bool, u32, u64, usize)> = (0..self.len())
            .filter_map(|i| {
                let slot = self.inner.slots.get(i)?;
                let state = lock(slot);
                let healthy = self.healthy(&state, best, now);
                let latency = latency_ms(i)
                    .or_else(|| state.stats.latency_ewma_ms())
                    .map_or(u64::MAX, |ms| (ms * 1000.0) as u64);
                Some((!healthy, slot.priority, latency, i))
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, _, _, i)| i).collect()
    }

    /// How many of [`ChainHealth::ranked`]'s first entries are healthy.
    pub fn healthy_count(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_healthy(i)).count()
    }
}

fn lock(slot: &Slot) -> MutexGuard<'_, SlotState> {
    // Every update leaves the state consistent (no invariant spans two statements that can
    // panic), so a poisoned lock's value is still good.
    slot.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a provider may show no head before the monitor sends it an `eth_blockNumber`.
pub fn idle_after(config: &HealthConfig) -> Duration {
    (config.stall_timeout / 2).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests;
