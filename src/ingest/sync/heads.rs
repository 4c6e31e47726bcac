//! How far the range sync may read: the live heads the aggregator has taken in, each once it
//! has had [`SETTLE`] to take in that block's logs too (from every provider).
//!
//! Reading a block before the live stream has delivered it would make the range's copies the
//! first ones: the live copies would then be late copies, each an extra write. Reading it once
//! the live copies are in makes the re-read cost only identity reads (see `forwarded`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a live head waits before the range sync reads its block.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Live heads remembered while they settle; past this the oldest counts as settled at once.
const MAX_PENDING: usize = 1024;

/// The live heads seen, and when each was first seen.
#[derive(Debug, Default)]
pub struct HeadClock {
    pending: VecDeque<(u64, Instant)>,
    settled: Option<u64>,
    latest: u64,
    latest_at: Option<Instant>,
}

impl HeadClock {
    /// Records the live head as of `now` (a head no higher than the latest is ignored).
    pub fn observe(&mut self, head: u64, now: Instant) {
        if head <= self.latest && self.latest_at.is_some() {
            return;
        }
        self.latest = head;
        self.latest_at = Some(now);
        if self.pending.len() == MAX_PENDING
            && let Some((oldest, _)) = self.pending.pop_front()
        {
            self.settled = Some(oldest);
        }
        self.pending.push_back((head, now));
    }

    /// The highest live head that has settled by `now`.
    pub fn settled(&mut self, now: Instant) -> Option<u64> {
        while let Some(&(head, seen)) = self.pending.front() {
            if now.saturating_duration_since(seen) < SETTLE {
                break;
            }
            self.settled = Some(head);
            self.pending.pop_front();
        }
        self.settled
    }

    /// When the next pending head settles, if one is pending.
    pub fn next_settle(&self) -> Option<Instant> {
        self.pending.front().map(|(_, seen)| *seen + SETTLE)
    }

    /// Whether a live head arrived within `timeout` of `now`: the subscriptions are flowing.
    pub fn is_live(&self, now: Instant, timeout: Duration) -> bool {
        self.latest_at
            .is_some_and(|at| now.saturating_duration_since(at) <= timeout)
    }

    pub fn latest(&self) -> u64 {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_settle_after_a_delay_in_order() {
        let mut clock = HeadClock::default();
        let t0 = Instant::now();
        assert_eq!(clock.settled(t0), None);
        assert!(!clock.is_live(t0, Duration::from_secs(2)));
        clock.observe(10, t0);
        clock.observe(12, t0 + Duration::from_millis(50));
        clock.observe(11, t0 + Duration::from_millis(60)); // lower: ignored
        assert_eq!(clock.latest(), 12);
        assert_eq!(clock.settled(t0 + Duration::from_millis(99)), None);
        assert_eq!(clock.next_settle(), Some(t0 + SETTLE));
        assert_eq!(clock.settled(t0 + SETTLE), Some(10));
        assert_eq!(clock.settled(t0 + Duration::from_millis(149)), Some(10));
        assert_eq!(clock.settled(t0 + Duration::from_millis(150)), Some(12));
        assert_eq!(clock.next_settle(), None);
        assert!(clock.is_live(t0 + Duration::from_secs(2), Duration::from_secs(2)));
        assert!(!clock.is_live(t0 + Duration::from_secs(3), Duration::from_secs(2)));
    }

    #[test]
    fn pending_heads_are_bounded() {
        let mut clock = HeadClock::default();
        let t0 = Instant::now();
        for n in 1..=(MAX_PENDING as u64 + 10) {
            clock.observe(n, t0);
        }
        assert_eq!(clock.pending.len(), MAX_PENDING);
        // The oldest were let through unsettled rather than kept.
        assert_eq!(clock.settled(t0), Some(10));
    }
}
