//! Logs joined to their block: a log row carries its block's parent hash and timestamp, so a
//! log that arrives before its header waits (parked, bounded) until the header comes.

use std::time::Instant;

use alloy_primitives::B256;
use serde_json::value::RawValue;

use super::outbox::Closed;
use super::{Aggregator, now_ms};
use crate::domain::{Event, EventKey, ProviderIndex, provider_bit};
use crate::provider::decode::{self, Head, LogKey};
use crate::store::NewEvent;
use crate::telemetry::metrics as m;

/// Logs waiting for their block's header; past this the oldest are dropped (the range sync
/// fetches them again before the checkpoint can pass their block, so nothing is lost). Each
/// holds its raw JSON (under a kilobyte on a typical chain).
const MAX_PARKED_LOGS: usize = 16_384;

/// A first copy of a log, not yet parsed, waiting for its block's header.
pub(super) struct ParkedLog {
    provider: ProviderIndex,
    key: LogKey,
    raw: Box<RawValue>,
    received_at_ms: i64,
}

impl Aggregator {
    /// A block header: the first copy goes to the writer; either way, logs waiting for it
    /// are released.
    pub(super) async fn on_head(
        &mut self,
        provider: ProviderIndex,
        head: Head,
        at: Instant,
    ) -> Result<(), Closed> {
        let key = EventKey {
            block_hash: head.block.hash,
            log_index: None,
        };
        let number = head.block.number;
        let (block, timestamp) = (head.block, head.timestamp);
        // Cache the header and release logs waiting for it whatever the sighting: a header
        // evicted from the cache while its key stayed hot must still unblock its logs.
        self.headers.put(head.block.hash, head);
        if !self.is_first(key, number, provider, at).await? {
            return self.release(key.block_hash).await;
        }
        // Only a live head is news of the chain's head: the range sync takes a moving best head
        // for live heads arriving, and backfilled headers moving it made the sync wait for the
        // chain to "settle" at each one instead of asking for the rest of the history.
        if self.live {
            self.best_head.send_if_modified(|best| {
                let higher = number > *best;
                if higher {
                    *best = number;
                }
                higher
            });
        }
        self.meters.head.set(*self.best_head.borrow() as f64);
        let event = Event {
            chain: self.chain.clone(),
            block,
            block_timestamp: timestamp,
            log: None,
        };
        let new = self.new_event(event, provider);
        self.push(new).await?;
        self.forwarded.header_sent(key.block_hash);
        self.release(key.block_hash).await
    }

    /// Stores the logs that arrived before their block's header.
    pub(super) async fn release(&mut self, block_hash: B256) -> Result<(), Closed> {
        if let Some(waiting) = self.parked.remove(&block_hash) {
            self.parked_count -= waiting.len();
            for log in waiting {
                self.store_log(log).await?;
            }
        }
        Ok(())
    }

    /// A log: the first copy is stored once its block's header is known, parked until then.
    pub(super) async fn on_log(
        &mut self,
        provider: ProviderIndex,
        key: LogKey,
        raw: Box<RawValue>,
        at: Instant,
    ) -> Result<(), Closed> {
        if key.removed {
            self.on_retraction(provider, &key);
            return Ok(());
        }
        let event_key = EventKey {
            block_hash: key.block_hash,
            log_index: Some(key.log_index),
        };
        if !self
            .is_first(event_key, key.block_number, provider, at)
            .await?
        {
            return Ok(());
        }
        let parked = ParkedLog {
            provider,
            key,
            raw,
            received_at_ms: now_ms(),
        };
        if self.headers.contains(&key.block_hash) {
            self.store_log(parked).await
        } else {
            self.park(parked);
            Ok(())
        }
    }

    /// Parses the first copy of a log in full and sends it on with its block's fields.
    async fn store_log(&mut self, parked: ParkedLog) -> Result<(), Closed> {
        let event_key = EventKey {
            block_hash: parked.key.block_hash,
            log_index: Some(parked.key.log_index),
        };
        let record = match decode::log(&parked.raw) {
            Ok(record) => record,
            Err(err) => {
                // Forget the key so a well-formed copy from another provider is accepted.
                self.hot.forget(&event_key);
                metrics::counter!(m::PROVIDER_MALFORMED, "chain" => self.chain.to_string(), "provider" => self.providers.id(parked.provider).to_owned()).increment(1);
                tracing::warn!(chain = %self.chain, provider = %self.providers.id(parked.provider), error = %err, "dropping a malformed log");
                return Ok(());
            }
        };
        let Some(head) = self.headers.get(&record.block_hash) else {
            self.park(parked);
            return Ok(());
        };
        let event = Event {
            chain: self.chain.clone(),
            block: head.block,
            block_timestamp: head.timestamp,
            log: Some(record.log),
        };
        let mut new = self.new_event(event, parked.provider);
        new.received_at_ms = parked.received_at_ms;
        self.push(new).await?;
        self.forwarded
            .log_sent(event_key.block_hash, parked.key.log_index);
        Ok(())
    }

    fn park(&mut self, log: ParkedLog) {
        if self.parked_count >= MAX_PARKED_LOGS {
            // Drop a whole block's worth: its logs come back with the range sync. Forget their
            // keys so those copies are not mistaken for duplicates.
            if let Some(block) = self.parked.keys().next().copied()
                && let Some(dropped) = self.parked.remove(&block)
            {
                self.parked_count -= dropped.len();
                for d in dropped {
                    self.hot.forget(&EventKey {
                        block_hash: d.key.block_hash,
                        log_index: Some(d.key.log_index),
                    });
                }
                tracing::warn!(chain = %self.chain, "too many logs waiting for their block; dropped some to refetch");
            }
        }
        self.parked_count += 1;
        self.parked.entry(log.key.block_hash).or_default().push(log);
    }

    fn new_event(&self, event: Event, provider: ProviderIndex) -> NewEvent {
        NewEvent {
            event,
            provider: self.providers.id(provider).to_owned(),
            received_at_ms: now_ms(),
            providers_mask: provider_bit(provider),
        }
    }
}
