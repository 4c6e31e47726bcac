//! Restart policy as pure values: how long to wait before the next run ([`RestartBackoff`]) and
//! when a critical task has died too often ([`CrashWindow`]). Time comes in as arguments, so
//! both are tested without a runtime.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backoff::{Curve, Delays};

/// The restart delay curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The first delay is in `[min_delay, 2 * min_delay)`.
    pub min_delay: Duration,
    /// No delay reaches this.
    pub max_delay: Duration,
    /// A run that lasted this long was healthy: the next delay starts the curve again.
    pub stable_after: Duration,
    /// Fixes the jitter, for tests; `None` in production so restarts of many tasks that died
    /// together (a provider outage) spread out instead of hitting the provider in step.
    pub jitter_seed: Option<u64>,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            jitter_seed: None,
        }
    }
}

impl BackoffPolicy {
    fn delays(&self) -> Delays {
        // Jitter adds a random fraction of the current delay, giving `[d, 2d)`; capping the
        // un-jittered curve at half of `max_delay` keeps every delay below it while delays at
        // the cap are still spread.
        let curve = Curve::jittered(self.min_delay, (self.max_delay / 2).max(self.min_delay));
        match self.jitter_seed {
            Some(seed) => curve.seeded(seed),
            None => curve.delays(),
        }
    }
}

/// One task's position on the curve.
#[derive(Debug)]
pub(super) struct RestartBackoff {
    policy: BackoffPolicy,
    delays: Delays,
}

impl RestartBackoff {
    pub(super) fn new(policy: BackoffPolicy) -> RestartBackoff {
        RestartBackoff {
            delays: policy.delays(),
            policy,
        }
    }

    /// The delay before the next run, given how long the run that just ended lasted.
    pub(super) fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.stable_after {
            self.delays = self.policy.delays();
        }
        self.delays.next_delay()
    }
}

/// Recent deaths of one critical task, to tell "flapping" from "crashed once a day".
#[derive(Debug)]
pub(super) struct CrashWindow {
    window: Duration,
    max_restarts: u32,
    /// At most `max_restarts + 1` instants, oldest first.
    recent: VecDeque<Instant>,
}

impl CrashWindow {
    pub(super) fn new(max_restarts: u32, window: Duration) -> CrashWindow {
        CrashWindow {
            window,
            max_restarts,
            recent: VecDeque::new(),
        }
    }

    /// Records a death at `now`; true if restarting would exceed `max_restarts` within the
    /// window, i.e. this is death number `max_restarts + 1` in it.
    pub(super) fn exhausted(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) < self.window {
                break;
            }
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let limit = usize::try_from(self.max_restarts).unwrap_or(usize::MAX);
        if self.recent.len() > limit.saturating_add(1) {
            self.recent.pop_front();
        }
        self.recent.len() > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded() -> BackoffPolicy {
        BackoffPolicy {
            jitter_seed: Some(7),
            ..BackoffPolicy::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_with_jitter_and_stay_below_the_cap() {
        let mut backoff = RestartBackoff::new(seeded());
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next_delay(ms(0))).collect();
        // Un-jittered 100, 200, 400, ... ms up to 15 s; jitter adds less than one more of each.
        for (n, delay) in delays.iter().enumerate().take(8) {
            let base = ms(100) * (1 << n);
            assert!(*delay >= base && *delay < base * 2, "delay {n}: {delay:?}");
        }
        assert!(delays.windows(2).take(7).all(|w| w[0] < w[1]), "{delays:?}");
        for delay in &delays[8..] {
            assert!(*delay >= Duration::from_secs(15) && *delay < Duration::from_secs(30));
        }
    }

    #[test]
    fn a_stable_run_starts_the_curve_again() {
        let mut backoff = RestartBackoff::new(seeded());
        for _ in 0..6 {
            backoff.next_delay(ms(10));
        }
        assert!(backoff.next_delay(Duration::from_secs(59)) >= ms(6_400));
        let reset = backoff.next_delay(Duration::from_secs(60));
        assert!(reset >= ms(100) && reset < ms(200), "{reset:?}");
        assert!(backoff.next_delay(ms(10)) >= ms(200));
    }

    #[test]
    fn unseeded_jitter_still_respects_the_bounds() {
        let mut backoff = RestartBackoff::new(BackoffPolicy::default());
        let first = backoff.next_delay(ms(0));
        assert!(first >= ms(100) && first < ms(200));
    }

    #[test]
    fn crash_window_counts_deaths_within_the_window_only() {
        // (ms since start of each death, exhausted?) with 2 restarts allowed per 10 s.
        let script: &[(u64, bool)] = &[
            (0, false),
            (1_000, false),
            (2_000, true),
            // The deaths at 0 and 1 000 have left the window by 11 001, the one at 2 000 by 12 500.
            (11_001, false),
            (12_500, false),
            (13_000, true),
            (30_000, false),
        ];
        let start = Instant::now();
        let mut window = CrashWindow::new(2, Duration::from_secs(10));
        for &(at, expected) in script {
            assert_eq!(
                window.exhausted(start + ms(at)),
                expected,
                "death at {at} ms"
            );
            assert!(window.recent.len() <= 3);
        }
    }

    #[test]
    fn zero_restarts_allowed_fails_on_the_first_death() {
        let mut window = CrashWindow::new(0, Duration::from_secs(60));
        assert!(window.exhausted(Instant::now()));
    }
}
