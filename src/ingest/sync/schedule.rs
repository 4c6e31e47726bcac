//! Which ranges the range sync asks for, and when: the ranges in flight (handed on in the order
//! asked), the range limit learned from refusals, whose turn it is to be asked first, the
//! provider to avoid, the linger of short ranges ([`Schedule`]); and the reorg hints waiting
//! for their check ([`Hints`]). Bookkeeping only: the run loop spawns the fetches and reads the
//! answers.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::ProviderIndex;

/// Blocks per range at most (and at start, before any provider refused one).
pub const MAX_RANGE: u64 = 256;
/// What one range's answer should weigh, in bytes of JSON: a range of dense blocks is cut to
/// about this (from the bytes per block of the answers so far), so the ranges in flight and
/// queued for the aggregator hold a bounded amount of memory whatever the chain's density.
/// Large enough that the per-request cost stays small beside the answer's.
pub const RANGE_BYTES: u64 = 4 << 20;
/// Weight of the newest answer in the bytes-per-block average.
const DENSITY_WEIGHT: f64 = 0.5;
/// Ranges in flight at once, whatever the number of providers: with one provider the next
/// ranges are fetched while the first is written, not after; each answer is held until handed
/// on.
const MAX_IN_FLIGHT: usize = 3;
/// How long a range shorter than the limit waits after the previous range was asked for.
pub const LINGER: Duration = Duration::from_millis(100);
/// Least time between two checks of reorg hints.
pub const HINT_INTERVAL: Duration = Duration::from_millis(500);

/// A range to ask for: `from..=to`, the `turn` that picks the provider asked first, and the
/// provider to ask last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub from: u64,
    pub to: u64,
    pub turn: usize,
    pub avoid: Option<ProviderIndex>,
}

impl Ask {
    /// Blocks in the range.
    pub fn len(&self) -> u64 {
        self.to - self.from + 1
    }
}

/// The ranges asked for and not yet handed on, each with the task fetching it (`R` its answer).
#[derive(Debug)]
pub struct Schedule<R> {
    /// The first block not yet asked for; `None` until the sync knows where to start.
    scheduled: Option<u64>,
    in_flight: VecDeque<(Ask, JoinHandle<R>)>,
    max_in_flight: usize,
    /// Blocks per range the providers accept (at most [`MAX_RANGE`]).
    span: u64,
    /// Bytes per block of the answers so far (a moving average); `None` before the first.
    density: Option<f64>,
    turn: usize,
    /// The provider whose answer failed the last range: asked last until a range succeeds.
    avoid: Option<ProviderIndex>,
    /// When the last range was asked for (a short range lingers after it).
    asked_at: Option<Instant>,
}

impl<R> Schedule<R> {
    /// A schedule starting at `start`.
    pub fn new(start: Option<u64>) -> Schedule<R> {
        Schedule {
            scheduled: start,
            in_flight: VecDeque::new(),
            max_in_flight: MAX_IN_FLIGHT,
            span: MAX_RANGE,
            density: None,
            turn: 0,
            avoid: None,
            asked_at: None,
        }
    }

    /// Blocks per range asked for: the providers' limit, cut so that an answer weighs about
    /// [`RANGE_BYTES`] at the density seen so far.
    pub fn span(&self) -> u64 {
        let by_bytes = self.density.map_or(u64::MAX, |per_block| {
            (RANGE_BYTES as f64 / per_block.max(1.0)) as u64
        });
        self.span.min(by_bytes).max(1)
    }

    /// A range of `blocks` blocks was answered in `bytes` bytes of JSON.
    pub fn answered(&mut self, blocks: u64, bytes: u64) {
        let per_block = bytes as f64 / blocks.max(1) as f64;
        self.density = Some(match self.density {
            Some(avg) => avg + DENSITY_WEIGHT * (per_block - avg),
            None => per_block,
        });
    }

