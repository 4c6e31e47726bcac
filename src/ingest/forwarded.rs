//! What a chain's aggregator has already handed to the writer, per recent block: the block row
//! and a bitset of its log indexes.
//!
//! The range sync re-reads every block the live stream delivered, to prove the checkpoint. A
//! copy of an event the writer already has is worth nothing there, but the hot set may have
//! forgotten it (it holds `aggregation.max_cache_size` keys for `deduplication_window`, seconds
//! of a busy chain) and then it would cost a full parse and a database upsert. This record keeps
//! that answer for the last [`Forwarded::capacity`] blocks at a few bytes per block, so a range
//! the live stream already delivered costs only an identity read per event.
//!
//! It records only what was *sent* to the writer, by content identity (block hash and log
//! index): the writer commits everything sent to it, in order, before any checkpoint sent after
//! it, so skipping such a copy can never let a checkpoint cover an event that is not stored.

use std::num::NonZeroUsize;

use alloy_primitives::B256;
use lru::LruCache;

/// Log indexes at or past this are not recorded (their copies are simply not skipped): it
/// bounds one block's bitset at 512 bytes whatever a provider sends.
pub const MAX_TRACKED_LOG_INDEX: u64 = 4096;

/// The blocks of one chain whose events were sent to the writer, most recent first.
pub struct Forwarded {
    blocks: LruCache<B256, Sent>,
}

#[derive(Default)]
struct Sent {
    header: bool,
    /// Bit `i` of word `i / 64`: log index `i` was sent. Grows to the highest index sent.
    logs: Vec<u64>,
}

impl Forwarded {
    /// Remembers at most `blocks` blocks; the least recently touched is forgotten first.
    pub fn new(blocks: NonZeroUsize) -> Forwarded {
        Forwarded {
            blocks: LruCache::new(blocks),
        }
    }

    pub fn capacity(&self) -> usize {
        self.blocks.cap().get()
    }

    /// The block row of `block_hash` was sent.
    pub fn header_sent(&mut self, block_hash: B256) {
        self.blocks
            .get_or_insert_mut(block_hash, Sent::default)
            .header = true;
    }

    /// Log `log_index` of `block_hash` was sent.
    pub fn log_sent(&mut self, block_hash: B256, log_index: u64) {
        if log_index >= MAX_TRACKED_LOG_INDEX {
            return;
        }
        let (word, bit) = ((log_index / 64) as usize, log_index % 64);
        let logs = &mut self
            .blocks
            .get_or_insert_mut(block_hash, Sent::default)
            .logs;
        if logs.len() <= word {
            logs.resize(word + 1, 0);
        }
        logs[word] |= 1 << bit;
    }

    /// Whether the block row of `block_hash` was sent (and is still remembered).
    pub fn has_header(&mut self, block_hash: &B256) -> bool {
        self.blocks.get(block_hash).is_some_and(|s| s.header)
    }

    /// Whether log `log_index` of `block_hash` was sent (and is still remembered).
    pub fn has_log(&mut self, block_hash: &B256, log_index: u64) -> bool {
        let (word, bit) = ((log_index / 64) as usize, log_index % 64);
        self.blocks
            .get(block_hash)
            .and_then(|s| s.logs.get(word))
            .is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(blocks: usize) -> Forwarded {
        Forwarded::new(NonZeroUsize::new(blocks).unwrap())
    }

    #[test]
    fn remembers_headers_and_logs_by_block_hash() {
        let mut sent = record(4);
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        assert!(!sent.has_header(&a));
        sent.header_sent(a);
        for i in [0, 1, 63, 64, 200] {
            sent.log_sent(a, i);
        }
        assert!(sent.has_header(&a));
        for i in [0, 1, 63, 64, 200] {
            assert!(sent.has_log(&a, i), "log {i}");
        }
        for i in [2, 62, 65, 199, 201, 100_000] {
            assert!(!sent.has_log(&a, i), "log {i}");
        }
        // Logs without the header, and another block's hash, are their own records.
        sent.log_sent(b, 3);
        assert!(!sent.has_header(&b));
        assert!(sent.has_log(&b, 3));
        assert!(!sent.has_log(&b, 0));
    }

    #[test]
    fn memory_is_bounded_by_blocks_and_by_log_index() {
        let mut sent = record(3);
        for n in 0..10u8 {
            sent.header_sent(B256::repeat_byte(n));
            assert!(sent.len() <= 3);
        }
        // The least recently used are forgotten: their copies are simply not skipped.
        assert!(!sent.has_header(&B256::repeat_byte(0)));
        assert!(sent.has_header(&B256::repeat_byte(9)));
        let big = B256::repeat_byte(0xff);
        sent.log_sent(big, MAX_TRACKED_LOG_INDEX);
        sent.log_sent(big, u64::MAX);
        assert!(!sent.has_log(&big, MAX_TRACKED_LOG_INDEX));
        assert!(!sent.has_log(&big, u64::MAX));
        sent.log_sent(big, MAX_TRACKED_LOG_INDEX - 1);
        assert!(sent.has_log(&big, MAX_TRACKED_LOG_INDEX - 1));
        assert_eq!(sent.capacity(), 3);
    }
}
