//! A chain that cannot advance because every provider is far below its stored checkpoint (a
//! node reset or resyncing, a restarted Anvil, another chain behind the same URL): said loudly,
//! as a warning, a `/ready` reason and an honest lag, instead of waited out in silence.

use std::time::{Duration, Instant};

/// Blocks the best head may sit below the checkpoint before the chain counts as stuck: a
/// provider a few blocks behind after a restart is only lagging.
pub const BEHIND_TOLERANCE: u64 = 16;
/// How often a chain still stuck is reported again.
const REPEAT: Duration = Duration::from_secs(60);

/// Why a chain cannot advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Every provider's head is far below the checkpoint; their blocks there are ours (or could
    /// not be compared).
    Behind { head: u64, checkpoint: u64 },
    /// As `Behind`, and the providers' block at their head is not the one stored there: the
    /// node was reset or another chain is behind the URL.
    OtherChain { head: u64, checkpoint: u64 },
}

impl Stuck {
    /// `Some` when the best head is far enough below the checkpoint.
    pub fn check(head: u64, checkpoint: Option<u64>) -> Option<Stuck> {
        let checkpoint = checkpoint?;
        (head > 0 && head.saturating_add(BEHIND_TOLERANCE) < checkpoint)
            .then_some(Stuck::Behind { head, checkpoint })
    }

    pub fn head(self) -> u64 {
        match self {
            Stuck::Behind { head, .. } | Stuck::OtherChain { head, .. } => head,
        }
    }

    pub fn checkpoint(self) -> u64 {
        match self {
            Stuck::Behind { checkpoint, .. } | Stuck::OtherChain { checkpoint, .. } => checkpoint,
        }
    }
}

impl Stuck {
    /// The operator's reason: what is wrong with `chain`, and the way out.
    pub fn reason(self, chain: &str) -> String {
        let (head, checkpoint) = (self.head(), self.checkpoint());
        let mut text = format!(
            "chain {chain}: every provider's head ({head}) is {} blocks below the stored \
             checkpoint ({checkpoint})",
            checkpoint - head
        );
        if let Stuck::OtherChain { .. } = self {
            text.push_str(&format!(
                " and their block {head} is not the one stored there: the node was reset or \
                 serves another chain"
            ));
        }
        text.push_str(&format!(
            "; nothing is stored until a provider passes block {checkpoint} (to index the \
             providers' chain from scratch instead, stop the service and run \
             `livechain reset-chain {chain}`)"
        ));
        text
    }
}

/// What a chain's stuck state did since the last look, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Stuck now, or still stuck a while after the last report: say it (again).
    Report(Stuck),
    /// No longer stuck.
    Cleared,
}

/// Follows one chain's stuck state and decides when it is worth a log line.
#[derive(Debug, Default)]
pub struct StuckWatch {
    current: Option<Stuck>,
    reported_at: Option<Instant>,
}

impl StuckWatch {
    pub fn current(&self) -> Option<Stuck> {
        self.current
    }

    /// Whether a comparison of the providers' block with ours is due: on becoming stuck, then
    /// once per report.
    pub fn compare_due(&self, candidate: Option<Stuck>, now: Instant) -> bool {
        candidate.is_some()
            && (self.current.is_none() || self.reported_at.is_none_or(|at| now >= at + REPEAT))
    }

    /// Records the state seen at `now`; what to log, if anything.
    pub fn observe(&mut self, stuck: Option<Stuck>, now: Instant) -> Option<Change> {
        let was = std::mem::replace(&mut self.current, stuck);
        match (was, stuck) {
            (Some(_), None) => {
                self.reported_at = None;
                Some(Change::Cleared)
            }
            (_, Some(now_stuck)) => {
                // A head creeping up is no news; another kind of stuck, or time passing, is.
                let kind = std::mem::discriminant(&now_stuck);
                let due = was.is_none_or(|w| std::mem::discriminant(&w) != kind)
                    || self.reported_at.is_none_or(|at| now >= at + REPEAT);
                due.then(|| {
                    self.reported_at = Some(now);
                    Change::Report(now_stuck)
                })
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_far_below_the_checkpoint_is_stuck_a_little_below_is_not() {
        assert_eq!(
            Stuck::check(8, Some(861)),
            Some(Stuck::Behind {
                head: 8,
                checkpoint: 861
            })
        );
        assert_eq!(Stuck::check(861 - BEHIND_TOLERANCE, Some(861)), None);
        assert_eq!(Stuck::check(900, Some(861)), None);
        assert_eq!(
            Stuck::check(0, Some(861)),
            None,
            "no provider has answered yet"
        );
        assert_eq!(
            Stuck::check(8, None),
            None,
            "no checkpoint: nothing to be behind"
        );
    }

    #[test]
    fn the_reason_names_the_heights_and_the_way_out() {
        let behind = Stuck::Behind {
            head: 8,
            checkpoint: 861,
        }
        .reason("devnet");
        for needle in [
            "chain devnet:",
            "(8)",
            "853 blocks below",
            "(861)",
            "`livechain reset-chain devnet`",
        ] {
            assert!(behind.contains(needle), "{needle:?} in {behind}");
        }
        let other = Stuck::OtherChain {
            head: 8,
            checkpoint: 861,
        }
        .reason("devnet");
        assert!(other.contains("another chain"), "{other}");
    }

    #[test]
    fn reports_on_entering_on_a_new_kind_every_minute_and_on_clearing() {
        let t0 = Instant::now();
        let mut watch = StuckWatch::default();
        let behind = |head| Stuck::Behind {
            head,
            checkpoint: 861,
        };
        assert_eq!(watch.observe(None, t0), None);
        assert!(watch.compare_due(Some(behind(8)), t0));
        assert_eq!(
            watch.observe(Some(behind(8)), t0),
            Some(Change::Report(behind(8)))
        );
        assert!(!watch.compare_due(Some(behind(9)), t0 + Duration::from_secs(2)));
        assert_eq!(
            watch.observe(Some(behind(9)), t0 + Duration::from_secs(2)),
            None
        );
        let other = Stuck::OtherChain {
            head: 9,
            checkpoint: 861,
        };
        assert_eq!(
            watch.observe(Some(other), t0 + Duration::from_secs(3)),
            Some(Change::Report(other))
        );
        assert!(watch.compare_due(Some(other), t0 + Duration::from_secs(64)));
        assert_eq!(
            watch.observe(Some(other), t0 + Duration::from_secs(64)),
            Some(Change::Report(other))
        );
        assert_eq!(watch.current(), Some(other));
        assert_eq!(
            watch.observe(None, t0 + Duration::from_secs(65)),
            Some(Change::Cleared)
        );
        assert_eq!(watch.current(), None);
    }
}