    /// The first block not yet asked for.
    pub fn scheduled(&self) -> Option<u64> {
        self.scheduled
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Asks for ranges up to `target` while there is room, each through `fetch`: full ranges at
    /// once, a short one only when nothing is in flight before it and, while live heads arrive,
    /// it has waited [`LINGER`] for company. When a short range waits, when to look again.
    pub fn ask_all(
        &mut self,
        target: u64,
        now: Instant,
        live: bool,
        mut fetch: impl FnMut(Ask) -> JoinHandle<R>,
    ) -> Option<Instant> {
        let mut from = self.scheduled?;
        let span = self.span();
        while self.in_flight.len() < self.max_in_flight && from <= target {
            let to = target.min(from.saturating_add(span - 1));
            if to - from + 1 < span {
                let ready_at = self.asked_at.map_or(now, |at| at + LINGER);
                if !self.in_flight.is_empty() || (live && now < ready_at) {
                    return Some(ready_at.max(now + Duration::from_millis(1)));
                }
            }
            let ask = Ask {
                from,
                to,
                turn: self.turn,
                avoid: self.avoid,
            };
            self.in_flight.push_back((ask, fetch(ask)));
            self.turn = self.turn.wrapping_add(1);
            from = to + 1;
            self.scheduled = Some(from);
            self.asked_at = Some(now);
        }
        None
    }

    /// The task of the range to hand on next.
    pub fn front(&mut self) -> Option<&mut JoinHandle<R>> {
        self.in_flight.front_mut().map(|(_, task)| task)
    }

    /// Takes the range to hand on next off the schedule (its task has answered).
    pub fn pop(&mut self) -> Option<Ask> {
        self.in_flight.pop_front().map(|(ask, _)| ask)
    }

    /// A range was handed on: the provider avoided may be asked first again.
    pub fn handed_on(&mut self) {
        self.avoid = None;
    }

    /// Everything in flight is dropped and asked for again from `next`.
    pub fn restart(&mut self, next: u64) {
        for (_, task) in self.in_flight.drain(..) {
            task.abort();
        }
        self.scheduled = Some(next);
    }

    /// `ask` failed, `by` the answer of that provider if one answered: it and everything after
    /// it are asked for again from `next`.
    pub fn failed(&mut self, ask: &Ask, by: Option<ProviderIndex>, next: u64) {
        self.restart(next);
        // The retry starts at the next provider. Turns otherwise advance once per range asked
        // for, so with as many ranges in flight as providers, every retry of the failed range
        // would go to the provider that just failed it (one answering well-formed but wrong
        // data, say, forever).
        self.turn = ask.turn.wrapping_add(1);
        // And never of the provider whose answer failed it first: the rotation is over the
        // healthy providers, and when that one is the only healthy one (the others' heads
        // unpolled for a while), it would be asked again and again.
        self.avoid = by.or(self.avoid);
    }

    /// Blocks per range the providers accept now (see `ProviderSet::range_limit`).
    pub fn set_limit(&mut self, limit: u64) {
        self.span = limit.clamp(1, MAX_RANGE);
    }
}

/// Reorg hints from the aggregator: the lowest height hinted since the last check, checked at
/// most once per [`HINT_INTERVAL`] (a provider stuck on an old branch keeps sending stale
/// heads, and one check answers them all).
#[derive(Debug, Default)]
pub struct Hints {
    pending: Option<u64>,
    checked: Option<Instant>,
}

impl Hints {
    pub fn add(&mut self, at: u64) {
        self.pending = Some(self.pending.map_or(at, |p| p.min(at)));
    }

    /// The hinted height to check now, if one is pending and due.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .checked
            .is_none_or(|checked| now >= checked + HINT_INTERVAL);
        if !due {
            return None;
        }
        let at = self.pending.take()?;
        self.checked = Some(now);
        Some(at)
    }

