//! When the rest of a block is not coming soon: the aggregator's cue for the writer to commit
//! without waiting out its linger.
//!
//! A provider writes a block's head and logs together, and the service reads each provider's
//! socket until nothing more is waiting, marking the last notification of such a burst
//! ([`crate::provider::Notification::burst_end`]). Once every provider that is keeping up with
//! the chain has ended a burst after delivering the newest block the writer was sent, that
//! block's copies are all in: [`Bursts::delivered`] says so, and the aggregator tells the writer
//! ([`super::writer::WriterInput::Quiet`]). The writer then commits at once instead of
//! [`super::writer::FLUSH_INTERVAL`] after the batch opened (which tokio's millisecond timer
//! makes 1-2 ms): the live tail's latency drops by that much, and the other providers' copies
//! still land in the same batch instead of costing an update each afterwards.
//!
//! It is only a cue: a provider silent for [`ACTIVE`] is not waited for, and one behind the
//! newest block (or a burst split across TCP segments) leaves the decision to the linger, as
//! without the cue.

use std::time::{Duration, Instant};

use crate::domain::ProviderIndex;

/// A provider that delivered nothing for this long is not waited for.
pub const ACTIVE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Bursts {
    /// By provider index; `None` until the provider delivers.
    providers: Vec<Option<Burst>>,
    /// The highest block among the events sent to the writer since the last cue.
    unflushed: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    /// The highest block the provider delivered.
    block: u64,
    /// Whether its latest delivery ended a burst.
    ended: bool,
    at: Instant,
}

impl Bursts {
    /// An event of `block` went to the writer.
    pub fn sent(&mut self, block: u64) {
        self.unflushed = Some(self.unflushed.map_or(block, |top| top.max(block)));
    }

    /// Records a live delivery received `at`; true when the writer should commit what it was
    /// sent without waiting for more (then the next cue waits for new events).
    pub fn delivered(
        &mut self,
        provider: ProviderIndex,
        block: u64,
        burst_end: bool,
        at: Instant,
    ) -> bool {
        let i = usize::from(provider);
        if self.providers.len() <= i {
            self.providers.resize(i + 1, None);
        }
        let highest = self.providers[i].map_or(block, |b| b.block.max(block));
        self.providers[i] = Some(Burst {
            block: highest,
            ended: burst_end,
            at,
        });
        let Some(top) = self.unflushed.filter(|_| burst_end) else {
            return false;
        };
        let all_in = self
            .providers
            .iter()
            .flatten()
            .filter(|b| at.saturating_duration_since(b.at) < ACTIVE)
            .all(|b| b.ended && b.block >= top);
        if all_in {
            self.unflushed = None;
        }
        all_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_once_every_active_provider_ended_a_burst_at_the_newest_block() {
        let t = Instant::now();
        let mut b = Bursts::default();
        assert!(!b.delivered(1, 6, true, t));
        // Block 7 from provider 0 (its burst: two deliveries), then from provider 1.
        assert!(!b.delivered(0, 7, false, t));
        b.sent(7);
        assert!(
            !b.delivered(0, 7, true, t),
            "provider 1 has not delivered block 7"
        );
        assert!(!b.delivered(1, 7, false, t), "provider 1 is mid-burst");
        assert!(b.delivered(1, 7, true, t));
        // Nothing new sent since: no second cue for the same block.
        assert!(!b.delivered(0, 7, true, t));
    }

    #[test]
    fn a_provider_behind_is_waited_for_and_a_silent_one_is_not() {
        let t = Instant::now();
        let mut b = Bursts::default();
        assert!(!b.delivered(2, 4, true, t)); // provider 2 at block 4
        b.sent(5);
        assert!(
            !b.delivered(0, 5, true, t),
            "provider 2 has not delivered block 5 yet"
        );
        b.sent(6);
        let later = t + ACTIVE;
        assert!(
            b.delivered(0, 6, true, later),
            "provider 2 has been silent for {ACTIVE:?}"
        );
    }

    #[test]
    fn no_cue_without_events_sent_or_mid_burst() {
        let t = Instant::now();
        let mut b = Bursts::default();
        assert!(!b.delivered(0, 3, true, t), "nothing was sent");
        b.sent(3);
        assert!(!b.delivered(0, 3, false, t), "the burst goes on");
        assert!(b.delivered(0, 3, true, t));
    }
}
