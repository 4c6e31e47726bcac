//! Circuit breaker per provider: a pure state machine over an injected clock.
//!
//! Layout:
//! - `state.rs` — [`Breaker`]: closed / open / half-open, bounded probes, [`Permit`]s and the
//!   [`Transition`]s they cause.
//! - `cooldown.rs` — rate-limit cool-down: `Retry-After` when given, else a capped exponential
//!   backoff.
//! - `startup.rs` — the start-up backoff: a provider that has not answered since start is
//!   retried after short jittered delays instead of opening its breaker.
//! - `outcome.rs` — [`Outcome`]: what a request's result says about its provider's health.
//! - `clock.rs` — [`Clock`], with [`SystemClock`] for production and [`ManualClock`] for tests.
//!
//! Use: the provider pool owns one [`Breaker`] per provider. Before a request it calls
//! [`Breaker::try_acquire`], sends the request only with a granted permit, and hands that permit
//! back to [`Breaker::record`] with [`Outcome::of`] the result. Every [`Transition`] either call
//! returns is the caller's to persist ([`Breaker::snapshot`]) and emit as telemetry: the breaker
//! does no I/O, no async and no logging, so each rule below is tested with a [`ManualClock`] and
//! no sleeps.
//!
//! Invariants:
//! - Rate limits never count as failures and never change [`BreakerState`]: a 429
//!   means slow down, not dead. They only start a cool-down during which
//!   `try_acquire` rejects.
//! - An outcome counts only in the state its permit was granted in: once the breaker has
//!   transitioned, late answers to earlier permits change no count and no state (they still
//!   feed the rate-limit cool-down, which is about the provider now, not about a state).
//! - A closed breaker whose provider has not answered since start (new, or restored closed)
//!   never opens: its failures start a short jittered backoff (200 ms doubling to 2 s) during
//!   which `try_acquire` rejects. The first success ends that phase for good; from then on
//!   `failure_threshold` failures open it as usual. Restored open and half-open breakers keep
//!   the contract (open until `opened_at + recovery_timeout` on the wall clock).
//! - A half-open probe slot is freed when its permit is recorded, or reclaimed after
//!   `recovery_timeout` if it never is (a cancelled request), so half-open cannot wedge.

mod clock;
mod cooldown;
mod outcome;
mod startup;
mod state;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use clock::{Clock, ManualClock, SystemClock};
pub use outcome::Outcome;
pub use startup::{STARTUP_MAX_DELAY, STARTUP_MIN_DELAY, startup_backoff};
pub use state::{Breaker, Permit, Ticket};

/// Where a breaker stands. Stored as [`BreakerState::as_str`] in `breakers.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests flow; consecutive failures are counted.
    Closed,
    /// Fail fast until `recovery_timeout` has passed since opening.
    Open,
    /// A bounded number of probes decide between closed and open.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The `livechain_breaker_state` gauge: 0 closed, 1 half-open, 2 open, so that a higher
    /// value is a less healthy provider.
    pub fn metric_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `breakers.state` value that is none of [`BreakerState::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown breaker state {0:?} (expected closed, open or half_open)")]
pub struct UnknownBreakerState(pub String);

impl FromStr for BreakerState {
    type Err = UnknownBreakerState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "closed" => Ok(BreakerState::Closed),
            "open" => Ok(BreakerState::Open),
            "half_open" => Ok(BreakerState::HalfOpen),
            other => Err(UnknownBreakerState(other.to_owned())),
        }
    }
}

/// A change of [`BreakerState`], returned by the call that caused or observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// The count after the transition: the threshold reached when opening from closed, one more
    /// than before when a probe fails, 0 when closing.
    pub consecutive_failures: u32,
    /// Wall-clock milliseconds when the breaker made (or, for the time-driven open → half-open,
    /// first noticed) the change. When opening, this is the persisted `opened_at`.
    pub at_wall_ms: i64,
}

/// What persists of a breaker across restarts: one `breakers` row without its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The state as of the last transition: an open breaker whose recovery time has passed is
    /// still `Open` here until a call notices (see [`Breaker::state`] for the live value).
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Counted in half-open only; 0 in the other states.
    pub consecutive_successes: u32,
    /// When the breaker last opened, in wall-clock milliseconds; `None` if it never has.
    pub opened_at_wall_ms: Option<i64>,
}

impl Default for Snapshot {
    /// A fresh breaker: closed, nothing counted, never opened.
    fn default() -> Self {
        Snapshot {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            consecutive_successes: 0,
            opened_at_wall_ms: None,
        }
    }
}
