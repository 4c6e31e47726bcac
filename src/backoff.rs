//! Retry delays: the one exponential curve of the service ([`Curve`], built on `backon`), and
//! [`RETRY`], the curve of provider work and of the writer's commits.
//!
//! A curve starts at `first`, doubles, and stops growing at `cap`; with jitter each delay gets
//! a random share of itself added (so up to twice it), so that many clients failing together
//! do not retry in lock-step. Delays never run out. The other curves are declared next to
//! their one user: the breaker's start-up delay (`breaker::startup`) and rate-limit cool-down
//! (`breaker::cooldown`), the supervisor's restarts (`registry::backoff`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// An exponential curve of delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Curve {
    /// The first delay (before jitter).
    pub first: Duration,
    /// The longest delay (before jitter).
    pub cap: Duration,
    pub jitter: bool,
}

/// Retries of provider work (a listener's reconnects, the range sync's fetches and head polls)
/// and of the writer's commits: 100 ms doubling to 30 s, jittered so that many listeners
/// losing one provider at once do not reconnect in lock-step.
pub const RETRY: Curve = Curve::jittered(Duration::from_millis(100), Duration::from_secs(30));

impl Curve {
    pub const fn jittered(first: Duration, cap: Duration) -> Curve {
        Curve {
            first,
            cap,
            jitter: true,
        }
    }

    /// A curve without jitter: where one client paces one server, there is no herd to spread.
    pub const fn steady(first: Duration, cap: Duration) -> Curve {
        Curve {
            first,
            cap,
            jitter: false,
        }
    }

    fn builder(self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .without_max_times();
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }

    /// The delays along the curve, the jitter drawn at random.
    pub fn delays(self) -> Delays {
        Delays {
            inner: self.builder().build(),
            cap: self.cap,
        }
    }

    /// The delays along the curve, the jitter drawn from `seed`: the same seed, the same delays.
    pub fn seeded(self, seed: u64) -> Delays {
        Delays {
            inner: self.builder().with_jitter_seed(seed).build(),
            cap: self.cap,
        }
    }

    /// The delay before retry number `attempt` (counted from 1; 0 counts as 1), the jitter
    /// drawn from `seed`: a pure function, for state machines that keep a counter rather than
    /// an iterator.
    pub fn nth(self, attempt: u32, seed: u64) -> Duration {
        // The curve is flat from where it reaches its cap: bounding the walk there keeps a
        // long streak cheap.
        let steps = attempt.clamp(1, self.steps_to_cap()) as usize;
        self.seeded(seed).nth(steps - 1).unwrap_or(self.cap)
    }

    /// The number of the first delay at the cap (before jitter).
    fn steps_to_cap(self) -> u32 {
        let mut delay = self.first;
        let mut steps = 1;
        while delay < self.cap && steps < 64 {
            delay = delay.saturating_mul(2);
            steps += 1;
        }
        steps
    }
}

/// The delays along a [`Curve`], one per retry; they never run out.
#[derive(Debug)]
pub struct Delays {
    inner: <ExponentialBuilder as BackoffBuilder>::Backoff,
    cap: Duration,
}

impl Delays {
    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        // Unbounded attempts: `None` cannot happen, but the cap is the safe answer if it did.
        self.inner.next().unwrap_or(self.cap)
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_retry_curve_grows_is_capped_and_never_ends() {
        let delays: Vec<Duration> = RETRY.delays().take(40).collect();
        assert_eq!(delays.len(), 40);
        // Jitter adds up to one more base delay, so the bounds are doubled.
        assert!(delays[0] >= ms(100) && delays[0] <= ms(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(delays[39] >= Duration::from_secs(30));
    }

    #[test]
    fn a_steady_curve_doubles_to_its_cap_exactly() {
        let curve = Curve::steady(ms(1_000), ms(30_000));
        let delays: Vec<u128> = curve.delays().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        let nth: Vec<u128> = [0, 1, 2, 5, 6, 7, 1_000, u32::MAX]
            .map(|n| curve.nth(n, 0).as_millis())
            .to_vec();
        assert_eq!(
            nth,
            [1_000, 1_000, 2_000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn seeded_jitter_is_reproducible_and_within_one_more_delay() {
        let curve = Curve::jittered(ms(200), ms(2_000));
        let a: Vec<Duration> = curve.seeded(7).take(10).collect();
        let b: Vec<Duration> = curve.seeded(7).take(10).collect();
        assert_eq!(a, b);
        assert_ne!(a, curve.seeded(8).take(10).collect::<Vec<_>>());
        for (n, delay) in (1..).zip(&a) {
            let base = (ms(200) * (1 << (n - 1).min(4))).min(ms(2_000));
            assert!(*delay >= base && *delay <= base * 2, "{n}: {delay:?}");
        }
        // Up to the cap, the n-th delay is the seeded walk's; past it, the walk's first at the
        // cap.
        for n in 1..=5 {
            assert_eq!(curve.nth(n, 7), a[n as usize - 1], "{n}");
        }
        assert_eq!(curve.nth(9, 7), a[4]);
    }
}
