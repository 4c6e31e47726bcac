//! Each provider's latency per method, as the gateway measures it: a provider quick at
//! `eth_blockNumber` may be slow at `eth_getLogs`, and the ranking asks about the method at
//! hand ([`crate::health::ChainHealth::ranked_by`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Weight of the newest sample in the moving average.
const ALPHA: f64 = 0.2;

/// Moving averages in ms by provider and method label (a bounded set: `methods::label`).
#[derive(Default)]
pub struct MethodLatency {
    table: Mutex<HashMap<(usize, &'static str), f64>>,
}

impl MethodLatency {
    pub fn record(&self, provider: usize, method: &'static str, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1e3;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .entry((provider, method))
            .and_modify(|avg| *avg += ALPHA * (ms - *avg))
            .or_insert(ms);
    }

    pub fn get(&self, provider: usize, method: &'static str) -> Option<f64> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.get(&(provider, method)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_per_provider_and_method() {
        let latency = MethodLatency::default();
        latency.record(0, "eth_getLogs", Duration::from_millis(100));
        latency.record(0, "eth_getLogs", Duration::from_millis(200));
        latency.record(0, "eth_blockNumber", Duration::from_millis(2));
        assert_eq!(latency.get(0, "eth_getLogs"), Some(120.0));
        assert_eq!(latency.get(0, "eth_blockNumber"), Some(2.0));
        assert_eq!(latency.get(1, "eth_getLogs"), None);
    }
}
