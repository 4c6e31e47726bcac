//! [`ChainHealth`] driven by a [`ManualClock`]: ranking, health, breaker transitions marked for
//! persistence, rate limits that never open a breaker.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::breaker::{ManualClock, STARTUP_MAX_DELAY};
use crate::config::BreakerConfig;

fn breaker() -> Breaker {
    Breaker::new(BreakerConfig {
        failure_threshold: 3,
        recovery_timeout: Duration::from_millis(1_000),
        success_threshold: 1,
        half_open_max_probes: 1,
    })
}

/// A breaker whose provider has answered once: past its start-up phase, failures open it.
fn answered_breaker() -> Breaker {
    let mut breaker = breaker();
    let clock = ManualClock::new(0);
    let (permit, _) = breaker.try_acquire(&clock);
    let _ = breaker.record(permit, Outcome::Success, &clock);
    breaker
}

/// What the monitor does with every transition: saved (here: nowhere), then shown.
fn save_all(health: &ChainHealth) {
    for unsaved in health.take_dirty() {
        health.saved(unsaved);
    }
}

/// Providers with these priorities, each of which has answered once.
fn health(priorities: &[u32]) -> (ChainHealth, ManualClock) {
    health_of(priorities, answered_breaker)
}

fn health_of(priorities: &[u32], breaker: fn() -> Breaker) -> (ChainHealth, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    let members = priorities
        .iter()
        .enumerate()
        .map(|(i, &priority)| Member {
            id: format!("p{i}"),
            priority,
            breaker: breaker(),
        })
        .collect();
    let config = HealthConfig {
        max_lag_blocks: 5,
        stall_timeout: Duration::from_millis(1_000),
    };
    let health = ChainHealth::new(
        ChainName::from("test"),
        config,
        Arc::new(clock.clone()),
        members,
    );
    (health, clock)
}

fn answer(health: &ChainHealth, i: usize, outcome: Outcome, ms: u64) {
    let permit = health.acquire(i).expect("a permit");
    health.record(i, permit, outcome, Some(Duration::from_millis(ms)));
}

#[test]
fn ranks_by_priority_then_latency_and_health_first() {
    let (health, _) = health(&[2, 1, 1]);
    assert_eq!(health.ranked(), vec![1, 2, 0], "priority, then position");
    answer(&health, 1, Outcome::Success, 50);
    answer(&health, 2, Outcome::Success, 5);
    assert_eq!(health.ranked(), vec![2, 1, 0], "latency within a priority");
    for _ in 0..3 {
        answer(&health, 2, Outcome::Failure, 1);
    }
    assert!(!health.is_healthy(2), "its breaker is open");
    assert_eq!(health.ranked(), vec![1, 0, 2], "unhealthy last");
    assert_eq!(health.healthy_count(), 2);
    assert!(health.acquire(2).is_err(), "open: skipped");
}

#[test]
fn a_latency_per_method_ranks_within_a_priority_only() {
    let (health, _) = health(&[1, 1, 0]);
    answer(&health, 0, Outcome::Success, 5);
    answer(&health, 1, Outcome::Success, 50);
    assert_eq!(health.ranked(), vec![2, 0, 1]);
    // For this method provider 1 is the quick one (and 0 unmeasured: its overall latency).
    let per_method = |i: usize| (i == 1).then_some(1.0);
    assert_eq!(
        health.ranked_by(per_method),
        vec![2, 1, 0],
        "priority still first"
    );
}

#[test]
fn lagging_providers_are_unhealthy() {
    let (health, _) = health(&[1, 2]);
    health.observe_head(0, 100, true);
    health.observe_head(1, 95, true);
    assert!(health.is_healthy(1), "5 behind is the limit");
    assert!(!health.stream_lagging(1, health.best_head()));
    health.observe_head(0, 101, true);
    assert!(!health.is_healthy(1));
    assert!(health.stream_lagging(1, health.best_head()));
    assert!(
        !health.stream_lagging(1, 100),
        "it had reached where the best was a moment ago"
    );
    assert_eq!(health.ranked(), vec![0, 1]);
    assert!(health.any_healthy());
}

#[test]
fn a_silent_stream_is_stalled_and_unhealthy() {
    let (health, clock) = health(&[1, 2]);
    health.connection(0, true);
    health.connection(1, true);
    health.observe_head(0, 10, true);
    health.observe_head(1, 10, true);
    clock.advance(Duration::from_millis(600));
    health.observe_head(0, 11, true);
    clock.advance(Duration::from_millis(600));
    assert!(
        health.stalled(1),
        "silent 1.2 s while the chain moved to 11"
    );
    assert!(!health.is_healthy(1));
    assert!(!health.stalled(0));
    health.connection(1, false);
    assert!(!health.stalled(1), "no socket, no stall");
}

