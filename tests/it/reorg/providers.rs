//! A provider that lags behind the others (a shorter chain, late heads), or sits alone on another
//! branch, is not a reorg.

use std::collections::HashSet;
use std::time::Duration;

use super::{Collector, canonical_rows, devnet_rows, wait_checkpoint};
use crate::support::{self, all_events, parse_config, service_yaml, start_app};

/// One provider 8 blocks behind all along, another falling 20 behind and catching up: nothing
/// is removed, no reorg is counted, and the rows are the devnet's chain.
#[tokio::test]
async fn lagging_providers_are_not_reorgs() {
    let net = support::devnet(3, 20, 3, 40).await;
    let faults = |i| net.faults(i).expect("a provider");
    faults(1).set_lag_blocks(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("a.db")))).await;
    assert!(net.wait_for_head(80, Duration::from_secs(30)).await);
    faults(2).set_lag_blocks(20);
    assert!(net.wait_for_head(120, Duration::from_secs(30)).await);
    faults(2).set_lag_blocks(0);
    let top = net.head();
    wait_checkpoint(&app.base, top, Duration::from_secs(30)).await;
    assert!(
        canonical_rows(&app.base, top).await == devnet_rows(&net, top),
        "the rows are the devnet's chain"
    );
    let stored = all_events(&app.base, "include_removed=true").await;
    assert!(
        stored.iter().all(|e| e["removed"] == false),
        "nothing removed"
    );
    // (No metric check: the recorder is global to the test binary, and other tests reorganise
    // chains also named `devnet`.)
    app.stop().await;
}

/// Two devnets of one seed serve the same chain; once the service has checkpointed it, one of
/// them (a single provider of three) reorganises 5 blocks alone and stays on its own branch,
/// behind the others. It is outvoted: the rows stay those of the majority's chain, and no event
/// of that chain is ever retracted.
#[tokio::test]
async fn a_provider_alone_on_another_branch_is_outvoted() {
    let majority = support::devnet(2, 20, 3, 40).await;
    let loner = support::devnet(1, 20, 3, 40).await;
    let mut providers = String::new();
    let endpoints = majority.endpoints().iter().chain(loner.endpoints());
    for (i, e) in endpoints.enumerate() {
        providers.push_str(&format!(
            "      - id: p{i}\n        url: \"{}\"\n        ws_url: \"{}\"\n",
            e.http_url, e.ws_url
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: {}\n    providers:\n{providers}    \
         subscriptions:\n      - blocks: true\n      - logs: {{ from_block: 0 }}\n",
        dir.path().join("a.db").display(),
        majority.config().chain_id,
    );
    let app = start_app(parse_config(&yaml)).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let everything = Collector::start(&ws_base, "");
    assert!(majority.wait_for_head(60, Duration::from_secs(30)).await);
    wait_checkpoint(
        &app.base,
        majority.head().saturating_sub(2),
        Duration::from_secs(20),
    )
    .await;
    loner.reorg(5);
    assert!(
        majority
            .wait_for_head(majority.head() + 60, Duration::from_secs(30))
            .await
    );
    let top = majority.head();
    wait_checkpoint(&app.base, top, Duration::from_secs(30)).await;
    let truth = devnet_rows(&majority, top);
    assert!(
        canonical_rows(&app.base, top).await == truth,
        "the rows are the majority's chain"
    );
    majority.shutdown();
    loner.shutdown();
    everything
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    let seen = everything.finish().await;
    let stored = all_events(&app.base, "include_removed=true").await;
    let canonical: HashSet<&str> = truth.iter().map(|r| r.1.as_str()).collect();
    let retracted_canonical: Vec<&serde_json::Value> = stored
        .iter()
        .filter(|e| {
            e["cursor"]
                .as_i64()
                .is_some_and(|c| seen.removed.contains_key(&c))
        })
        .filter(|e| {
            e["block_hash"]
                .as_str()
                .is_some_and(|h| canonical.contains(h))
        })
        .collect();
    assert!(
        retracted_canonical.is_empty(),
        "events of the majority's chain were retracted: {retracted_canonical:?}"
    );
    app.stop().await;
}
