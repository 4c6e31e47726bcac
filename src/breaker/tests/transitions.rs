//! Closed → open → half-open → closed and back: thresholds, timings, probe bounds, settings.

use super::*;

#[test]
fn closed_opens_at_exactly_the_failure_threshold() {
    let r = run(cfg(), &[FAIL, FAIL, Is(C), Counts(2, 0), FAIL, Is(O)]);
    assert_eq!(r.path(), [(C, O)]);
    let opened = Transition {
        from: C,
        to: O,
        consecutive_failures: 3,
        at_wall_ms: WALL0,
    };
    assert_eq!(r.transitions[0], opened);
    let snapshot = Snapshot {
        state: O,
        consecutive_failures: 3,
        consecutive_successes: 0,
        opened_at_wall_ms: Some(WALL0),
    };
    assert_eq!(r.breaker.snapshot(), snapshot);
}

#[test]
fn a_success_resets_the_failure_count() {
    let r = run(
        cfg(),
        &[FAIL, FAIL, OK, Counts(0, 0), FAIL, FAIL, Is(C), FAIL, Is(O)],
    );
    assert_eq!(r.path(), [(C, O)]);
}

#[test]
fn open_rejects_with_the_time_left_until_half_open() {
    let script = steps(&[
        &TRIP,
        &[Rejected(10_000), Advance(2_500), Rejected(7_500)],
        &[Advance(7_499), Rejected(1), Is(O)],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O)]);
}

#[test]
fn open_half_opens_exactly_at_the_recovery_timeout() {
    let script = steps(&[&TRIP, &[Advance(9_999), Is(O), Advance(1), Is(H)]]);
    let r = run(cfg(), &script);
    // Seen by `state()`, not yet made: nothing to persist until a call makes it.
    assert_eq!(r.path(), [(C, O)]);
    assert_eq!(r.breaker.snapshot().state, O);

    let r = r.steps(&[Hold]);
    assert_eq!(r.path(), [(C, O), (O, H)]);
    let half_opened = Transition {
        from: O,
        to: H,
        consecutive_failures: 3,
        at_wall_ms: WALL0 + 10_000,
    };
    assert_eq!(r.transitions[1], half_opened);
    assert_eq!(r.breaker.snapshot().state, H);
}

#[test]
fn tick_makes_the_half_open_change_once() {
    let script = steps(&[&TRIP, &[Advance(10_000)]]);
    let mut r = run(cfg(), &script);
    let made = r.breaker.tick(&r.clock).map(|t| (t.from, t.to));
    assert_eq!(made, Some((O, H)));
    assert_eq!(r.breaker.tick(&r.clock), None);
    let (permit, transition) = r.breaker.try_acquire(&r.clock);
    assert!(matches!(permit, Permit::Probe(_)), "{permit:?}");
    assert_eq!(transition, None);
}

#[test]
fn half_open_lets_at_most_max_probes_through() {
    for probes in [1_u32, 2, 5] {
        let held = vec![Hold; probes as usize];
        // Freeing the oldest probe lets exactly one more through; the next rejection waits for
        // the oldest still in flight.
        let oldest_left = if probes == 1 { 10_000 } else { 9_000 };
        let script = steps(&[
            &TRIP,
            &[Advance(10_000)],
            &held,
            &[Rejected(10_000), Advance(1_000), Rejected(9_000)],
            &[Finish(Outcome::Neutral), Hold, Rejected(oldest_left), Is(H)],
        ]);
        let r = run(config(3, 10_000, 2, probes), &script);
        assert_eq!(r.path(), [(C, O), (O, H)], "{probes} probes");
    }
}

#[test]
fn half_open_closes_after_the_success_threshold() {
    let script = steps(&[
        &TRIP,
        &[
            Advance(10_000),
            OK,
            OK,
            Is(H),
            Counts(0, 2),
            OK,
            Is(C),
            Counts(0, 0),
        ],
        // Closed again: a full threshold of failures to reopen.
        &[FAIL, FAIL, Is(C), FAIL, Is(O)],
    ]);
    let r = run(config(3, 10_000, 3, 1), &script);
    assert_eq!(r.path(), [(C, O), (O, H), (H, C), (C, O)]);
    assert_eq!(r.transitions[2].consecutive_failures, 0);
    assert_eq!(r.transitions[2].at_wall_ms, WALL0 + 10_000);
}

