//! The health monitor of one chain: persists every breaker transition, makes due open →
//! half-open changes promptly, refreshes the health gauges, and probes idle providers.
//!
//! Health is inferred from live traffic; a provider that has shown no head for half the stall
//! timeout (no live head, no `eth_blockNumber` answer: its socket is down, or it has none)
//! gets one cheap `eth_blockNumber`, through its breaker (health checks on an idle
//! chain would cost provider credits for nothing). That probe is also what half-opens and closes the breaker of a
//! provider nothing else asks.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::providers::ProviderSet;
use crate::breaker::{Clock, SystemClock};
use crate::domain::ProviderIndex;
use crate::health::{self, ChainHealth};
use crate::provider::Request;
use crate::store::Store;

#[derive(Clone)]
pub struct Monitor {
    pub providers: ProviderSet,
    pub store: Store,
}

impl Monitor {
    pub async fn run(self, shutdown: CancellationToken) {
        let health = self.providers.health().clone();
        let idle = health::idle_after(health.config());
        let mut ticks = tokio::time::interval(
            (idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One probe per provider at most; dropped (aborted) with the loop.
        let mut probes: JoinSet<ProviderIndex> = JoinSet::new();
        let mut probing = vec![false; health.len()];
        loop {
            // Biased: shutdown first (one last save follows), then saves, then the clock.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = health.dirty() => self.persist(&health).await,
                Some(done) = probes.join_next(), if !probes.is_empty() => {
                    if let Ok(index) = done
                        && let Some(slot) = probing.get_mut(usize::from(index))
                    {
                        *slot = false;
                    }
                }
                _ = ticks.tick() => {
                    health.tick();
                    // A save that failed is tried again here.
                    self.persist(&health).await;
                    for provider in self.providers.all() {
                        let i = usize::from(provider.index);
                        if probing[i] || !health.idle(i, idle) {
                            continue;
                        }
                        probing[i] = true;
                        let providers = self.providers.clone();
                        let index = provider.index;
                        probes.spawn(async move {
                            probe(&providers, index).await;
                            index
                        });
                    }
                }
            }
        }
        self.persist(&health).await;
    }

    /// Saves every breaker with a transition not yet saved, then lets it be shown. One that
    /// cannot be saved stays unshown and is tried again at the next tick.
    async fn persist(&self, health: &ChainHealth) {
        for unsaved in health.take_dirty() {
            let saved = self
                .store
                .save_breaker(
                    health.chain(),
                    &unsaved.provider,
                    &unsaved.snapshot,
                    SystemClock.wall_ms(),
                )
                .await;
            match saved {
                Ok(()) => health.saved(unsaved),
                Err(err) => {
                    tracing::warn!(chain = %health.chain(), provider = %unsaved.provider, error = %err, "cannot save the breaker state; trying again");
                    health.not_saved(unsaved);
                }
            }
        }
    }
}

/// One `eth_blockNumber` to `index` (its answer updates the provider's head); a refusal by its
/// breaker sends nothing.
async fn probe(providers: &ProviderSet, index: ProviderIndex) {
    let Ok(request) = Request::block_number() else {
        return;
    };
    if let Err(err) = providers.call_one(index, &request).await {
        tracing::debug!(chain = %providers.health().chain(), provider = %providers.id(index), error = %err, "idle probe failed");
    }
}
