//! The dedupe hot set: a bounded LRU of recently seen event keys, O(1) per message.
//!
//! It is the fast path in front of the database's unique key (the backstop): a copy of an
//! event that is still hot is dropped here without a full parse or a database write. It also
//! keeps the race record of each key — who delivered first and which providers delivered at
//! all — so lateness and misses can be counted per provider.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::domain::{EventKey, ProviderIndex, provider_bit};

/// What the hot set says about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// Not seen within the window: the caller stores it (the unique key catches a repeat).
    First,
    /// Seen already: drop it, crediting the provider as late by `late_by`.
    Again {
        first_provider: ProviderIndex,
        late_by: Duration,
        /// Both the first sighting and this one were live deliveries (a race to count).
        raced: bool,
        /// This provider had delivered the key before (a redelivery, e.g. after a reconnect).
        repeat: bool,
    },
}

/// A key leaving the hot set, with the providers that never delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub key: EventKey,
    pub delivered_mask: u64,
    /// Its first sighting was a live delivery: the providers missing from the mask missed it.
    pub raced: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    first_seen: Instant,
    first_provider: ProviderIndex,
    delivered_mask: u64,
    live: bool,
}

/// Bounded by `capacity` keys; a key older than `window` counts as unseen.
pub struct HotSet {
    entries: LruCache<EventKey, Entry>,
    window: Duration,
    evictions: u64,
}

impl HotSet {
    pub fn new(capacity: NonZeroUsize, window: Duration) -> HotSet {
        HotSet {
            entries: LruCache::new(capacity),
            window,
            evictions: 0,
        }
    }

    /// Records a delivery of `key` by `provider` at `now` (`live`: from a subscription rather
    /// than a re-read). A key evicted to make room is returned in `retired` so its misses can
    /// be counted.
    pub fn observe(
        &mut self,
        key: EventKey,
        provider: ProviderIndex,
        now: Instant,
        live: bool,
        retired: &mut Vec<Retired>,
    ) -> Sighting {
        let bit = provider_bit(provider);
        if let Some(entry) = self.entries.get_mut(&key) {
            let age = now.saturating_duration_since(entry.first_seen);
            if age <= self.window {
                let repeat = entry.delivered_mask & bit != 0;
                entry.delivered_mask |= bit;
                return Sighting::Again {
                    first_provider: entry.first_provider,
                    late_by: age,
                    raced: live && entry.live,
                    repeat,
                };
            }
        }
        let fresh = Entry {
            first_seen: now,
            first_provider: provider,
            delivered_mask: bit,
            live,
        };
        if let Some((old_key, old)) = self.entries.push(key, fresh)
            && old_key != key
        {
            self.evictions += 1;
            retired.push(Retired {
                key: old_key,
                delivered_mask: old.delivered_mask,
                raced: old.live,
            });
        }
        Sighting::First
    }

    /// Forgets `key` (a reorg retracted it, or its write must be retried from scratch).
    pub fn forget(&mut self, key: &EventKey) {
        self.entries.pop(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;

    fn key(n: u8, log: Option<u64>) -> EventKey {
        EventKey {
            block_hash: B256::repeat_byte(n),
            log_index: log,
        }
    }

    fn set(cap: usize, window_ms: u64) -> HotSet {
        HotSet::new(
            NonZeroUsize::new(cap).unwrap(),
            Duration::from_millis(window_ms),
        )
    }

    #[test]
    fn first_copy_passes_later_copies_are_credited_late() {
        let mut hot = set(10, 1000);
        let mut retired = Vec::new();
        let t0 = Instant::now();
        assert_eq!(
            hot.observe(key(1, Some(0)), 0, t0, true, &mut retired),
            Sighting::First
        );
        let again = hot.observe(
            key(1, Some(0)),
            2,
            t0 + Duration::from_millis(30),
            true,
            &mut retired,
        );
        assert_eq!(
            again,
            Sighting::Again {
                first_provider: 0,
                late_by: Duration::from_millis(30),
                raced: true,
                repeat: false
            }
        );
        let repeat = hot.observe(
            key(1, Some(0)),
            2,
            t0 + Duration::from_millis(40),
            true,
            &mut retired,
        );
        assert!(matches!(repeat, Sighting::Again { repeat: true, .. }));
        // A block and its log are different keys.
        assert_eq!(
            hot.observe(key(1, None), 1, t0, true, &mut retired),
            Sighting::First
        );
        assert!(retired.is_empty());
    }

    #[test]
    fn capacity_bounds_memory_and_reports_what_it_retires() {
        let mut hot = set(3, 60_000);
        let mut retired = Vec::new();
        let t0 = Instant::now();
        for i in 0..10u8 {
            hot.observe(key(i, Some(0)), 0, t0, true, &mut retired);
            assert!(hot.len() <= 3);
        }
        assert_eq!(hot.evictions(), 7);
        assert_eq!(retired.len(), 7);
        assert_eq!(retired[0].key, key(0, Some(0)));
        assert_eq!(retired[0].delivered_mask, 1);
        // An evicted key counts as unseen again: the database key is the backstop.
        assert_eq!(
            hot.observe(key(0, Some(0)), 1, t0, true, &mut retired),
            Sighting::First
        );
    }

    #[test]
    fn only_live_sightings_race() {
        let mut hot = set(1, 60_000);
        let mut retired = Vec::new();
        let t0 = Instant::now();
        // A re-read first, a live copy later: not a race.
        hot.observe(key(1, Some(0)), 0, t0, false, &mut retired);
        let live = hot.observe(key(1, Some(0)), 1, t0, true, &mut retired);
        assert!(matches!(live, Sighting::Again { raced: false, .. }));
        // Live first, a re-read later: not a race either.
        hot.observe(key(2, Some(0)), 0, t0, true, &mut retired);
        let reread = hot.observe(key(2, Some(0)), 1, t0, false, &mut retired);
        assert!(matches!(reread, Sighting::Again { raced: false, .. }));
        assert_eq!(retired.len(), 1);
        assert!(!retired[0].raced, "first seen in a re-read");
        hot.observe(key(3, Some(0)), 0, t0, true, &mut retired);
        assert_eq!(retired.len(), 2);
        assert!(retired[1].raced, "first seen live");
        assert_eq!(retired[1].delivered_mask, 0b11);
    }

    #[test]
    fn a_key_older_than_the_window_is_unseen() {
        let mut hot = set(10, 100);
        let mut retired = Vec::new();
        let t0 = Instant::now();
        hot.observe(key(1, Some(0)), 0, t0, true, &mut retired);
        let late = hot.observe(
            key(1, Some(0)),
            1,
            t0 + Duration::from_millis(101),
            true,
            &mut retired,
        );
        assert_eq!(late, Sighting::First);
        hot.forget(&key(1, Some(0)));
        assert!(hot.is_empty());
    }
}
