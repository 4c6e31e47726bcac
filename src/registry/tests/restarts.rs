//! Restarts: errors, panics and clean returns all restart, on the backoff curve; a stable run
//! resets it; a critical task that keeps dying fails and makes the supervisor unhealthy.

use super::*;

#[tokio::test]
async fn duplicate_spawn_is_refused_while_live_and_accepted_after_stop() {
    let (supervisor, _) = start(config()).await;
    let k = key("listener", "a");
    supervisor
        .spawn(k.clone(), json!(1), Criticality::Ordinary, idle)
        .unwrap();
    let refused = supervisor
        .spawn(k.clone(), json!(2), Criticality::Ordinary, idle)
        .unwrap_err();
    assert!(refused.is_conflict(), "{refused}");
    assert!(supervisor.stop(&k));
    eventually("the stopped task to leave", || {
        supervisor.registry().get(&k).is_none()
    })
    .await;
    supervisor
        .spawn(k.clone(), json!(3), Criticality::Ordinary, idle)
        .unwrap();
    assert_eq!(supervisor.registry().get(&k).unwrap().spec, json!(3));
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn an_erroring_task_restarts_with_growing_delays() {
    let (logs, _capture) = Logs::capture();
    let (supervisor, store) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let k = key("listener", "flaky");
    supervisor
        .spawn(
            k.clone(),
            json!(null),
            Criticality::Ordinary,
            counted(tx, |_, _| fail()),
        )
        .unwrap();
    let at = starts(&mut rx, 6).await;
    let info = supervisor.registry().get(&k).unwrap();
    assert!(info.restarts >= 5 && info.last_error.as_deref() == Some("boom"));
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();

    // The delays chosen are the curve's, which doubles (with jitter) from 2 ms ...
    let delays = &logs.delays()[..5];
    assert_eq!(delays, curve(&config(), 5));
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
    // ... and really waited out.
    for (n, pair) in at.windows(2).enumerate() {
        assert!(
            pair[1] - pair[0] >= delays[n],
            "gap {n}: {:?}",
            pair[1] - pair[0]
        );
    }
    let counts: Vec<u32> = store
        .saves()
        .iter()
        .filter(|i| i.status == Status::Restarting)
        .map(|i| i.restarts)
        .collect();
    assert_eq!(counts[..5], [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_task_that_returns_ok_is_restarted() {
    let (supervisor, _) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let done = |_: usize, _: CancellationToken| -> Run { Box::pin(async { Ok(()) }) };
    supervisor
        .spawn(
            key("publisher", "p"),
            json!(null),
            Criticality::Ordinary,
            counted(tx, done),
        )
        .unwrap();
    starts(&mut rx, 3).await;
    let info = supervisor.registry().get(&key("publisher", "p")).unwrap();
    assert_eq!(
        info.last_error.as_deref(),
        Some("returned while still desired")
    );
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_panicking_task_is_caught_logged_and_restarted() {
    let (logs, _capture) = Logs::capture();
    let (supervisor, _) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let panics = |n: usize, token: CancellationToken| -> Run {
        if n < 2 {
            Box::pin(async move { panic!("kaboom {n}") })
        } else {
            idle(token)
        }
    };
    let k = key("aggregator", "mainnet");
    supervisor
        .spawn(
            k.clone(),
            json!(null),
            Criticality::Ordinary,
            counted(tx, panics),
        )
        .unwrap();
    starts(&mut rx, 3).await;
    eventually("the third run to be running", || {
        supervisor
            .registry()
            .get(&k)
            .is_some_and(|i| i.status == Status::Running)
    })
    .await;
    let info = supervisor.registry().get(&k).unwrap();
    assert_eq!(
        (info.restarts, info.last_error.as_deref()),
        (2, Some("panicked: kaboom 1"))
    );
    let logs = logs.text();
    for line in [
        "kind=aggregator id=mainnet error=panicked: kaboom 0 restarts=1",
        "kind=aggregator id=mainnet error=panicked: kaboom 1 restarts=2",
    ] {
        assert!(logs.contains(line), "missing {line:?} in:\n{logs}");
    }
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_stable_run_resets_the_backoff() {
    let (logs, _capture) = Logs::capture();
    let (supervisor, _) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Runs 0-5 fail at once; run 6 stays up past `stable_after` (300 ms), so the delays after
    // it start the curve again.
    let body = |n: usize, _: CancellationToken| -> Run {
        if n == 6 {
            Box::pin(async {
                tokio::time::sleep(ms(320)).await;
                Err(TaskError::new("late"))
            })
        } else {
            fail()
        }
    };
    supervisor
        .spawn(
            key("backfill", "b"),
            json!(null),
            Criticality::Ordinary,
            counted(tx, body),
        )
        .unwrap();
    let at = starts(&mut rx, 9).await;
    assert!(at[7] - at[6] >= ms(320));
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
    let curve = curve(&config(), 6);
    let delays = logs.delays();
    assert_eq!(delays[..6], curve);
    assert_eq!(delays[6..8], curve[..2], "not reset: {delays:?}");
}

#[tokio::test]
async fn a_critical_task_that_keeps_dying_fails_while_a_normal_one_keeps_restarting() {
    let (supervisor, store) = start(fast_config()).await;
    let (critical_tx, mut critical_rx) = mpsc::unbounded_channel();
    let (normal_tx, mut normal_rx) = mpsc::unbounded_channel();
    let writer = key("writer", "main");
    let listener = key("listener", "a");
    supervisor
        .spawn(
            writer.clone(),
            json!(null),
            Criticality::Critical,
            counted(critical_tx, |_, _| fail()),
        )
        .unwrap();
    supervisor
        .spawn(
            listener.clone(),
            json!(null),
            Criticality::Ordinary,
            counted(normal_tx, |_, _| fail()),
        )
        .unwrap();
    assert!(supervisor.healthy());

    // Five restarts are allowed within the window; the sixth death is the end.
    starts(&mut critical_rx, 6).await;
    eventually("the writer to fail", || !supervisor.healthy()).await;
    let failed = supervisor.registry().get(&writer).unwrap();
    assert_eq!((failed.status, failed.restarts), (Status::Failed, 5));
    // The normal task goes on well past that.
    starts(&mut normal_rx, 12).await;
    assert!(
        critical_rx.try_recv().is_err(),
        "a failed task was restarted"
    );
    assert!(supervisor.registry().get(&listener).unwrap().restarts >= 11);
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
    let last = store
        .saves()
        .into_iter()
        .rfind(|i| i.key() == writer)
        .unwrap();
    assert_eq!(last.status, Status::Failed);
    // Still listed after shutdown, so an operator sees why the service is not ready.
    assert_eq!(
        supervisor.registry().get(&writer).unwrap().status,
        Status::Failed
    );
}

#[tokio::test]
async fn a_killed_task_restarts_and_a_stopped_one_does_not() {
    let (supervisor, _) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let k = key("pipeline", "ingest");
    supervisor
        .spawn(
            k.clone(),
            json!(null),
            Criticality::Critical,
            counted(tx, |_, t| idle(t)),
        )
        .unwrap();
    starts(&mut rx, 1).await;
    assert!(supervisor.kill(&k));
    starts(&mut rx, 1).await;
    let info = supervisor.registry().get(&k).unwrap();
    assert_eq!(info.restarts, 1);
    assert_eq!(info.last_error.as_deref(), Some("killed on request"));
    eventually("the new run to be running", || {
        supervisor.registry().get(&k).unwrap().status == Status::Running
    })
    .await;
    assert!(supervisor.healthy(), "one kill is not a failure");

    // A stop ends the task for good: no new run.
    assert!(supervisor.stop(&k));
    eventually("the stopped task to leave", || {
        supervisor.registry().get(&k).is_none()
    })
    .await;
    assert!(!supervisor.kill(&k), "nothing left to kill");
    tokio::time::sleep(ms(50)).await;
    assert!(rx.try_recv().is_err(), "a stopped task was started again");
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
}
