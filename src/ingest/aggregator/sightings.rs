//! Whether a delivery is an event's first: the hot set's answer, the race bookkeeping (who
//! delivered first, how late the others were) and the late copies reported to the writer.

use std::time::Instant;

use super::Aggregator;
use super::outbox::{Closed, OUTBOX};
use crate::domain::{EventKey, ProviderIndex, provider_bit};
use crate::ingest::dedupe::Sighting;
use crate::store::Redelivery;

impl Aggregator {
    /// Whether this delivery is the event's first; a later copy is reported to the writer (to
    /// count the delivery) unless this provider had delivered it already.
    pub(super) async fn is_first(
        &mut self,
        key: EventKey,
        block_number: u64,
        provider: ProviderIndex,
        at: Instant,
    ) -> Result<bool, Closed> {
        let count = match self.observe(key, provider, at) {
            Sighting::Again { repeat, .. } => !repeat,
            // Out of the hot set, but sent already: a copy from a provider far behind the first.
            // Who delivered it before is forgotten; the writer's upsert would count it the same.
            Sighting::First if self.was_sent(&key) => true,
            Sighting::First => return Ok(true),
        };
        if count {
            self.copies.push(Redelivery {
                chain: self.chain.clone(),
                key,
                block_number,
                providers_mask: provider_bit(provider),
            });
            if self.copies.len() >= OUTBOX {
                self.flush().await?;
            }
        }
        Ok(false)
    }

    fn was_sent(&mut self, key: &EventKey) -> bool {
        match key.log_index {
            None => self.forwarded.has_header(&key.block_hash),
            Some(i) => self.forwarded.has_log(&key.block_hash, i),
        }
    }

    fn observe(&mut self, key: EventKey, provider: ProviderIndex, at: Instant) -> Sighting {
        self.retired.clear();
        let sighting = self
            .hot
            .observe(key, provider, at, self.live, &mut self.retired);
        match sighting {
            Sighting::First => {
                self.meters.misses.increment(1);
                if self.live {
                    self.race.first(provider);
                }
            }
            Sighting::Again {
                late_by,
                raced,
                repeat,
                ..
            } => {
                self.meters.hits.increment(1);
                self.meters.deduplicated.increment(1);
                if raced && !repeat {
                    self.race.late(provider, late_by);
                }
            }
        }
        if !self.retired.is_empty() {
            self.meters.evictions.increment(self.retired.len() as u64);
            for retired in self.retired.iter().filter(|r| r.raced) {
                self.race.retired(retired.delivered_mask);
            }
        }
        sighting
    }
}