    /// When a pending hint becomes due, if one waits.
    pub fn wake(&self) -> Option<Instant> {
        self.pending.and(self.checked).map(|at| at + HINT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch that never answers (until aborted).
    fn hang(_: Ask) -> JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    fn asked(schedule: &Schedule<()>) -> Vec<(u64, u64, usize)> {
        schedule
            .in_flight
            .iter()
            .map(|(a, _)| (a.from, a.to, a.turn))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn full_ranges_go_at_once_up_to_the_in_flight_limit() {
        let mut schedule = Schedule::new(Some(100));
        let now = Instant::now();
        assert_eq!(schedule.ask_all(100 + 4 * MAX_RANGE, now, true, hang), None);
        assert_eq!(
            asked(&schedule),
            [(100, 355, 0), (356, 611, 1), (612, 867, 2)],
            "three ranges in flight, whatever the number of providers"
        );
        assert_eq!(schedule.scheduled(), Some(868));
        assert_eq!(schedule.pop().map(|a| a.from), Some(100));
        assert_eq!(schedule.ask_all(2000, now, true, hang), None);
        assert_eq!(
            asked(&schedule),
            [(356, 611, 1), (612, 867, 2), (868, 1123, 3)]
        );
        assert_eq!(
            Schedule::<()>::new(None).ask_all(1000, now, true, hang),
            None,
            "nothing is asked before the start is known"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_range_lingers_for_company_while_heads_stream() {
        let mut schedule = Schedule::new(Some(10));
        let t0 = Instant::now();
        assert_eq!(
            schedule.ask_all(12, t0, true, hang),
            None,
            "nothing asked yet: it goes"
        );
        assert_eq!(asked(&schedule), [(10, 12, 0)]);
        schedule.pop();

        tokio::time::advance(Duration::from_millis(30)).await;
        let wake = schedule.ask_all(15, Instant::now(), true, hang);
        assert_eq!(
            wake,
            Some(t0 + LINGER),
            "waits until LINGER after the last ask"
        );
        assert!(schedule.is_empty());

        tokio::time::advance(LINGER).await;
        assert_eq!(schedule.ask_all(15, Instant::now(), true, hang), None);
        assert_eq!(asked(&schedule), [(13, 15, 1)]);
        let wake = schedule.ask_all(16, Instant::now(), false, hang);
        assert_eq!(
            wake,
            Some(Instant::now() + LINGER),
            "never behind another range in flight, live or not"
        );

        let mut polled = Schedule::<()>::new(Some(10));
        polled.ask_all(12, Instant::now(), false, hang);
        polled.pop();
        assert_eq!(
            polled.ask_all(15, Instant::now(), false, hang),
            None,
            "without live heads a short range goes at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_range_is_retried_at_the_next_turn_avoiding_who_failed_it() {
        let mut schedule = Schedule::new(Some(0));
        let now = Instant::now();
        schedule.ask_all(3 * MAX_RANGE - 1, now, false, hang);
        let tasks: Vec<_> = schedule
            .in_flight
            .iter()
            .map(|(_, t)| t.abort_handle())
            .collect();
        let first = schedule.pop().expect("in flight");
        schedule.failed(&first, Some(2), first.from);
        tokio::task::yield_now().await;
        assert!(
            tasks[1..].iter().all(|t| t.is_finished()),
            "later ranges aborted"
        );
        assert!(schedule.is_empty());
        schedule.ask_all(MAX_RANGE - 1, now, false, hang);
        let retry = schedule.pop().expect("asked again");
        assert_eq!((retry.from, retry.turn, retry.avoid), (0, 1, Some(2)));
        schedule.failed(&retry, None, 0);
        schedule.ask_all(MAX_RANGE - 1, now, false, hang);
        assert_eq!(
            schedule.pop().map(|a| a.avoid),
            Some(Some(2)),
            "kept while no answer is blamed"
        );
        schedule.handed_on();
        schedule.ask_all(2 * MAX_RANGE - 1, now, false, hang);
        assert_eq!(schedule.pop().map(|a| a.avoid), Some(None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_providers_limit_caps_ranges_and_never_below_one() {
        let mut schedule = Schedule::<()>::new(Some(0));
        schedule.set_limit(128);
        assert_eq!(schedule.span(), 128);
        schedule.set_limit(10 * MAX_RANGE);
        assert_eq!(schedule.span(), MAX_RANGE, "never above MAX_RANGE");
        schedule.set_limit(0);
        assert_eq!(schedule.span(), 1);
        schedule.ask_all(3, Instant::now(), false, hang);
        assert_eq!(asked(&schedule), [(0, 0, 0), (1, 1, 1), (2, 2, 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn dense_blocks_make_shorter_ranges_sparse_ones_the_full_limit() {
        let mut schedule = Schedule::<()>::new(Some(0));
        assert_eq!(schedule.span(), MAX_RANGE, "nothing answered yet");
        // 40 KiB a block: about RANGE_BYTES an answer is 102 blocks.
        schedule.answered(MAX_RANGE, MAX_RANGE * 40 * 1024);
        assert_eq!(schedule.span(), RANGE_BYTES / (40 * 1024));
        schedule.ask_all(10_000, Instant::now(), false, hang);
        assert_eq!(
            asked(&schedule),
            [(0, 101, 0), (102, 203, 1), (204, 305, 2)]
        );
        // The average follows the chain: sparse blocks bring the limit back.
        for _ in 0..20 {
            schedule.answered(102, 102 * 600);
        }
        assert_eq!(schedule.span(), MAX_RANGE);
        // The providers' limit still caps it, whatever the bytes allow.
        schedule.set_limit(32);
        assert_eq!(schedule.span(), 32);
        schedule.answered(1, u64::MAX);
        assert_eq!(schedule.span(), 1, "never below one block");
    }

    #[tokio::test(start_paused = true)]
    async fn hints_are_checked_lowest_first_at_most_once_per_interval() {
        let mut hints = Hints::default();
        let t0 = Instant::now();
        assert_eq!(hints.due(t0), None);
        hints.add(50);
        hints.add(40);
        hints.add(45);
        assert_eq!(hints.wake(), None, "never checked: due at once");
        assert_eq!(hints.due(t0), Some(40));
        assert_eq!(hints.due(t0), None);
        hints.add(60);
        assert_eq!(hints.wake(), Some(t0 + HINT_INTERVAL));
        tokio::time::advance(HINT_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(hints.due(Instant::now()), None);
        tokio::time::sleep_until(t0 + HINT_INTERVAL).await;
        assert_eq!(hints.due(Instant::now()), Some(60));
        assert_eq!(hints.wake(), None, "nothing pending");
    }
}
