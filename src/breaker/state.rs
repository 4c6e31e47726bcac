//! [`Breaker`]: one provider's closed / open / half-open machine, the [`Permit`]s it grants and
//! the [`Transition`]s that outcomes and time cause.

use std::time::{Duration, Instant};

use super::clock::{Clock, later};
use super::cooldown::Cooldown;
use super::startup::Startup;
use super::{BreakerState, Outcome, Snapshot, Transition};
use crate::config::BreakerConfig;

/// The answer of [`Breaker::try_acquire`]. A granted permit goes back to [`Breaker::record`]
/// once the request is over; it is not `Clone`, so it is recorded at most once and a probe slot
/// cannot be freed twice.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "send the request only if granted, then hand the permit to `Breaker::record`"]
pub enum Permit {
    /// Closed: send the request.
    Allowed(Ticket),
    /// Half-open: send the request as one of the `half_open_max_probes` in flight.
    Probe(Ticket),
    /// Do not send; try another provider. `retry_in` is when this one may answer otherwise: the
    /// rest of the open period, of a rate-limit cool-down or of the start-up backoff (the
    /// longest), or, with every probe slot taken, when the oldest probe would be given up as
    /// lost.
    Rejected { retry_in: Duration },
}

impl Permit {
    /// Whether the request may be sent.
    pub fn is_granted(&self) -> bool {
        !matches!(self, Permit::Rejected { .. })
    }
}

/// Opaque proof of a granted permit: a serial number that tells [`Breaker::record`] which probe
/// slot it holds and whether the breaker has transitioned since it was granted.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// One provider's circuit breaker. No I/O, no async, no logging: the caller persists and
/// reports the [`Transition`]s it returns.
///
/// Time-driven changes (open → half-open once `recovery_timeout` has passed) happen lazily:
/// [`Breaker::state`] shows them at once, and the next [`Breaker::try_acquire`] or
/// [`Breaker::tick`] makes them and returns the [`Transition`], exactly once.
///
/// Start-up: until its provider first answers (an [`Outcome::Success`] recorded), a closed
/// breaker does not open. Each failure holds requests back for a short jittered delay instead
/// (`startup.rs`: 200 ms doubling to 2 s), so a provider that comes up late is used within
/// seconds; the breaker is for providers that were working and started failing. A breaker
/// restored closed starts over in this phase (its provider has not answered in this run); one
/// restored open or half-open keeps its state and timings, as the contract says.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    consecutive_failures: u32,
    consecutive_successes: u32,
    opened_at_wall_ms: Option<i64>,
    /// The serial of the next permit granted.
    next_serial: u64,
    /// The first serial granted in the current state: permits below it are stale.
    epoch_start: u64,
    cooldown: Cooldown,
    /// Whether its provider has answered since this breaker was made or restored.
    answered: bool,
    startup: Startup,
}

#[derive(Debug, Clone)]
enum Phase {
    Closed,
    Open {
        half_open_at: Instant,
    },
    /// `probes`: serial and grant time of each probe in flight, oldest first.
    HalfOpen {
        probes: Vec<(u64, Instant)>,
    },
}

