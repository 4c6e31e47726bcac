//! After a restart: an open breaker waits out the rest of its recovery time on the wall clock.

use super::*;

/// The snapshot of a breaker with `config` opened at `WALL0`.
fn opened_at_wall0(config: BreakerConfig) -> Snapshot {
    let snapshot = run(config, &[FAIL; 3]).breaker.snapshot();
    assert_eq!(
        (snapshot.state, snapshot.opened_at_wall_ms),
        (O, Some(WALL0))
    );
    snapshot
}

/// A breaker restored from `snapshot` in a new process whose wall clock reads `wall_ms`.
fn restored(config: BreakerConfig, snapshot: Snapshot, wall_ms: i64) -> Run {
    let clock = ManualClock::new(wall_ms);
    Run::resume(Breaker::restore(config, snapshot, &clock), clock)
}

#[test]
fn restore_keeps_an_open_breaker_open_for_the_remaining_wall_time() {
    let config = config(3, 60_000, 2, 1);
    let snapshot = opened_at_wall0(config);
    let r = restored(config, snapshot, WALL0 + 25_000).steps(&[
        Is(O),
        Counts(3, 0),
        Rejected(35_000),
        Advance(34_999),
        Is(O),
        Rejected(1),
        Advance(1),
        Is(H),
        Hold,
    ]);
    assert_eq!(r.path(), [(O, H)]);
}

#[test]
fn restore_half_opens_at_once_when_the_wall_time_has_passed() {
    let config = config(3, 60_000, 2, 1);
    let snapshot = opened_at_wall0(config);
    for since in [60_000, 60_001, 86_400_000] {
        let r = restored(config, snapshot, WALL0 + since).steps(&[Is(H), Hold]);
        assert_eq!(r.path(), [(O, H)], "opened {since} ms ago");
    }
}

#[test]
fn restore_waits_the_full_timeout_when_opened_at_is_unusable() {
    let config = config(3, 60_000, 2, 1);
    // In the future (the wall clock went back), or missing.
    for opened_at in [Some(WALL0 + 5_000), None] {
        let snapshot = Snapshot {
            opened_at_wall_ms: opened_at,
            ..opened_at_wall0(config)
        };
        let script = [Rejected(60_000), Advance(59_999), Is(O), Advance(1), Is(H)];
        restored(config, snapshot, WALL0).steps(&script);
    }
}

#[test]
fn restore_keeps_closed_and_half_open_counts() {
    let closed = Snapshot {
        state: C,
        consecutive_failures: 2,
        consecutive_successes: 0,
        opened_at_wall_ms: Some(WALL0 - 1_000),
    };
    // Closed, it is in its start-up phase again (`startup.rs`): the failure is counted but
    // does not open it until its provider has answered in this run.
    let r = restored(cfg(), closed, WALL0).steps(&[Is(C), Counts(2, 0), FAIL, Is(C)]);
    let r = r.steps(&[Counts(3, 0), Advance(400), OK, Counts(0, 0)]);
    assert_eq!(r.steps(&TRIP).path(), [(C, O)]);

    let half_open = Snapshot {
        state: H,
        consecutive_failures: 0,
        consecutive_successes: 1,
        opened_at_wall_ms: Some(WALL0 - 1_000),
    };
    let r = restored(cfg(), half_open, WALL0).steps(&[Is(H), OK, Is(C)]);
    assert_eq!(r.path(), [(H, C)]);
}

#[test]
fn snapshots_round_trip_through_restore() {
    let opened = opened_at_wall0(cfg());
    let cases = [
        Snapshot::default(),
        Snapshot {
            consecutive_failures: 2,
            ..Snapshot::default()
        },
        Snapshot {
            state: H,
            consecutive_successes: 1,
            ..opened
        },
        opened,
    ];
    // An open breaker whose time has passed is still stored open until a call notices.
    for wall_ms in [WALL0, WALL0 + 3_600_000] {
        for snapshot in cases {
            let breaker = Breaker::restore(cfg(), snapshot, &ManualClock::new(wall_ms));
            assert_eq!(breaker.snapshot(), snapshot);
        }
    }
}
