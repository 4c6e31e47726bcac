//! Reorgs the service did not watch happen: one while it was stopped, found at restart from the
//! stored chain; and a chain replaced deeper than the kept window, re-backfilled.

use std::net::SocketAddr;
use std::time::Duration;

use livechain::devnet::DevnetConfig;

use super::{canonical_rows, devnet_rows, metric_lines, wait_checkpoint};
use crate::support::{
    self, all_events, checkpoint, parse_config, service_yaml, start_app, wait_for,
};

fn devnet_config(seed: u64, initial_blocks: u64, block_time_ms: u64) -> DevnetConfig {
    DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 2,
        block_time_ms,
        logs_per_block: 2,
        seed,
        initial_blocks,
        reorg_every: None,
        reorg_depth: 12,
        ..DevnetConfig::default()
    }
}

/// The service stops at a checkpoint, the chain reorganises 12 blocks below it, the service
/// starts again on the same database: the orphans are removed and the rows are the new chain.
#[tokio::test]
async fn a_reorg_while_stopped_is_found_at_restart() {
    let net = support::devnet_with(devnet_config(1, 40, 20)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("a.db");
    let app = start_app(parse_config(&service_yaml(&net, &db))).await;
    assert!(net.wait_for_head(60, Duration::from_secs(30)).await);
    wait_checkpoint(
        &app.base,
        net.head().saturating_sub(1),
        Duration::from_secs(20),
    )
    .await;
    app.stop().await;

    let head = net.head();
    let before = net.reorgs();
    net.reorg(12);
    assert_eq!(net.reorgs(), before + 1);
    assert!(net.wait_for_head(head + 10, Duration::from_secs(30)).await);

    let app = start_app(parse_config(&service_yaml(&net, &db))).await;
    let top = net.head();
    wait_checkpoint(&app.base, top, Duration::from_secs(30)).await;
    assert!(
        canonical_rows(&app.base, top).await == devnet_rows(&net, top),
        "the rows are the reorganised chain"
    );
    let removed = all_events(&app.base, "include_removed=true")
        .await
        .into_iter()
        .filter(|e| e["removed"] == true)
        .count();
    assert!(
        removed >= 12,
        "the orphaned blocks are kept, removed: {removed}"
    );
    let reorgs = metric_lines(&app, "livechain_reorgs_total").await;
    assert!(!reorgs.is_empty(), "the reorg is counted");
    app.stop().await;
}

/// A database indexed from one chain, then pointed at another (same chain id, another seed)
/// longer than the kept window of hashes: no common ancestor in the window, so the error is
/// counted and the service re-backfills from the start; every old row ends removed and the rows
/// are the new chain.
#[tokio::test]
async fn a_reorg_deeper_than_the_window_is_rebackfilled() {
    let window = livechain::ingest::sync::reorg::WINDOW as u64;
    let first = support::devnet_with(devnet_config(1, window + 60, 1000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("a.db");
    let app = start_app(parse_config(&service_yaml(&first, &db))).await;
    wait_checkpoint(&app.base, window + 60, Duration::from_secs(120)).await;
    let old = all_events(&app.base, "").await.len();
    app.stop().await;

    let second = support::devnet_with(devnet_config(2, window + 80, 1000)).await;
    let app = start_app(parse_config(&service_yaml(&second, &db))).await;
    let top = window + 80;
    let truth = devnet_rows(&second, top);
    let converged = wait_for(
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            let done = checkpoint(&app.base, "devnet")
                .await
                .is_some_and(|c| c >= top)
                && canonical_rows(&app.base, top).await == truth;
            done.then_some(())
        },
    )
    .await;
    assert!(converged.is_some(), "the index converged on the new chain");
    let removed = all_events(&app.base, "include_removed=true")
        .await
        .into_iter()
        .filter(|e| e["removed"] == true)
        .count();
    // Blocks the first chain made after `old` was counted are orphans too.
    assert!(
        removed >= old,
        "every row of the old chain is removed: {removed} of {old}"
    );
    let too_deep = metric_lines(&app, "livechain_reorgs_too_deep_total").await;
    assert!(!too_deep.is_empty(), "the too-deep reorg is counted");
    app.stop().await;
}
