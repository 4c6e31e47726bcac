//! Outcomes of permits granted before the last transition, and probes never answered.

use super::*;

#[test]
fn late_answers_to_permits_granted_while_closed_count_for_nothing() {
    // Once open: no count, no fresh `opened_at`, no shorter or longer wait.
    let script = steps(&[
        &[Hold, Hold],
        &TRIP,
        &[
            Advance(4_000),
            Finish(Outcome::Failure),
            Finish(Outcome::Success),
        ],
        &[Is(O), Counts(3, 0), Rejected(6_000)],
    ]);
    let r = run(cfg(), &script);
    assert_eq!(r.path(), [(C, O)]);
    assert_eq!(r.breaker.snapshot().opened_at_wall_ms, Some(WALL0));

    // Once half-open: a failure from before does not reopen, nor free the probe's slot.
    let script = steps(&[
        &[Hold],
        &TRIP,
        &[Advance(10_000), Hold, Finish(Outcome::Failure), Is(H)],
        &[Rejected(10_000), Finish(Outcome::Success), Counts(0, 1)],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H)]);
}

#[test]
fn a_probe_from_an_earlier_half_open_frees_no_slot_in_a_later_one() {
    let script = steps(&[
        &TRIP,
        &[Advance(10_000), Hold, Hold, Finish(Outcome::Failure), Is(O)],
        &[Advance(10_000), Hold, Hold, Rejected(10_000)],
        // The second probe of the first half-open answers now: stale.
        &[Finish(Outcome::Neutral), Rejected(10_000), Counts(4, 0)],
        &[
            Finish(Outcome::Success),
            Counts(0, 1),
            Hold,
            Rejected(10_000),
        ],
    ]);
    let r = run(config(3, 10_000, 2, 2), &script);
    assert_eq!(r.path(), [(C, O), (O, H), (H, O), (O, H)]);
}

#[test]
fn a_probe_answered_after_closing_counts_for_nothing() {
    let script = steps(&[
        &TRIP,
        &[Advance(10_000), Hold, Hold, Finish(Outcome::Success), Is(C)],
        &[Finish(Outcome::Failure), Is(C), Counts(0, 0)],
    ]);
    let r = run(config(3, 10_000, 1, 2), &script);
    assert_eq!(r.path(), [(C, O), (O, H), (H, C)]);
}

#[test]
fn a_lost_probe_slot_is_reclaimed_after_the_recovery_timeout() {
    let script = steps(&[
        &TRIP,
        // The first probe is never answered (say its request was cancelled)...
        &[
            Advance(10_000),
            Hold,
            Rejected(10_000),
            Advance(4_000),
            Rejected(6_000),
        ],
        // ...until a recovery timeout later its slot goes to a new probe.
        &[Advance(6_000), Hold, Rejected(10_000)],
        // A late answer to the lost probe still counts but frees nobody else's slot.
        &[Finish(Outcome::Success), Counts(0, 1), Rejected(10_000)],
        &[Finish(Outcome::Success), Is(C)],
    ]);
    assert_eq!(run(cfg(), &script).path(), [(C, O), (O, H), (H, C)]);
}