impl Breaker {
    /// A closed breaker that has never opened. Thresholds and probe counts below 1 act as 1 and
    /// a zero `recovery_timeout` as 1 ms (config validation refuses them anyway).
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                recovery_timeout: config.recovery_timeout.max(Duration::from_millis(1)),
                success_threshold: config.success_threshold.max(1),
                half_open_max_probes: config.half_open_max_probes.max(1),
            },
            phase: Phase::Closed,
            consecutive_failures: 0,
            consecutive_successes: 0,
            opened_at_wall_ms: None,
            next_serial: 0,
            epoch_start: 0,
            cooldown: Cooldown::default(),
            answered: false,
            startup: Startup::new(rand::random()),
        }
    }

    /// A breaker as persisted before a restart, possibly under a changed `config`. An open one
    /// stays open until `opened_at + recovery_timeout` on the wall clock, which may already have
    /// passed (then it is half-open at once). An `opened_at` in the future (the wall clock went
    /// back) or missing counts as "just opened": the full timeout, never less. Rate-limit
    /// cool-downs are not persisted; they are seconds long and a restart outlasts them. A closed
    /// one is in its start-up phase again: its provider has not answered in this run.
    pub fn restore(config: BreakerConfig, snapshot: Snapshot, clock: &dyn Clock) -> Breaker {
        let mut breaker = Breaker::new(config);
        breaker.consecutive_failures = snapshot.consecutive_failures;
        breaker.consecutive_successes = snapshot.consecutive_successes;
        breaker.opened_at_wall_ms = snapshot.opened_at_wall_ms;
        breaker.phase = match snapshot.state {
            BreakerState::Closed => Phase::Closed,
            BreakerState::HalfOpen => Phase::HalfOpen { probes: Vec::new() },
            BreakerState::Open => {
                let open_for = snapshot.opened_at_wall_ms.map_or(Duration::ZERO, |opened| {
                    let ms = clock.wall_ms().saturating_sub(opened);
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                });
                let remaining = breaker.config.recovery_timeout.saturating_sub(open_for);
                Phase::Open {
                    half_open_at: later(clock.now(), remaining),
                }
            }
        };
        breaker
    }

    /// Asks to send one request. Makes a due open → half-open change first and returns it with
    /// the permit: the caller persists it like any other transition.
    pub fn try_acquire(&mut self, clock: &dyn Clock) -> (Permit, Option<Transition>) {
        let transition = self.tick(clock);
        let now = clock.now();
        let cooling = self.cooldown.remaining(now);
        let backing_off = (!self.answered)
            .then(|| self.startup.remaining(now))
            .flatten();
        let recovery = self.config.recovery_timeout;
        let max_probes = self.config.half_open_max_probes as usize;
        let serial = self.next_serial;
        let permit = match (&mut self.phase, cooling) {
            (Phase::Open { half_open_at }, cooling) => Permit::Rejected {
                retry_in: half_open_at
                    .saturating_duration_since(now)
                    .max(cooling.unwrap_or_default()),
            },
            (Phase::Closed, cooling) if backing_off.is_some() => Permit::Rejected {
                retry_in: backing_off.max(cooling).unwrap_or_default(),
            },
            (_, Some(retry_in)) => Permit::Rejected { retry_in },
            (Phase::Closed, None) => Permit::Allowed(Ticket(serial)),
            (Phase::HalfOpen { probes }, None) => {
                // A probe whose outcome never came (its request was cancelled) would hold its
                // slot forever; after a recovery timeout it is given up as lost.
                probes.retain(|(_, granted)| now.saturating_duration_since(*granted) < recovery);
                match probes.first() {
                    Some((_, oldest)) if probes.len() >= max_probes => Permit::Rejected {
                        retry_in: later(*oldest, recovery).saturating_duration_since(now),
                    },
                    _ => {
                        probes.push((serial, now));
                        Permit::Probe(Ticket(serial))
                    }
                }
            }
        };
        if permit.is_granted() {
            self.next_serial += 1;
        }
        (permit, transition)
    }

    /// Takes in the outcome of a request sent under `permit`, returning the transition it
    /// caused. Any recorded outcome frees the permit's probe slot. A permit granted before the
    /// breaker's last transition is stale: its outcome changes no count and no state (a request
    /// sent while closed says nothing about whether the provider has recovered since), though a
    /// rate limit still starts a cool-down. Recording a `Rejected` permit does nothing.
    pub fn record(
        &mut self,
        permit: Permit,
        outcome: Outcome,
        clock: &dyn Clock,
    ) -> Option<Transition> {
        let serial = match permit {
            Permit::Allowed(Ticket(serial)) | Permit::Probe(Ticket(serial)) => serial,
            Permit::Rejected { .. } => return None,
        };
        self.cooldown.observe(outcome, clock.now());
        if outcome == Outcome::Success {
            // Late or not, the provider answered: it is up, start-up is over.
            self.answered = true;
            self.startup.answered();
        }
        if serial < self.epoch_start {
            return None;
        }
        match &mut self.phase {
            Phase::Closed => match outcome {
                Outcome::Success => {
                    self.consecutive_failures = 0;
                    None
                }
                Outcome::Failure if !self.answered => {
                    // Counted (it shows), paced, never opening: see the type's doc.
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    self.startup.failed(serial, self.next_serial, clock.now());
                    None
                }
                Outcome::Failure => {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    (self.consecutive_failures >= self.config.failure_threshold)
                        .then(|| self.enter(BreakerState::Open, clock))
                }
                Outcome::RateLimited { .. } | Outcome::Neutral => None,
            },
            Phase::HalfOpen { probes } => {
                // Absent if it was given up as lost; its outcome still counts, it is current.
                probes.retain(|(probe, _)| *probe != serial);
                match outcome {
                    Outcome::Success => {
                        self.consecutive_failures = 0;
                        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                        (self.consecutive_successes >= self.config.success_threshold)
                            .then(|| self.enter(BreakerState::Closed, clock))
                    }
                    Outcome::Failure => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                        Some(self.enter(BreakerState::Open, clock))
                    }
                    Outcome::RateLimited { .. } | Outcome::Neutral => None,
                }
            }
            // Open grants no permit, so none is current here.
            Phase::Open { .. } => None,
        }
    }

    /// Makes a due open → half-open change, if any. For callers that want every transition
    /// persisted promptly even when no request asks for this provider.
    pub fn tick(&mut self, clock: &dyn Clock) -> Option<Transition> {
        match self.phase {
            Phase::Open { half_open_at } if clock.now() >= half_open_at => {
                Some(self.enter(BreakerState::HalfOpen, clock))
            }
            _ => None,
        }
    }

    /// The state now, including a due open → half-open change not yet made.
    pub fn state(&self, clock: &dyn Clock) -> BreakerState {
        match self.phase {
            Phase::Open { half_open_at } if clock.now() >= half_open_at => BreakerState::HalfOpen,
            _ => self.stored_state(),
        }
    }

    /// What to persist: the state as of the last transition and the counts.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.stored_state(),
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
            opened_at_wall_ms: self.opened_at_wall_ms,
        }
    }

    /// Whether its provider has answered since this breaker was made or restored.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether its provider has not answered since start and its attempts so far failed: closed
    /// but not usable, so not healthy either (the start-up phase, see the type's doc).
    pub fn unreachable(&self) -> bool {
        !self.answered && self.startup.streak() > 0
    }

    /// The settings in force (after raising zeros to their minimum).
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn stored_state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Moves to `to`, starting a new epoch: every permit granted so far becomes stale.
    fn enter(&mut self, to: BreakerState, clock: &dyn Clock) -> Transition {
        let from = self.stored_state();
        let at_wall_ms = clock.wall_ms();
        self.phase = match to {
            BreakerState::Closed => {
                self.consecutive_failures = 0;
                Phase::Closed
            }
            BreakerState::Open => {
                self.opened_at_wall_ms = Some(at_wall_ms);
                Phase::Open {
                    half_open_at: later(clock.now(), self.config.recovery_timeout),
                }
            }
            BreakerState::HalfOpen => Phase::HalfOpen { probes: Vec::new() },
        };
        self.consecutive_successes = 0;
        self.epoch_start = self.next_serial;
        Transition {
            from,
            to,
            consecutive_failures: self.consecutive_failures,
            at_wall_ms,
        }
    }
}
