//! Time as the breaker sees it: a monotonic instant for every duration it measures and a wall
//! clock for what it persists, injected so tests move time by hand.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The breaker's two readings of time.
pub trait Clock: Send + Sync {
    /// Monotonic now: recovery timeouts, cool-downs and probe ages are measured with it, so a
    /// wall-clock step (NTP, a suspended laptop) cannot open or close anything early.
    fn now(&self) -> Instant;

    /// Milliseconds since the Unix epoch: the only reading that survives a restart, hence what
    /// `opened_at` is stored in.
    fn wall_ms(&self) -> i64;
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> i64 {
        // Before 1970 only on a badly set clock; negative rather than a panic.
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }
}

/// A clock that moves only when told. Clones share one time, so a test keeps a clone and
/// advances the clock the code under test reads. [`ManualClock::advance`] moves both readings
/// together; [`ManualClock::set_wall_ms`] moves only the wall clock (a restart, an NTP step).
#[derive(Debug, Clone)]
pub struct ManualClock {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    // A std mutex is enough: it guards two integers for a few arithmetic operations and is
    // never held across an await.
    time: Mutex<Time>,
}

#[derive(Debug, Clone, Copy)]
struct Time {
    /// Monotonic time since `origin`.
    elapsed: Duration,
    /// Wall milliseconds at `origin`; the wall clock reads `wall_origin_ms + elapsed`.
    wall_origin_ms: i64,
}

impl ManualClock {
    /// A clock whose wall reading starts at `wall_ms` (milliseconds since the Unix epoch).
    pub fn new(wall_ms: i64) -> ManualClock {
        ManualClock {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                time: Mutex::new(Time {
                    elapsed: Duration::ZERO,
                    wall_origin_ms: wall_ms,
                }),
            }),
        }
    }

    /// Moves both the monotonic and the wall clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut time = self.lock();
        time.elapsed = time.elapsed.saturating_add(by);
    }

    /// Sets the wall clock to `wall_ms` without moving monotonic time.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        let mut time = self.lock();
        time.wall_origin_ms = wall_ms.saturating_sub(millis(time.elapsed));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Time> {
        // The guarded value is always consistent (plain stores), so a panic elsewhere while
        // holding the lock leaves nothing to repair.
        self.shared
            .time
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        later(self.shared.origin, self.lock().elapsed)
    }

    fn wall_ms(&self) -> i64 {
        let time = *self.lock();
        time.wall_origin_ms.saturating_add(millis(time.elapsed))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `now + by`, without the panic `Instant + Duration` has on overflow: durations come from
/// config files and `Retry-After` headers, so absurd values must not crash the pool.
pub(super) fn later(now: Instant, by: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(by)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::new(1_000);
        let start = clock.now();
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now() - start, Duration::from_millis(1_500));
        assert_eq!(clock.wall_ms(), 2_500);
    }

    #[test]
    fn manual_wall_clock_can_jump_alone() {
        let clock = ManualClock::new(1_000);
        let start = clock.now();
        clock.advance(Duration::from_millis(500));
        clock.set_wall_ms(-7);
        assert_eq!(clock.wall_ms(), -7);
        assert_eq!(clock.now() - start, Duration::from_millis(500));
        clock.advance(Duration::from_millis(10));
        assert_eq!(clock.wall_ms(), 3);
    }

    #[test]
    fn sub_millisecond_advances_add_up_on_the_wall_clock() {
        let clock = ManualClock::new(0);
        clock.advance(Duration::from_micros(600));
        clock.advance(Duration::from_micros(600));
        assert_eq!(clock.wall_ms(), 1);
    }

    #[test]
    fn system_clock_wall_time_is_after_2020() {
        assert!(SystemClock.wall_ms() > 1_577_836_800_000);
        assert!(SystemClock.now() <= Instant::now());
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(later(now, Duration::MAX) > now);
    }
}
