//! The seed's memory promise, "under 1 MB of overhead per 1 000 registered tasks", measured as
//! resident memory (`VmRSS`). Ignored by default: run each test alone, in release, so that
//! neither reuses memory the other freed:
//! `cargo test --release --lib registry::tests::memory::memory_overhead_1000 -- --ignored --nocapture`

use super::*;

/// A store that keeps nothing, as far as memory goes like the SQLite one.
struct DiscardStore;

#[async_trait::async_trait]
impl ProcessStore for DiscardStore {
    async fn save(&self, _: &ProcessInfo) -> Result<(), String> {
        Ok(())
    }
    async fn load(&self) -> Result<Vec<ProcessInfo>, String> {
        Ok(Vec::new())
    }
}

/// Resident memory in KiB (`VmRSS` in `/proc/self/status`).
fn rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS value")
}

/// Resident-memory growth, in KiB, from `n` idle tasks spawned plainly (on a `TaskTracker`,
/// each with a child token: what the app would do without a registry), then from `n` more
/// under the supervisor, each with a typical spec. Both sets stay alive to the end, so the
/// second cannot reuse memory the first freed. Returns `(plain, supervised)`.
async fn measure_overhead(n: usize) -> (usize, usize) {
    let root = CancellationToken::new();
    let plain = tokio_util::task::TaskTracker::new();
    // Saves are discarded: a `MemoryProcessStore` would count its own history as overhead.
    let store = Arc::new(DiscardStore);
    let supervisor = Supervisor::start(config(), store, &root).await.unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let idle_counted = |running: Arc<AtomicUsize>| {
        move |token: CancellationToken| -> Run {
            running.fetch_add(1, Ordering::Relaxed);
            idle(token)
        }
    };
    // Every run must have started, and so allocated all it keeps, before measuring.
    let all_started = async |running: &AtomicUsize, n: usize| {
        for _ in 0..1_000 {
            if running.load(Ordering::Relaxed) == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "only {} of {n} runs started",
            running.load(Ordering::Relaxed)
        );
    };

    let before = rss_kb();
    for _ in 0..n {
        plain.spawn(idle_counted(Arc::clone(&running))(root.child_token()));
    }
    all_started(&running, n).await;
    let between = rss_kb();
    for i in 0..n {
        let key = key("listener", &format!("mainnet/provider-{i}"));
        let spec = json!({ "chain": "mainnet", "provider": format!("provider-{i}"), "ws": true });
        let factory = idle_counted(Arc::clone(&running));
        supervisor
            .spawn(key, spec, Criticality::Ordinary, factory)
            .unwrap();
    }
    all_started(&running, 2 * n).await;
    let after = rss_kb();

    root.cancel();
    plain.close();
    plain.wait().await;
    supervisor.shutdown(Duration::from_secs(10)).await.unwrap();
    (between - before, after - between)
}

#[tokio::test]
#[ignore = "measures process memory; run alone"]
async fn memory_overhead_1000() {
    let (plain, supervised) = measure_overhead(1_000).await;
    let overhead = supervised.saturating_sub(plain);
    println!(
        "registry: tasks=1000 rss_delta_kb={supervised} plain_kb={plain} overhead_kb={overhead}"
    );
}

#[tokio::test]
#[ignore = "measures process memory; run alone"]
async fn memory_overhead_10000() {
    let (plain, supervised) = measure_overhead(10_000).await;
    let overhead = supervised.saturating_sub(plain);
    println!(
        "registry: tasks=10000 rss_delta_kb={supervised} plain_kb={plain} overhead_kb={overhead}"
    );
}
