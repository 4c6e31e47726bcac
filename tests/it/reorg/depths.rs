//! Devnet reorgs of depth 1, 3, 12 and 64 during one run.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use livechain::devnet::DevnetConfig;

use super::{Collector, canonical_rows, devnet_rows, wait_checkpoint};
use crate::support::{self, all_events, checkpoint, parse_config, service_yaml, start_app};

/// Reorgs of depth 1, 3, 12 and 64 while the service runs (the deeper ones well below its
/// checkpoint): the canonical rows end equal to the devnet's chain and to a fresh index of it;
/// a subscriber that took everything saw exactly one `removed` per orphaned event it had
/// received and none for the others; a `finality=finalized` subscriber never received an event
/// that was later removed.
#[tokio::test]
async fn reorgs_of_depth_1_3_12_and_64_leave_exactly_the_final_chain() {
    reorgs_of_depth_1_3_12_and_64(false).await;
}

/// The same with providers that send `removed: true` copies of the orphaned logs, as geth does:
/// they are hints, and nothing is retracted twice.
#[tokio::test]
async fn removed_true_logs_from_providers_change_nothing_in_the_outcome() {
    reorgs_of_depth_1_3_12_and_64(true).await;
}

async fn reorgs_of_depth_1_3_12_and_64(send_removed_logs: bool) {
    // Reorg depth 64 puts the devnet's `safe` tag 64 deep (and `finalized` 80): manual reorgs
    // are clamped above `safe`, and no reorg ever touches a finalized block.
    let config = DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 3,
        block_time_ms: 25,
        logs_per_block: 4,
        initial_blocks: 0,
        reorg_every: None,
        reorg_depth: 64,
        ..DevnetConfig::default()
    };
    let net = support::devnet_with(config).await;
    net.set_send_removed_logs(send_removed_logs);
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("a.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let everything = Collector::start(&ws_base, "");
    let finalized = Collector::start(&ws_base, "finality=finalized");
    let contract = net.contracts()[0];
    let one_contract = Collector::start(&ws_base, &format!("kind=log&address={contract}"));

    assert!(net.wait_for_head(90, Duration::from_secs(30)).await);
    for depth in [1, 3, 12, 64] {
        // Let the service checkpoint the tip first, so the reorg lands below its checkpoint.
        wait_checkpoint(
            &app.base,
            net.head().saturating_sub(2),
            Duration::from_secs(20),
        )
        .await;
        let (before, head) = (net.reorgs(), net.head());
        let after = net.reorg(depth);
        assert_eq!(net.reorgs(), before + 1, "reorg of depth {depth} honoured");
        assert!(
            after + depth >= head,
            "depth {depth}: head {head} -> {after}"
        );
        // Regrow past the old head, so the next reorg is not clamped.
        assert!(net.wait_for_head(head + 10, Duration::from_secs(30)).await);
    }
    // Each reorg the range sync walked back from is listed, with its depth.
    let listed = support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let (_, body) = support::get_json(&app.url("/v1/chains")).await;
            let reorgs = body["chains"][0]["recent_reorgs"].as_array().cloned()?;
            (reorgs.iter().any(|r| r["depth"].as_u64() >= Some(12))).then_some(reorgs)
        },
    )
    .await
    .expect("the reorgs are listed in /v1/chains");
    assert!(
        listed
            .iter()
            .all(|r| r["at"].is_string() && r["too_deep"] == false),
        "{listed:?}"
    );
    // The last reorged height is final once `finalized` (80 deep) passes it.
    let top = net.head() + 5;
    assert!(net.wait_for_head(top + 100, Duration::from_secs(60)).await);
    wait_checkpoint(&app.base, top + 90, Duration::from_secs(30)).await;
    let truth = devnet_rows(&net, top);
    // Finality comes from the node's `finalized` tag (80 deep here), not from `confirmations`
    // (12 by default), and never passes the checkpoint.
    let finalized_to = all_events(
        &app.base,
        &format!("kind=block&finality=finalized&from_block={top}"),
    )
    .await
    .iter()
    .filter_map(|e| e["block_number"].as_u64())
    .max()
    .expect("blocks past the reorgs are finalized");
    let cp = checkpoint(&app.base, "devnet").await.expect("a checkpoint");
    assert!(
        finalized_to <= cp,
        "finalized {finalized_to} <= checkpoint {cp}"
    );
    assert!(
        finalized_to <= net.head() - net.finalized_depth() && finalized_to >= top,
        "finalized {finalized_to}: the node's tag (head {} - {}), past the reorgs ({top})",
        net.head(),
        net.finalized_depth()
    );

    let fresh = start_app(parse_config(&service_yaml(&net, &dir.path().join("b.db")))).await;
    wait_checkpoint(&fresh.base, top, Duration::from_secs(60)).await;
    let indexed = canonical_rows(&app.base, top).await;
    assert_eq!(indexed.len(), truth.len(), "canonical row count");
    assert!(indexed == truth, "canonical rows equal the devnet's chain");
    assert!(
        canonical_rows(&fresh.base, top).await == indexed,
        "and a fresh index of it"
    );
    fresh.stop().await;

    // Quiesce: no new blocks, then let the subscribers drain.
    net.shutdown();
    everything
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    finalized
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    one_contract
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    let stored = all_events(&app.base, "include_removed=true").await;
    let removed: HashSet<i64> = stored
        .iter()
        .filter(|e| e["removed"] == true)
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect();
    assert!(
        removed.len() >= 64,
        "the 64-deep reorg alone orphaned 64 stored blocks; {} rows removed",
        removed.len()
    );
    assert!(
        stored
            .iter()
            .filter(|e| e["removed"] == true)
            .all(|e| e["block_number"].as_u64().is_some_and(|n| n <= top)),
        "orphans only at reorganised heights"
    );

    let all = everything.finish().await;
    let received: HashSet<i64> = all.events.iter().copied().collect();
    assert_eq!(received.len(), all.events.len(), "each event received once");
    for cursor in &received {
        let expected = usize::from(removed.contains(cursor));
        assert_eq!(
            all.removed.get(cursor).copied().unwrap_or(0),
            expected,
            "removed messages for event {cursor}"
        );
    }
    assert!(
        removed.iter().all(|c| received.contains(c)),
        "every orphan had been received (since=0)"
    );

    // A filtered subscriber: retractions of exactly the orphans among the events it received.
    let filtered = one_contract.finish().await;
    let contract_logs: HashSet<i64> = stored
        .iter()
        .filter(|e| {
            e["kind"] == "log"
                && e["address"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&contract.to_string()))
        })
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect();
    let got: HashSet<i64> = filtered.events.iter().copied().collect();
    assert_eq!(got, contract_logs, "the filtered subscriber got its logs");
    let expected: HashSet<i64> = got.intersection(&removed).copied().collect();
    assert!(!expected.is_empty(), "some of its logs were orphaned");
    assert!(
        filtered.removed.values().all(|n| *n == 1)
            && filtered.removed.keys().copied().collect::<HashSet<_>>() == expected,
        "one removed per orphan it received, no other"
    );

    let settled = finalized.finish().await;
    assert!(
        settled.events.len() > 100,
        "the finalized subscriber received {} events",
        settled.events.len()
    );
    let later_removed: Vec<&i64> = settled
        .events
        .iter()
        .filter(|c| removed.contains(c))
        .collect();
    assert!(
        later_removed.is_empty(),
        "a finalized subscriber received events later removed: {later_removed:?}"
    );
    assert!(settled.removed.is_empty(), "and no retraction");

    eprintln!(
        "reorgs: rows={} removed={} subscriber events={} removals={} lagged={} finalized events={}",
        stored.len(),
        removed.len(),
        all.events.len(),
        all.removed.values().sum::<usize>(),
        all.lagged,
        settled.events.len()
    );
    let text = support::metrics_text(&app).await;
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("livechain_reorgs") || l.starts_with("livechain_orphans"))
        .collect();
    eprintln!("{}", counted.join("\n"));
    assert!(
        counted
            .iter()
            .any(|l| l.starts_with("livechain_reorgs_total{")),
        "reorgs are counted:\n{text}"
    );
    app.stop().await;
}

