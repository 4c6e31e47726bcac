//! Persistence: every status change reaches the store, a stuck or broken store never holds up
//! restarts, and the next start restores the desired set.

use super::*;

#[tokio::test]
async fn every_status_change_is_saved_and_restore_returns_the_desired_set() {
    let (supervisor, store) = start(config()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Two failures a few ms into the run, then up until stopped.
    let body = |n: usize, token: CancellationToken| -> Run {
        if n < 2 {
            Box::pin(async {
                tokio::time::sleep(ms(3)).await;
                Err(TaskError::new("flap"))
            })
        } else {
            idle(token)
        }
    };
    let flappy = key("listener", "flappy");
    supervisor
        .spawn(
            flappy.clone(),
            json!({ "url": "x" }),
            Criticality::Ordinary,
            counted(tx, body),
        )
        .unwrap();
    supervisor
        .spawn(key("writer", "w"), json!(7), Criticality::Ordinary, idle)
        .unwrap();
    starts(&mut rx, 3).await;
    tokio::time::sleep(ms(5)).await;
    assert!(supervisor.stop(&flappy));
    supervisor.shutdown(Duration::from_secs(1)).await.unwrap();

    let mut seen: Vec<(Status, u32)> = Vec::new();
    for info in store.saves().into_iter().filter(|i| i.key() == flappy) {
        if seen.last() != Some(&(info.status, info.restarts)) {
            seen.push((info.status, info.restarts));
        }
    }
    use Status::*;
    let expected = [
        (Running, 0),
        (Restarting, 1),
        (Running, 1),
        (Restarting, 2),
        (Running, 2),
        (Stopped, 2),
    ];
    assert_eq!(seen, expected);

    // The next start restores the writer (stopped by shutdown, still desired), not the
    // listener (stopped on purpose).
    let next = Supervisor::start(config(), store.clone(), &CancellationToken::new())
        .await
        .unwrap();
    let restored: Vec<(String, String, serde_json::Value)> = next
        .restore()
        .into_iter()
        .map(|i| (i.kind, i.id, i.spec))
        .collect();
    assert_eq!(restored, [("writer".into(), "w".into(), json!(7))]);
}

#[tokio::test]
async fn restore_returns_only_desired_processes_sorted() {
    let info = |kind: &str, id: &str, desired| ProcessInfo {
        kind: kind.into(),
        id: id.into(),
        status: Status::Stopped,
        restarts: 3,
        last_error: None,
        started_at_ms: 1,
        desired,
        spec: json!(null),
    };
    let store = MemoryProcessStore::with([
        info("writer", "w", true),
        info("listener", "b", false),
        info("listener", "a", true),
    ]);
    let supervisor = Supervisor::start(config(), Arc::new(store), &CancellationToken::new())
        .await
        .unwrap();
    let keys: Vec<String> = supervisor
        .restore()
        .iter()
        .map(|i| i.key().to_string())
        .collect();
    assert_eq!(keys, ["listener/a", "writer/w"]);
}

/// A store whose saves never finish and whose load may fail.
struct StuckStore {
    fail_load: bool,
}

#[async_trait::async_trait]
impl ProcessStore for StuckStore {
    async fn save(&self, _: &ProcessInfo) -> Result<(), String> {
        std::future::pending().await
    }
    async fn load(&self) -> Result<Vec<ProcessInfo>, String> {
        if self.fail_load {
            Err("disk on fire".into())
        } else {
            Ok(Vec::new())
        }
    }
}

#[tokio::test]
async fn a_stuck_store_never_delays_restarts_or_shutdown() {
    let store = Arc::new(StuckStore { fail_load: false });
    let supervisor = Supervisor::start(fast_config(), store, &CancellationToken::new())
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    supervisor
        .spawn(
            key("listener", "a"),
            json!(null),
            Criticality::Ordinary,
            counted(tx, |_, _| fail()),
        )
        .unwrap();
    starts(&mut rx, 8).await;
    let began = Instant::now();
    supervisor.shutdown(ms(200)).await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_store_that_cannot_load_refuses_to_start() {
    let store = Arc::new(StuckStore { fail_load: true });
    let error = Supervisor::start(config(), store, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error, RegistryError::Restore("disk on fire".into()));
}
