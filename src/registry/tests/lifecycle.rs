//! Ending tasks: `stop`, `shutdown` with its bound, and the parent token.

use super::*;

#[tokio::test]
async fn stop_prevents_restart_and_marks_stopped() {
    let (supervisor, store) = start(config()).await;
    // One running when stopped, one waiting out a backoff when stopped.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runner = key("listener", "running");
    supervisor
        .spawn(runner.clone(), json!(null), Criticality::Ordinary, idle)
        .unwrap();
    let backing_off = key("listener", "backing-off");
    let slow_fail =
        |_: usize, _: CancellationToken| -> Run { Box::pin(async { Err(TaskError::new("down")) }) };
    let mut config_slow = config();
    config_slow.backoff.min_delay = Duration::from_secs(10);
    let (slow, slow_store) = start(config_slow).await;
    slow.spawn(
        backing_off.clone(),
        json!(null),
        Criticality::Ordinary,
        counted(tx, slow_fail),
    )
    .unwrap();
    starts(&mut rx, 1).await;
    eventually("the backoff", || {
        slow.registry()
            .get(&backing_off)
            .is_some_and(|i| i.status == Status::Restarting)
    })
    .await;

    assert!(supervisor.stop(&runner) && slow.stop(&backing_off));
    assert!(!supervisor.stop(&key("listener", "unknown")));
    eventually("both to leave", || {
        supervisor.registry().is_empty() && slow.registry().is_empty()
    })
    .await;
    tokio::time::sleep(ms(10)).await;
    assert!(rx.try_recv().is_err(), "restarted after stop");
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();
    slow.shutdown(Duration::from_secs(1)).await.unwrap();
    for (store, k) in [(store, runner), (slow_store, backing_off)] {
        let last = store.saves().into_iter().rfind(|i| i.key() == k).unwrap();
        assert_eq!((last.status, last.desired), (Status::Stopped, false), "{k}");
    }
}

#[tokio::test]
async fn shutdown_cancels_everything_within_the_bound() {
    let (supervisor, store) = start(config()).await;
    let stubborn = |_: CancellationToken| -> Run { Box::pin(std::future::pending()) };
    let slow_fail = |_: CancellationToken| -> Run { Box::pin(async { Err(TaskError::new("x")) }) };
    supervisor
        .spawn(
            key("listener", "polite"),
            json!(null),
            Criticality::Ordinary,
            idle,
        )
        .unwrap();
    supervisor
        .spawn(
            key("listener", "stubborn"),
            json!(null),
            Criticality::Critical,
            stubborn,
        )
        .unwrap();
    supervisor
        .spawn(
            key("backfill", "flapping"),
            json!(null),
            Criticality::Ordinary,
            slow_fail,
        )
        .unwrap();
    tokio::time::sleep(ms(5)).await;

    let began = Instant::now();
    supervisor.shutdown(ms(500)).await.unwrap();
    // The stubborn task is aborted after `stop_grace` (50 ms), well within the bound.
    assert!(began.elapsed() < ms(500));
    assert!(supervisor.registry().is_empty() && supervisor.healthy());
    let mut last = std::collections::HashMap::new();
    for info in store.saves() {
        last.insert(info.key().to_string(), info);
    }
    assert_eq!(last.len(), 3);
    for info in last.values() {
        assert_eq!(
            (info.status, info.desired),
            (Status::Stopped, true),
            "{info:?}"
        );
    }
    assert!(
        last["listener/stubborn"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("aborted")
    );
    let late = supervisor.spawn(
        key("listener", "late"),
        json!(null),
        Criticality::Ordinary,
        idle,
    );
    assert_eq!(late, Err(RegistryError::ShuttingDown));
}

#[tokio::test]
async fn shutdown_reports_tasks_that_outlive_the_bound() {
    let mut config = config();
    config.stop_grace = Duration::from_secs(10);
    let (supervisor, _) = start(config).await;
    let stubborn = |_: CancellationToken| -> Run { Box::pin(std::future::pending()) };
    supervisor
        .spawn(
            key("listener", "stubborn"),
            json!(null),
            Criticality::Ordinary,
            stubborn,
        )
        .unwrap();
    tokio::time::sleep(ms(2)).await;
    let error = supervisor.shutdown(ms(20)).await.unwrap_err();
    assert_eq!(error, RegistryError::ShutdownTimedOut { still_running: 1 });
}

#[tokio::test]
async fn cancelling_the_parent_token_stops_every_task() {
    let parent = CancellationToken::new();
    let store = Arc::new(MemoryProcessStore::new());
    let supervisor = Supervisor::start(config(), store, &parent).await.unwrap();
    for id in ["a", "b", "c"] {
        supervisor
            .spawn(
                key("listener", id),
                json!(null),
                Criticality::Ordinary,
                idle,
            )
            .unwrap();
    }
    parent.cancel();
    eventually("every task to stop", || supervisor.registry().is_empty()).await;
    supervisor.shutdown(ms(100)).await.unwrap();
}
