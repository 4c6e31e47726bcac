//! Start-up: a provider not heard from since start is retried after short jittered delays and
//! never opens its breaker; once it has answered, failures open it as usual.

use super::*;

/// A minute's recovery: any rejection longer than the start-up curve's 4 s would show it open.
fn minute() -> BreakerConfig {
    config(3, 60_000, 1, 1)
}

/// Fails once, then checks the rejection falls in `lo..=hi` ms and waits it out.
fn fail_and_wait(lo: u64, hi: u64) -> [Step; 3] {
    [FAIL, RejectedWithin(lo, hi), Advance(hi)]
}

#[test]
fn failures_before_the_first_answer_back_off_briefly_and_never_open() {
    let mut script = steps(&[
        &[Is(C)],
        &fail_and_wait(200, 400),
        &fail_and_wait(400, 800),
        &fail_and_wait(800, 1_600),
        &fail_and_wait(1_600, 3_200),
    ]);
    // Far past the failure threshold: the delay stays at its cap, the breaker closed.
    for _ in 0..20 {
        script.extend(fail_and_wait(2_000, 4_000));
    }
    script.extend([Is(C), Counts(24, 0)]);
    let r = fresh(minute(), &script);
    assert!(r.transitions.is_empty(), "{:?}", r.path());
    assert!(r.breaker.unreachable());
    assert!(!r.breaker.answered());
    assert_eq!(r.breaker.snapshot().opened_at_wall_ms, None);

    // It comes up: the first answer ends start-up; from then on it is a provider that was
    // working, and three failures open it for the whole recovery timeout.
    let r = r.steps(&[OK, Counts(0, 0), OK, FAIL, FAIL, Is(C), FAIL, Is(O)]);
    assert!(r.breaker.answered() && !r.breaker.unreachable());
    let r = r.steps(&[Rejected(60_000), Advance(59_999), Is(O), Advance(1), Is(H)]);
    assert_eq!(r.path(), [(C, O)]);
}

#[test]
fn a_fresh_breaker_grants_at_once_and_is_not_unreachable_before_a_failure() {
    let r = fresh(minute(), &[Hold, Hold, Hold]);
    assert!(!r.breaker.unreachable());
    // A neutral answer or a rate limit is no failure: no start-up delay.
    let r = fresh(minute(), &[NEUTRAL, NEUTRAL, Hold]);
    assert!(!r.breaker.unreachable());
}

#[test]
fn failures_of_requests_sent_together_lengthen_the_delay_once() {
    // The listener, the idle probe and the range sync all fail at start.
    let fail = Finish(Outcome::Failure);
    let r = fresh(
        minute(),
        &[Hold, Hold, Hold, fail, fail, fail, RejectedWithin(200, 400)],
    );
    let r = r.steps(&[Advance(400), FAIL, RejectedWithin(400, 800), Counts(4, 0)]);
    assert_eq!(r.path(), []);
}

#[test]
fn a_late_answer_ends_start_up_at_once() {
    let r = fresh(
        minute(),
        &[
            Hold,
            FAIL,
            RejectedWithin(200, 400),
            Finish(Outcome::Success),
        ],
    );
    assert!(r.breaker.answered());
    r.steps(&[Counts(0, 0), Hold]);
}

#[test]
fn a_rate_limit_longer_than_the_start_up_delay_wins() {
    let r = fresh(
        minute(),
        &[Hold, FAIL, Finish(limited(Some(5_000))), Rejected(5_000)],
    );
    assert!(
        !r.breaker.answered(),
        "a rate limit is no answer to count on"
    );
}

#[test]
fn a_breaker_restored_closed_starts_over_in_its_start_up_phase() {
    // Two failures short of three before the restart: one more does not open it, since the
    // provider has not answered in this run.
    let closed = Snapshot {
        state: C,
        consecutive_failures: 2,
        consecutive_successes: 0,
        opened_at_wall_ms: Some(WALL0 - 1_000),
    };
    let clock = ManualClock::new(WALL0);
    let r = Run::resume(Breaker::restore(minute(), closed, &clock), clock);
    assert!(!r.breaker.unreachable(), "not tried yet in this run");
    let r = r.steps(&[FAIL, Is(C), Counts(3, 0), RejectedWithin(200, 400)]);
    let r = r.steps(&[Advance(400), OK, FAIL, FAIL, FAIL, Is(O)]);
    assert_eq!(r.path(), [(C, O)]);
}

#[test]
fn a_breaker_restored_half_open_reopens_on_a_failed_probe() {
    let half_open = Snapshot {
        state: H,
        consecutive_failures: 3,
        consecutive_successes: 0,
        opened_at_wall_ms: Some(WALL0 - 70_000),
    };
    let clock = ManualClock::new(WALL0);
    let r = Run::resume(Breaker::restore(minute(), half_open, &clock), clock);
    let r = r.steps(&[FAIL, Is(O), Rejected(60_000)]);
    assert_eq!(r.path(), [(H, O)]);
}