/// The devnet's automatic reorgs (every 10 blocks, 5 deep: the head moves on by one while the
/// blocks below it change, as on a live chain): after a dozen of them the canonical rows are
/// the devnet's chain, and a subscriber saw each orphan it received retracted once.
#[tokio::test]
async fn automatic_reorgs_every_10_blocks_converge() {
    let config = DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 3,
        block_time_ms: 20,
        logs_per_block: 4,
        initial_blocks: 20,
        reorg_every: Some(10),
        reorg_depth: 5,
        ..DevnetConfig::default()
    };
    let net = support::devnet_with(config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("a.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let everything = Collector::start(&ws_base, "");
    assert!(net.wait_for_head(150, Duration::from_secs(30)).await);
    // The last reorg point at or below `top` + 10 has rewritten everything below `top` for good.
    let top = net.head() - 10;
    wait_checkpoint(&app.base, top + 10, Duration::from_secs(30)).await;
    assert!(net.reorgs() >= 12, "{} reorgs", net.reorgs());
    let truth = devnet_rows(&net, top);
    assert!(
        canonical_rows(&app.base, top).await == truth,
        "the rows are the devnet's chain"
    );
    net.shutdown();
    everything
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    let stored = all_events(&app.base, "include_removed=true").await;
    let removed: HashSet<i64> = stored
        .iter()
        .filter(|e| e["removed"] == true)
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect();
    let seen = everything.finish().await;
    for cursor in &seen.events {
        assert_eq!(
            seen.removed.get(cursor).copied().unwrap_or(0),
            usize::from(removed.contains(cursor)),
            "removed messages for event {cursor}"
        );
    }
    eprintln!(
        "automatic reorgs: {} rows, {} removed, {} streamed",
        stored.len(),
        removed.len(),
        seen.events.len()
    );
    app.stop().await;
}
