//! Rate-limit cool-down: how long a provider that said "slow down" is left alone. Kept apart
//! from the breaker's states because a rate limit says nothing about the provider's health
//! (peers that counted 429s as faults shut out healthy providers: lasso-rpc#3,
//! graph-node#1934).

use std::time::{Duration, Instant};

use super::Outcome;
use super::clock::later;
use crate::backoff::Curve;

/// The first cool-down without a `Retry-After`.
pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest cool-down without a `Retry-After`.
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured: a provider asking for hours is failed over from anyway,
/// and a bogus header must not sideline it for a day.
pub(super) const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// The cool-downs without a `Retry-After`: 1 s doubling to 30 s. No jitter: one breaker paces
/// one provider, there is no herd to spread.
const RATE_LIMIT: Curve = Curve::steady(BACKOFF_BASE, BACKOFF_CAP);

/// The cool-down after the `streak`-th consecutive rate limit without a `Retry-After`:
/// `min(BACKOFF_CAP, BACKOFF_BASE * 2^(streak - 1))`, i.e. 1 s, 2 s, 4 s, ... 16 s, then 30 s;
/// a pure function of the counter the breaker keeps.
pub(super) fn backoff(streak: u32) -> Duration {
    RATE_LIMIT.nth(streak, 0)
}

/// Consecutive rate limits and the instant until which requests are held back.
#[derive(Debug, Clone, Default)]
pub(super) struct Cooldown {
    streak: u32,
    until: Option<Instant>,
}

impl Cooldown {
    /// Takes in one recorded outcome. A rate limit extends the cool-down (never shortens it:
    /// concurrent requests may come back limited with different hints); a success resets the
    /// streak but lets a running cool-down finish, since the provider asked for that time.
    pub(super) fn observe(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::RateLimited { retry_after } => {
                self.streak = self.streak.saturating_add(1);
                let wait = match retry_after {
                    Some(hint) => hint.min(RETRY_AFTER_CAP),
                    None => backoff(self.streak),
                };
                let until = later(now, wait);
                self.until = Some(self.until.map_or(until, |current| current.max(until)));
            }
            Outcome::Success => self.streak = 0,
            Outcome::Failure | Outcome::Neutral => {}
        }
    }

    /// Time left in the cool-down, if one is running.
    pub(super) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let cases: &[(u32, u64)] = &[
            (0, 1_000),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 16_000),
            (6, 30_000),
            (7, 30_000),
            (1_000, 30_000),
            (u32::MAX, 30_000),
        ];
        for &(streak, ms) in cases {
            assert_eq!(
                backoff(streak),
                Duration::from_millis(ms),
                "streak {streak}"
            );
        }
    }

    fn limited(ms: Option<u64>) -> Outcome {
        Outcome::RateLimited {
            retry_after: ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap() {
        let now = Instant::now();
        let mut cooldown = Cooldown::default();
        cooldown.observe(limited(Some(7_000)), now);
        assert_eq!(cooldown.remaining(now), Some(Duration::from_millis(7_000)));

        let mut cooldown = Cooldown::default();
        cooldown.observe(limited(Some(86_400_000)), now);
        assert_eq!(cooldown.remaining(now), Some(RETRY_AFTER_CAP));
    }

    #[test]
    fn a_shorter_hint_does_not_cut_a_running_cooldown() {
        let now = Instant::now();
        let mut cooldown = Cooldown::default();
        cooldown.observe(limited(Some(5_000)), now);
        cooldown.observe(limited(Some(100)), now);
        assert_eq!(cooldown.remaining(now), Some(Duration::from_millis(5_000)));
    }

    #[test]
    fn success_resets_the_streak_but_not_the_running_cooldown() {
        let now = Instant::now();
        let mut cooldown = Cooldown::default();
        cooldown.observe(limited(None), now);
        cooldown.observe(limited(None), now);
        assert_eq!(cooldown.remaining(now), Some(Duration::from_millis(2_000)));
        cooldown.observe(Outcome::Success, now);
        assert_eq!(cooldown.remaining(now), Some(Duration::from_millis(2_000)));
        let later = now + Duration::from_millis(2_000);
        assert_eq!(cooldown.remaining(later), None);
        cooldown.observe(limited(None), later);
        assert_eq!(
            cooldown.remaining(later),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn failures_and_neutral_outcomes_leave_the_streak_alone() {
        let now = Instant::now();
        let mut cooldown = Cooldown::default();
        cooldown.observe(limited(Some(0)), now);
        cooldown.observe(Outcome::Failure, now);
        cooldown.observe(Outcome::Neutral, now);
        assert_eq!(cooldown.remaining(now), None, "a zero hint means no wait");
        cooldown.observe(limited(None), now);
        assert_eq!(cooldown.remaining(now), Some(Duration::from_millis(2_000)));
    }
}
