//! What the health shows outside: each provider's report (`/v1/providers`, `/ready`), and the
//! gauges and transitions the chain's monitor refreshes on every tick.

use super::{ChainHealth, ProviderReport, Unhealthy, lock, persist};
use crate::telemetry::metrics as m;

impl ChainHealth {
    /// Makes due open → half-open changes, refreshes the health gauges, and logs and counts
    /// each provider turning unhealthy or healthy again (with why).
    pub fn tick(&self) {
        for (i, slot) in self.inner.slots.iter().enumerate() {
            let transitioned = {
                let mut state = lock(slot);
                let transition = state.breaker.tick(&*self.inner.clock);
                state.keep(transition)
            };
            if transitioned {
                self.to_save(i);
            }
            let Some(report) = self.report_one(i) else {
                continue;
            };
            let labels = [
                ("chain", self.inner.chain.to_string()),
                ("provider", slot.id.clone()),
            ];
            metrics::gauge!(m::PROVIDER_HEALTHY, &labels).set(f64::from(u8::from(report.healthy)));
            metrics::gauge!(m::PROVIDER_LAG, &labels).set(report.lag_blocks as f64);
            metrics::gauge!(m::BREAKER_CONSECUTIVE_FAILURES, &labels)
                .set(f64::from(report.consecutive_failures));
            let before = lock(slot).verdict.update(report.unhealthy);
            if let Some(before) = before {
                self.health_changed(&slot.id, before, report.unhealthy);
            }
        }
    }

    fn health_changed(&self, provider: &str, before: Option<Unhealthy>, now: Option<Unhealthy>) {
        let chain = self.inner.chain.to_string();
        let state = |v: Option<Unhealthy>| if v.is_none() { "healthy" } else { "unhealthy" };
        let (old, new) = (state(before), state(now));
        match now {
            Some(why) => {
                tracing::warn!(chain = %chain, provider, old_state = old, new_state = new, reason = why.as_str(), "provider unhealthy: {why}")
            }
            None => {
                let was = before.map_or("", Unhealthy::as_str);
                tracing::info!(chain = %chain, provider, old_state = old, new_state = new, was, "provider healthy again")
            }
        }
        let reason = now.or(before).map_or("none", Unhealthy::as_str);
        metrics::counter!(m::PROVIDER_HEALTH_TRANSITIONS, "chain" => chain, "provider" => provider.to_owned(), "to" => new, "reason" => reason)
            .increment(1);
    }

    /// Every provider's health, in configuration order.
    pub fn report(&self) -> Vec<ProviderReport> {
        (0..self.len()).filter_map(|i| self.report_one(i)).collect()
    }

    pub(super) fn report_one(&self, index: usize) -> Option<ProviderReport> {
        let slot = self.inner.slots.get(index)?;
        let best = self.best_head();
        let now = self.inner.clock.now();
        let config = &self.inner.config;
        let state = lock(slot);
        // A transition not yet saved is not shown (`persist`).
        let (breaker, snapshot) = persist::shown(&state, &*self.inner.clock);
        let stalled = state.stats.stalled(best, config.stall_timeout, now);
        let unhealthy = self.verdict(&state, breaker, best, now);
        Some(ProviderReport {
            id: slot.id.clone(),
            priority: slot.priority,
            healthy: unhealthy.is_none(),
            unhealthy,
            transitions: state.transitions.iter().copied().collect(),
            stalled,
            connected: state.stats.connected_since.is_some(),
            head: state.stats.head,
            lag_blocks: state.stats.lag(best),
            breaker,
            consecutive_failures: snapshot.consecutive_failures,
            opened_at_ms: snapshot.opened_at_wall_ms,
            latency_ewma_ms: state.stats.latency_ewma_ms(),
            latency_p50_ms: state.stats.latency_quantile_ms(0.5),
            latency_p99_ms: state.stats.latency_quantile_ms(0.99),
            error_rate: state.stats.error_rate(),
            requests: state.stats.requests,
            errors: state.stats.errors,
        })
    }
}
