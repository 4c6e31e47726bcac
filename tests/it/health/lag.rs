//! A provider falling behind the chain: unhealthy, its listener recycled, HTTP work moved to
//! the others, and healthy again once it catches up.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_provider_is_unhealthy_recycled_and_skipped() {
    let devnet = support::devnet(3, 50, 2, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let extra = "health: { max_lag_blocks: 5, stall_timeout: 2000 }\n";
    let app = start(&devnet, &db, "lag", extra).await;
    wait_checkpoint(&app, 5).await;
    wait_provider(&app, "lag-p1", "healthy", |p| p["healthy"] == true).await;

    let reconnects = metric(&app, "livechain_ws_reconnects_total", "lag-p1").await;
    faults(&devnet, 1).set_lag_blocks(20);
    let lagging = wait_provider(&app, "lag-p1", "unhealthy by lag", |p| {
        p["healthy"] == false && p["lag_blocks"].as_u64().is_some_and(|lag| lag > 5)
    })
    .await;
    assert_eq!(
        lagging["breaker"]["state"], "closed",
        "lag is not a fault of a request: {lagging}"
    );
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_ws_reconnects_total", "lag-p1").await > reconnects).then_some(())
    })
    .await
    .expect("the lagging provider's listener was recycled");
    // The others carry the chain meanwhile.
    let head = devnet.head();
    wait_checkpoint(&app, head + 10).await;

    faults(&devnet, 1).clear();
    wait_provider(&app, "lag-p1", "healthy after catching up", |p| {
        p["healthy"] == true
    })
    .await;
    let head = devnet.head();
    let checkpoint = wait_checkpoint(&app, head).await;
    verify_exactly_once(&app, &devnet, checkpoint).await;
    app.stop().await;
}
