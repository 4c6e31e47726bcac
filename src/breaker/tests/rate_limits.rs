//! Rate limits cool a provider down and never trip it; neutral outcomes change nothing.

use super::*;

#[test]
fn rate_limits_never_trip_the_breaker() {
    // Even with a threshold of 1, in closed...
    let many = 1_000;
    let script = steps(&[
        &vec![Hold; many],
        &vec![Finish(limited(None)); many],
        &[
            Is(C),
            Counts(0, 0),
            Rejected(30_000),
            Advance(30_000),
            OK,
            Is(C),
        ],
    ]);
    assert_eq!(run(config(1, 10_000, 2, 1), &script).path(), []);

    // ...and in half-open, where any failure would reopen.
    let script = steps(&[
        &TRIP,
        &[Advance(10_000), Call(limited(Some(0))), Is(H), Counts(3, 0)],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H)]);
}

#[test]
fn a_cooldown_honours_retry_after() {
    let script = [
        Call(limited(Some(7_000))),
        Rejected(7_000),
        Advance(6_999),
        Rejected(1),
        Advance(1),
        OK,
        Is(C),
    ];
    assert_eq!(run(cfg(), &script).path(), []);
}

#[test]
fn the_cooldown_doubles_without_retry_after_and_a_success_resets_it() {
    let limit = Call(limited(None));
    let script = [
        limit,
        Rejected(1_000),
        Advance(1_000),
        limit,
        Rejected(2_000),
        Advance(2_000),
        limit,
        Rejected(4_000),
        Advance(4_000),
        OK,
        limit,
        Rejected(1_000),
    ];
    run(cfg(), &script);
}

#[test]
fn rate_limits_are_transparent_to_the_failure_count() {
    let script = [
        FAIL,
        FAIL,
        Call(limited(Some(0))),
        Counts(2, 0),
        FAIL,
        Is(O),
    ];
    assert_eq!(run(cfg(), &script).path(), [(C, O)]);
}

#[test]
fn a_rate_limited_probe_frees_its_slot_without_counting() {
    let script = steps(&[
        &TRIP,
        &[Advance(10_000), OK, Counts(0, 1), Call(limited(Some(500)))],
        &[Is(H), Counts(0, 1), Rejected(500), Advance(500), OK, Is(C)],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H), (H, C)]);
}

#[test]
fn an_open_breaker_rejects_for_the_longer_of_recovery_and_cooldown() {
    // (Retry-After in ms, rejection 1 s after opening)
    for (retry_after, want) in [(20_000, 20_000), (2_000, 9_000)] {
        let script = steps(&[
            &[Hold],
            &TRIP,
            &[Advance(1_000), Finish(limited(Some(retry_after)))],
            &[Is(O), Rejected(want)],
        ]);
        run(cfg(), &script);
    }
    // A cool-down outlasting the open period holds the probes back after half-opening.
    let script = steps(&[
        &[Hold],
        &TRIP,
        &[Finish(limited(Some(25_000))), Advance(10_000), Is(H)],
        &[Rejected(15_000), Advance(15_000), Hold],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H)]);
}

#[test]
fn neutral_outcomes_change_nothing() {
    let script = steps(&[
        &[
            FAIL,
            NEUTRAL,
            NEUTRAL,
            NEUTRAL,
            Counts(1, 0),
            Is(C),
            FAIL,
            FAIL,
            Is(O),
        ],
        // Half-open with one probe slot: each neutral call frees it for the next.
        &[
            Advance(10_000),
            OK,
            NEUTRAL,
            NEUTRAL,
            Counts(0, 1),
            Is(H),
            OK,
            Is(C),
        ],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H), (H, C)]);
}