#[test]
fn transitions_are_shown_only_once_saved() {
    let (health, clock) = health(&[1, 2]);
    assert!(health.take_dirty().is_empty());
    for _ in 0..3 {
        answer(&health, 0, Outcome::Failure, 1);
    }
    // Open at once for the requests it refuses...
    assert!(health.acquire(0).is_err(), "the breaker acts at once");
    // ...but shown as it was until saved.
    let shown = |h: &ChainHealth| h.report().remove(0);
    assert_eq!(shown(&health).breaker, BreakerState::Closed);
    assert!(shown(&health).transitions.is_empty());
    let dirty = health.take_dirty();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0].provider, "p0");
    assert_eq!(dirty[0].snapshot.state, BreakerState::Open);
    assert_eq!(dirty[0].snapshot.opened_at_wall_ms, Some(1_000_000));
    assert_eq!(dirty[0].transitions.len(), 1);
    assert!(health.take_dirty().is_empty(), "taken once");

    // A failed save: still not shown, and taken again with the same transitions.
    let unsaved = dirty.into_iter().next().expect("one");
    health.not_saved(unsaved);
    assert_eq!(shown(&health).breaker, BreakerState::Closed);
    let again = health.take_dirty().into_iter().next().expect("taken again");
    assert_eq!(again.transitions.len(), 1);
    health.saved(again);
    let report = shown(&health);
    assert_eq!(report.breaker, BreakerState::Open);
    assert_eq!(report.opened_at_ms, Some(1_000_000));
    assert_eq!(report.unhealthy, Some(Unhealthy::BreakerOpen));
    assert_eq!(report.transitions.len(), 1);

    clock.advance(Duration::from_millis(1_000));
    health.tick();
    let dirty = health.take_dirty();
    assert_eq!(dirty[0].snapshot.state, BreakerState::HalfOpen);
    health.saved(dirty.into_iter().next().expect("one"));
    answer(&health, 0, Outcome::Success, 1);
    let closed = health.take_dirty().into_iter().next().expect("one");
    assert_eq!(closed.snapshot.state, BreakerState::Closed);
    health.saved(closed);
    let report = shown(&health);
    assert_eq!(report.breaker, BreakerState::Closed);
    assert_eq!(report.transitions.len(), 3, "open, half-open, closed");
}

#[test]
fn rate_limits_slow_a_provider_down_without_opening_it() {
    let (health, _) = health(&[1, 2]);
    for _ in 0..10 {
        if let Ok(permit) = health.acquire(0) {
            health.record(
                0,
                permit,
                Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(2)),
                },
                None,
            );
        }
    }
    let report = &health.report()[0];
    assert_eq!(report.breaker, BreakerState::Closed);
    assert_eq!(report.consecutive_failures, 0);
    assert_eq!(
        health.acquire(0).err(),
        Some(Duration::from_secs(2)),
        "cooling down for the Retry-After"
    );
    assert!(health.take_dirty().is_empty());
}

#[test]
fn faults_outside_requests_count_against_the_breaker() {
    let (health, _) = health(&[1]);
    for _ in 0..3 {
        health.fault(0);
    }
    save_all(&health);
    assert_eq!(health.report()[0].breaker, BreakerState::Open);
    assert!(!health.any_healthy());
    health.fault(0); // open: nothing granted, nothing counted
    assert_eq!(health.report()[0].consecutive_failures, 3);
}

/// An HTTP-only provider's head is only as fresh as its last probe: on a fast chain the
/// streams move on by many blocks before it is asked again. Its lag is what it was behind when
/// asked, so an answer that was current keeps it healthy, and one that was behind does not.
#[test]
fn a_polled_head_is_measured_against_the_best_head_when_asked() {
    let (health, _) = health(&[1, 1]);
    health.observe_head(0, 100, true);
    health.observe_polled_head(1, 100, health.best_head());
    health.observe_head(0, 200, true);
    assert!(health.is_healthy(1), "current when asked");
    assert_eq!(health.report()[1].lag_blocks, 0);
    health.observe_polled_head(1, 150, health.best_head());
    assert!(!health.is_healthy(1), "50 behind when asked");
    assert_eq!(health.report()[1].lag_blocks, 50);
    assert_eq!(health.ranked(), vec![0, 1]);
}

/// A provider down at start: its failures do not open the breaker (nothing to persist), it is
/// retried after a short delay, and it is unhealthy until it answers, then healthy at once.
#[test]
fn a_provider_that_never_answered_is_unhealthy_but_not_shut_out() {
    let (health, clock) = health_of(&[1, 2], breaker);
    assert!(health.is_healthy(1), "not tried yet");
    for _ in 0..10 {
        let permit = health.acquire(1).expect("granted after its start-up delay");
        health.record(1, permit, Outcome::Failure, None);
        let retry_in = health.acquire(1).expect_err("held back a moment");
        assert!(retry_in <= STARTUP_MAX_DELAY * 2, "{retry_in:?}");
        assert!(!health.is_healthy(1));
        assert_eq!(health.ranked(), vec![0, 1], "tried last");
        clock.advance(retry_in);
    }
    let report = &health.report()[1];
    assert_eq!(report.breaker, BreakerState::Closed);
    assert_eq!(report.opened_at_ms, None);
    assert!(health.take_dirty().is_empty(), "no transition");

    let permit = health.acquire(1).expect("granted");
    health.record(1, permit, Outcome::Success, Some(Duration::from_millis(3)));
    assert!(health.is_healthy(1));
    // Now a provider that was working: three failures open it.
    for _ in 0..3 {
        answer(&health, 1, Outcome::Failure, 1);
    }
    save_all(&health);
    assert_eq!(health.report()[1].breaker, BreakerState::Open);
}
