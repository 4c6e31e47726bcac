//! The breaker's rules, one script each, all run through [`Run::steps`] on a [`ManualClock`]:
//! no sleeps, every duration exact to the millisecond.
//!
//! `transitions.rs` walks the states; `rate_limits.rs` the cool-down and neutral outcomes;
//! `late_answers.rs` stale permits and lost probes; `restore.rs` restarts; `startup.rs` a
//! provider that has not answered yet.

mod late_answers;
mod rate_limits;
mod restore;
mod startup;
mod transitions;

use std::collections::VecDeque;
use std::time::Duration;

use super::*;
use crate::config::BreakerConfig;

const WALL0: i64 = 1_700_000_000_000;
const C: BreakerState = BreakerState::Closed;
const O: BreakerState = BreakerState::Open;
const H: BreakerState = BreakerState::HalfOpen;

/// One move of a script.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Acquire (must be granted) and record this outcome at once.
    Call(Outcome),
    /// Acquire (must be granted) and keep the permit.
    Hold,
    /// Record the oldest kept permit with this outcome.
    Finish(Outcome),
    /// Acquire must be rejected with exactly this `retry_in`, in ms.
    Rejected(u64),
    /// Acquire must be rejected with a `retry_in` within these bounds, in ms (jittered delays).
    RejectedWithin(u64, u64),
    /// Move both clocks forward, in ms.
    Advance(u64),
    /// `state()` must read this.
    Is(BreakerState),
    /// The snapshot's consecutive failures and successes.
    Counts(u32, u32),
}
use Step::*;

const OK: Step = Call(Outcome::Success);
const FAIL: Step = Call(Outcome::Failure);
const NEUTRAL: Step = Call(Outcome::Neutral);
/// Opens a breaker with `failure_threshold: 3`.
const TRIP: [Step; 3] = [FAIL, FAIL, FAIL];

fn limited(ms: Option<u64>) -> Outcome {
    Outcome::RateLimited {
        retry_after: ms.map(Duration::from_millis),
    }
}

fn config(failures: u32, recovery_ms: u64, successes: u32, probes: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: failures,
        recovery_timeout: Duration::from_millis(recovery_ms),
        success_threshold: successes,
        half_open_max_probes: probes,
    }
}

/// Opens after 3 failures, half-opens after 10 s, closes after 2 successes, 1 probe at a time.
fn cfg() -> BreakerConfig {
    config(3, 10_000, 2, 1)
}

/// The `(from, to)` of each transition, in order.
type Path = Vec<(BreakerState, BreakerState)>;

/// A breaker, its clock, the permits a script keeps and every transition returned.
struct Run {
    breaker: Breaker,
    clock: ManualClock,
    held: VecDeque<Permit>,
    transitions: Vec<Transition>,
}

/// A breaker whose provider has answered once (past its start-up phase) run through `steps`.
fn run(config: BreakerConfig, steps: &[Step]) -> Run {
    fresh(config, &[OK]).steps(steps)
}

/// A new breaker, its provider not heard from yet, run through `steps`.
fn fresh(config: BreakerConfig, steps: &[Step]) -> Run {
    Run::resume(Breaker::new(config), ManualClock::new(WALL0)).steps(steps)
}

impl Run {
    fn resume(breaker: Breaker, clock: ManualClock) -> Run {
        Run {
            breaker,
            clock,
            held: VecDeque::new(),
            transitions: Vec::new(),
        }
    }

    #[track_caller]
    fn steps(mut self, steps: &[Step]) -> Run {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("step {i} ({step:?})");
            match *step {
                Call(outcome) => {
                    let permit = self.acquire(&at);
                    self.record(permit, outcome);
                }
                Hold => {
                    let permit = self.acquire(&at);
                    self.held.push_back(permit);
                }
                Finish(outcome) => {
                    let permit = self.held.pop_front().expect("no permit held");
                    self.record(permit, outcome);
                }
                Rejected(ms) => {
                    let permit = self.try_acquire();
                    let want = Permit::Rejected {
                        retry_in: Duration::from_millis(ms),
                    };
                    assert_eq!(permit, want, "{at}");
                }
                RejectedWithin(lo, hi) => match self.try_acquire() {
                    Permit::Rejected { retry_in } => {
                        let ms = Duration::from_millis;
                        assert!(
                            retry_in >= ms(lo) && retry_in <= ms(hi),
                            "{at}: {retry_in:?}"
                        );
                    }
                    granted => panic!("{at}: got {granted:?}"),
                },
                Advance(ms) => self.clock.advance(Duration::from_millis(ms)),
                Is(state) => assert_eq!(self.breaker.state(&self.clock), state, "{at}"),
                Counts(failures, successes) => {
                    let snapshot = self.breaker.snapshot();
                    let got = (
                        snapshot.consecutive_failures,
                        snapshot.consecutive_successes,
                    );
                    assert_eq!(got, (failures, successes), "{at}");
                }
            }
        }
        self
    }

    fn try_acquire(&mut self) -> Permit {
        let (permit, transition) = self.breaker.try_acquire(&self.clock);
        self.transitions.extend(transition);
        permit
    }

    #[track_caller]
    fn acquire(&mut self, at: &str) -> Permit {
        let permit = self.try_acquire();
        assert!(permit.is_granted(), "{at}: got {permit:?}");
        permit
    }

    fn record(&mut self, permit: Permit, outcome: Outcome) {
        let transition = self.breaker.record(permit, outcome, &self.clock);
        self.transitions.extend(transition);
    }

    fn path(&self) -> Path {
        self.transitions.iter().map(|t| (t.from, t.to)).collect()
    }
}

fn steps(parts: &[&[Step]]) -> Vec<Step> {
    parts.concat()
}

#[test]
fn state_names_and_metric_values() {
    for (state, name, value) in [(C, "closed", 0.0), (H, "half_open", 1.0), (O, "open", 2.0)] {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert_eq!(name.parse::<BreakerState>(), Ok(state));
        assert_eq!(state.metric_value(), value);
    }
    let unknown = "half-open".parse::<BreakerState>();
    assert_eq!(unknown, Err(UnknownBreakerState("half-open".into())));
}
