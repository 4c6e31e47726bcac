//! A provider down at start: retried after short delays, not shut out for a recovery timeout;
//! once it has answered, failures open its breaker as before.

use std::net::SocketAddr;

use livechain::devnet::DevnetConfig;
use tokio::net::TcpSocket;

use super::*;

/// Longer than any wait below: had the breaker opened, nothing could pass before it ends.
const RECOVERY_MS: u64 = 60_000;
/// The provider's `failure_threshold`.
const THRESHOLD: u64 = 5;

/// The service indexing one provider at `addr` (nothing listens there yet) as `late-p0`.
fn late_provider_yaml(addr: SocketAddr, db: &Path) -> String {
    format!(
        "breaker: {{ failure_threshold: {THRESHOLD}, recovery_timeout: {RECOVERY_MS}, success_threshold: 1 }}\n\
         health: {{ max_lag_blocks: 20, stall_timeout: 2000 }}\n\
         server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: {}\n    providers:\n      \
         - id: late-p0\n        url: \"http://{addr}\"\n        ws_url: \"ws://{addr}\"\n    \
         subscriptions:\n      - blocks: true\n      - logs: {{ from_block: 0 }}\n",
        db.display(),
        DevnetConfig::default().chain_id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_comes_up_late_is_used_within_seconds_and_opens_only_once_it_answered() {
    // A port bound but not listening: connections to it are refused until the devnet takes it.
    let reserved = TcpSocket::new_v4().expect("a socket");
    reserved
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind an ephemeral port");
    let addr = reserved.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = support::start_app(support::parse_config(&late_provider_yaml(addr, &db))).await;

    // More failed attempts than the failure threshold, and the breaker still closed: the
    // provider has never answered, so it is backing off, not shut out.
    let down = wait_provider(&app, "late-p0", "failed attempts past the threshold", |p| {
        assert_ne!(
            p["breaker"]["state"], "open",
            "opened before answering: {p}"
        );
        p["breaker"]["consecutive_failures"]
            .as_u64()
            .is_some_and(|n| n > THRESHOLD)
    })
    .await;
    assert_eq!(down["breaker"]["state"], "closed", "{down}");
    assert_eq!(down["breaker"]["opened_at"], Value::Null, "{down}");
    assert_eq!(down["healthy"], false, "failing and never answered: {down}");
    let (status, _) = support::get_json(&app.url("/ready")).await;
    assert_eq!(status, 503, "not ready while its only provider is down");

    // The provider comes up on that port. Ready and storing events well inside the recovery
    // timeout, which an open breaker would have made it wait out.
    drop(reserved);
    let devnet = support::devnet_with(DevnetConfig {
        listen: addr,
        providers: 1,
        block_time_ms: 50,
        logs_per_block: 2,
        ..DevnetConfig::default()
    })
    .await;
    let came_up = std::time::Instant::now();
    let within = Duration::from_millis(RECOVERY_MS / 2);
    support::wait_for(within, POLL, || async {
        (support::get_json(&app.url("/ready")).await.0 == 200).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not ready within {within:?} of the provider coming up"));
    eprintln!(
        "ready {:?} after the provider came up, having failed {} times before",
        came_up.elapsed(),
        down["breaker"]["consecutive_failures"]
    );
    let stored = support::wait_for(within, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= 5)
    })
    .await
    .unwrap_or_else(|| panic!("no events stored within {within:?} of the provider coming up"));
    let up = provider(&app, "late-p0").await;
    assert_eq!(up["breaker"]["state"], "closed", "{up}");
    assert_eq!(
        up["breaker"]["opened_at"],
        Value::Null,
        "never opened: {up}"
    );
    assert_eq!(up["healthy"], true, "{up}");
    verify_exactly_once(&app, &devnet, stored).await;

    // Now it answered, it is a provider that was working: failing, it opens at the threshold
    // and stays open for the recovery timeout even once it is back.
    faults(&devnet, 0).set_server_error(Some(503));
    faults(&devnet, 0).set_refuse_connections(true);
    let open = wait_provider(&app, "late-p0", "breaker open", |p| {
        p["breaker"]["state"] == "open"
    })
    .await;
    assert_eq!(open["breaker"]["consecutive_failures"], THRESHOLD, "{open}");
    faults(&devnet, 0).clear();
    // Longer than any start-up delay (at most 4 s): still open, waiting out its recovery.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = provider(&app, "late-p0").await;
    assert_eq!(still["breaker"]["state"], "open", "{still}");
    assert_eq!(still["breaker"]["opened_at"], open["breaker"]["opened_at"]);
    app.stop().await;
}
