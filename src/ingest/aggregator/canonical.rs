//! What the range sync proved canonical at recent checkpointed heights, and what a live
//! delivery that disagrees with it means: an orphan to drop, and a hint that the sync should
//! check the chain there.

use alloy_primitives::B256;

use super::Aggregator;
use crate::domain::ProviderIndex;
use crate::provider::decode::{Head, LogKey};

/// Heights whose canonical hash (as the range sync proved it) is remembered, so that a live
/// copy of an orphan at a height already checkpointed is dropped instead of stored (32 bytes
/// per height).
const CANONICAL_HEIGHTS: usize = 4096;

impl Aggregator {
    /// Remembers the canonical hashes of a range starting at `first`, and its checkpoint.
    pub(super) fn remember_canonical(&mut self, first: u64, hashes: &[B256], checkpoint: u64) {
        // A range may start below the previous checkpoint (a re-read after a reorg): what was
        // canonical from its first height up no longer is.
        drop(self.canonical.split_off(&first));
        for (n, hash) in (first..).zip(hashes) {
            self.canonical.insert(n, *hash);
        }
        while self.canonical.len() > CANONICAL_HEIGHTS {
            self.canonical.pop_first();
        }
        self.checkpoint = Some(checkpoint);
    }

    /// Whether a live head is an orphan to drop; hints a reorg when it, or its parent link,
    /// disagrees with a checkpointed height.
    pub(super) fn is_orphan_head(&self, head: &Head) -> bool {
        if self.is_orphan(head.block.number, head.block.hash) {
            // Stale (a provider behind a reorg), or a reorg the sync has not seen yet: it
            // re-reads those heights once it has checked, so nothing is lost.
            self.meters.orphans.increment(1);
            self.hint_reorg(head.block.number);
            return true;
        }
        if let Some(below) = head.block.number.checked_sub(1)
            && self.is_orphan(below, head.block.parent_hash)
        {
            // The first block past the checkpoint, on another branch below it.
            self.hint_reorg(below);
        }
        false
    }

    /// A provider retracted a log (`removed: true`).
    pub(super) fn on_retraction(&self, provider: ProviderIndex, key: &LogKey) {
        // A provider's retraction is a hint, not the authority (Anvil never sends one): the
        // canonical ranges remove orphans. Above the checkpoint the next range does; at or
        // below it the range sync checks the chain there. The copy is not stored.
        tracing::debug!(chain = %self.chain, provider = %self.providers.id(provider), block = key.block_number, "a provider retracted a log");
        if self.checkpoint.is_some_and(|cp| key.block_number <= cp)
            && self.canonical.get(&key.block_number) == Some(&key.block_hash)
        {
            self.hint_reorg(key.block_number);
        }
    }

    /// A live event at a checkpointed height whose block is not the canonical one there.
    pub(super) fn is_orphan(&self, number: u64, hash: B256) -> bool {
        self.checkpoint.is_some_and(|cp| number <= cp)
            && self.canonical.get(&number).is_some_and(|h| *h != hash)
    }

    /// Tells the range sync to check the chain at `number`. A full queue drops the hint: one
    /// already waiting makes the sync check the chain anyway.
    fn hint_reorg(&self, number: u64) {
        if let Some(hint) = &self.reorg_hint {
            let _ = hint.try_send(number);
        }
    }
}
