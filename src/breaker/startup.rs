//! Start-up backoff: how a provider that has not answered since the process started is paced.
//! Its failures do not open the breaker (a node still booting, a port not yet bound, is not a
//! provider that was working and broke); each one holds requests back for a short, growing,
//! jittered delay instead, so it is retried within seconds of coming up rather than after a
//! whole `recovery_timeout` (a provider down for 3 s at start would be shut out for 60).

use std::time::{Duration, Instant};

use super::clock::later;
use crate::backoff::{Curve, Delays};

/// The first delay after a failure at start (before jitter).
pub const STARTUP_MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest delay at start (before jitter, which adds up to as much again).
pub const STARTUP_MAX_DELAY: Duration = Duration::from_secs(2);

/// The start-up curve: 200 ms, doubling up to 2 s, each delay plus a random share of itself
/// (so up to 400 ms, ..., 4 s), never ending. Jitter spreads the retries of many services
/// restarted together against one provider. Also the range sync's retry curve for the head
/// while its providers have never answered.
pub const STARTUP: Curve = Curve::jittered(STARTUP_MIN_DELAY, STARTUP_MAX_DELAY);

/// The delays along [`STARTUP`].
pub fn startup_backoff() -> Delays {
    STARTUP.delays()
}

/// The delay after the `streak`-th consecutive failure at start, its jitter drawn from `seed`:
/// a pure function, so the breaker stays a deterministic state machine given its seed.
pub(super) fn startup_delay(streak: u32, seed: u64) -> Duration {
    STARTUP.nth(streak, seed)
}

/// Consecutive failures at start, and the instant until which requests are held back.
#[derive(Debug, Clone)]
pub(super) struct Startup {
    /// Jitter seed, fixed per breaker: two breakers (two providers, two services) draw apart.
    seed: u64,
    streak: u32,
    until: Option<Instant>,
    /// Permits granted from this serial on belong to the current round: only the first failure
    /// of a round lengthens the delay, so the listener, the idle probe and the range sync
    /// failing together at start do not push it up three steps at once.
    round_start: u64,
}

impl Startup {
    pub(super) fn new(seed: u64) -> Startup {
        Startup {
            seed,
            streak: 0,
            until: None,
            round_start: 0,
        }
    }

    /// A failure of the permit with `serial`; `next_serial` is the serial of the next permit.
    pub(super) fn failed(&mut self, serial: u64, next_serial: u64, now: Instant) {
        if serial < self.round_start {
            return;
        }
        self.streak = self.streak.saturating_add(1);
        let seed = self.seed.wrapping_add(u64::from(self.streak));
        self.until = Some(later(now, startup_delay(self.streak, seed)));
        self.round_start = next_serial;
    }

    /// The provider answered: start-up is over for good.
    pub(super) fn answered(&mut self) {
        self.streak = 0;
        self.until = None;
    }

    /// Consecutive rounds that failed at start.
    pub(super) fn streak(&self) -> u32 {
        self.streak
    }

    /// Time left before the next attempt, if requests are held back.
    pub(super) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_delay_doubles_from_200_ms_to_2_s_plus_at_most_as_much_jitter() {
        let cases: &[(u32, u64)] = &[
            (0, 200),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_600),
            (5, 2_000),
            (6, 2_000),
            (u32::MAX, 2_000),
        ];
        for seed in 0..50 {
            for &(streak, base) in cases {
                let delay = startup_delay(streak, seed);
                assert!(
                    delay >= ms(base) && delay <= ms(2 * base),
                    "streak {streak} seed {seed}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn the_delay_is_a_function_of_streak_and_seed_and_seeds_spread_it() {
        assert_eq!(startup_delay(3, 7), startup_delay(3, 7));
        let spread: std::collections::BTreeSet<Duration> =
            (0..20).map(|seed| startup_delay(3, seed)).collect();
        assert!(spread.len() > 10, "jitter draws apart: {spread:?}");
    }

    #[test]
    fn the_iterator_follows_the_same_curve_and_never_ends() {
        let delays: Vec<Duration> = startup_backoff().take(100).collect();
        assert_eq!(delays.len(), 100);
        assert!(delays[0] >= ms(200) && delays[0] <= ms(400));
        assert!(delays.iter().all(|d| *d <= ms(4_000)));
        assert!(delays[99] >= ms(2_000));
    }

    #[test]
    fn only_the_first_failure_of_a_round_lengthens_the_delay() {
        let now = Instant::now();
        let mut startup = Startup::new(1);
        assert_eq!(startup.remaining(now), None);
        // Permits 0, 1 and 2 granted together; the next one would be 3.
        startup.failed(0, 3, now);
        startup.failed(1, 3, now);
        startup.failed(2, 3, now);
        assert_eq!(startup.streak(), 1);
        let first = startup.remaining(now).expect("held back");
        assert!(first >= ms(200) && first <= ms(400), "{first:?}");
        // A permit of the next round.
        startup.failed(3, 4, now + first);
        assert_eq!(startup.streak(), 2);
        let second = startup.remaining(now + first).expect("held back");
        assert!(second >= ms(400) && second <= ms(800), "{second:?}");
        startup.answered();
        assert_eq!((startup.streak(), startup.remaining(now)), (0, None));
    }
}
