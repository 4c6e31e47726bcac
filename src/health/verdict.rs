//! Whether a provider is healthy, and why not: the one rule every reader of the health uses
//! (ranking, readiness, `/v1/providers`, the gateway's streamed head), and the record of its
//! last verdict that turns a change into a logged, counted transition.

use std::fmt;
use std::time::Instant;

use super::stats::Stats;
use crate::breaker::BreakerState;
use crate::config::HealthConfig;

/// Why a provider is not healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhealthy {
    /// An operator paused it: nothing is asked of it until resumed.
    Paused,
    /// Its breaker is open: too many failures in a row.
    BreakerOpen,
    /// It has failed since start without ever answering.
    Unreachable,
    /// Its stream is open but silent while the chain moved on.
    Stalled,
    /// Its head is this many blocks behind the best head (more than allowed).
    Lagging { blocks: u64 },
}

impl Unhealthy {
    /// A short label for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Unhealthy::Paused => "paused",
            Unhealthy::BreakerOpen => "breaker_open",
            Unhealthy::Unreachable => "unreachable",
            Unhealthy::Stalled => "stalled",
            Unhealthy::Lagging { .. } => "lagging",
        }
    }
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::Paused => f.write_str("an operator paused it"),
            Unhealthy::BreakerOpen => f.write_str("its breaker is open"),
            Unhealthy::Unreachable => f.write_str("it has not answered since start"),
            Unhealthy::Stalled => f.write_str("its stream is open but silent"),
            Unhealthy::Lagging { blocks } => write!(f, "it is {blocks} blocks behind"),
        }
    }
}

/// The verdict on a provider with `breaker` and `stats`, the chain's best head at `best`.
pub(super) fn judge(
    paused: bool,
    breaker: BreakerState,
    unreachable: bool,
    stats: &Stats,
    config: &HealthConfig,
    best: u64,
    now: Instant,
) -> Option<Unhealthy> {
    if paused {
        return Some(Unhealthy::Paused);
    }
    if breaker == BreakerState::Open {
        return Some(Unhealthy::BreakerOpen);
    }
    if unreachable {
        return Some(Unhealthy::Unreachable);
    }
    if stats.stalled(best, config.stall_timeout, now) {
        return Some(Unhealthy::Stalled);
    }
    let lag = stats.lag(best);
    (lag > config.max_lag_blocks).then_some(Unhealthy::Lagging { blocks: lag })
}

/// The last verdict published for a provider: a change between two looks is a transition.
#[derive(Debug, Default)]
pub(super) struct LastVerdict(Option<Option<Unhealthy>>);

impl LastVerdict {
    /// Records `now`; the previous verdict when healthy turned unhealthy or back (the first
    /// look is not a transition, and a change of reason while unhealthy is not either).
    pub fn update(&mut self, now: Option<Unhealthy>) -> Option<Option<Unhealthy>> {
        let before = self.0.replace(now)?;
        (before.is_some() != now.is_some()).then_some(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_healthy_to_unhealthy_and_back_is_a_transition() {
        let mut last = LastVerdict::default();
        assert_eq!(last.update(None), None, "the first look");
        assert_eq!(last.update(Some(Unhealthy::Stalled)), Some(None));
        assert_eq!(
            last.update(Some(Unhealthy::Lagging { blocks: 9 })),
            None,
            "another reason, still unhealthy"
        );
        assert_eq!(
            last.update(None),
            Some(Some(Unhealthy::Lagging { blocks: 9 }))
        );
        assert_eq!(last.update(None), None);
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            Unhealthy::Lagging { blocks: 12 }.to_string(),
            "it is 12 blocks behind"
        );
        assert_eq!(Unhealthy::BreakerOpen.as_str(), "breaker_open");
    }
}