#[test]
fn a_half_open_failure_reopens_with_a_fresh_opened_at() {
    let script = steps(&[
        &TRIP,
        &[Advance(10_000), OK, Counts(0, 1), Hold, Advance(300)],
        &[
            Finish(Outcome::Failure),
            Is(O),
            Counts(1, 0),
            Rejected(10_000),
        ],
        &[Advance(9_999), Is(O), Advance(1), Is(H)],
    ]);
    let r = run(cfg(), &script);
    assert_eq!(r.path(), [(C, O), (O, H), (H, O)]);
    assert_eq!(r.transitions[2].at_wall_ms, WALL0 + 10_300);
    assert_eq!(r.breaker.snapshot().opened_at_wall_ms, Some(WALL0 + 10_300));
}

#[test]
fn recording_a_rejected_permit_does_nothing() {
    let mut r = run(cfg(), &TRIP);
    let before = r.breaker.snapshot();
    for outcome in [Outcome::Failure, Outcome::Success, limited(Some(60_000))] {
        let (permit, _) = r.breaker.try_acquire(&r.clock);
        assert!(!permit.is_granted());
        assert_eq!(r.breaker.record(permit, outcome, &r.clock), None);
    }
    assert_eq!(r.breaker.snapshot(), before);
    r.steps(&[Rejected(10_000)]);
}

#[test]
fn per_provider_settings_are_honoured() {
    let cases: Vec<(&str, BreakerConfig, Vec<Step>, Path)> = vec![
        (
            "failure threshold 1",
            config(1, 10_000, 2, 1),
            vec![FAIL, Is(O)],
            vec![(C, O)],
        ),
        (
            "failure threshold 1000",
            config(1_000, 10_000, 2, 1),
            steps(&[&[FAIL; 999], &[Is(C), Counts(999, 0), FAIL, Is(O)]]),
            vec![(C, O)],
        ),
        (
            "success threshold 1",
            config(1, 10_000, 1, 1),
            vec![FAIL, Advance(10_000), OK, Is(C)],
            vec![(C, O), (O, H), (H, C)],
        ),
        (
            "success threshold 5, 5 probes at once",
            config(1, 10_000, 5, 5),
            steps(&[
                &[FAIL, Advance(10_000)],
                &[Hold; 5],
                &[Rejected(10_000)],
                &[Finish(Outcome::Success); 4],
                &[Is(H), Finish(Outcome::Success), Is(C)],
            ]),
            vec![(C, O), (O, H), (H, C)],
        ),
        (
            "recovery 1 ms",
            config(1, 1, 1, 1),
            vec![FAIL, Rejected(1), Advance(1), Is(H)],
            vec![(C, O)],
        ),
        (
            "zero settings act as their minimum",
            config(0, 0, 0, 0),
            vec![
                FAIL,
                Is(O),
                Rejected(1),
                Advance(1),
                Hold,
                Rejected(1),
                Finish(Outcome::Success),
                Is(C),
            ],
            vec![(C, O), (O, H), (H, C)],
        ),
    ];
    for (name, config, script, path) in cases {
        assert_eq!(run(config, &script).path(), path, "{name}");
    }
}

#[test]
fn breakers_sharing_a_clock_keep_their_own_settings() {
    let clock = ManualClock::new(WALL0);
    let strict = Run::resume(Breaker::new(config(1, 5_000, 1, 1)), clock.clone());
    let lenient = Run::resume(Breaker::new(config(5, 20_000, 1, 1)), clock.clone());
    let strict = strict.steps(&[OK, FAIL, Is(O)]);
    let lenient = lenient.steps(&[OK, FAIL, FAIL, FAIL, FAIL, Is(C), FAIL, Is(O)]);
    clock.advance(Duration::from_millis(5_000));
    let strict = strict.steps(&[Is(H)]);
    let lenient = lenient.steps(&[Is(O), Rejected(15_000)]);
    assert_eq!(strict.path(), [(C, O)]);
    assert_eq!(lenient.path(), [(C, O)]);
}
