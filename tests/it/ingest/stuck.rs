//! Providers far below the stored checkpoint (a node reset, a restarted Anvil, another chain
//! behind the same URL): the chain is not ready and says why, its lag is honest, and
//! `livechain reset-chain` is the way out.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use livechain::devnet::DevnetConfig;
use serde_json::Value;

use super::{CHAIN, POLL, WAIT};
use crate::support::{self, get_json, parse_config, service_yaml, start_app, wait_for};

/// A devnet that never produces on its own: its head stays at `initial_blocks`.
fn still(seed: u64, initial_blocks: u64) -> DevnetConfig {
    DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 2,
        block_time_ms: 3_600_000,
        logs_per_block: 2,
        seed,
        initial_blocks,
        ..DevnetConfig::default()
    }
}

/// `/ready`'s answer once it is a 503 whose message contains `needle`.
async fn not_ready_saying(base: &str, needle: &str) -> Value {
    let url = format!("{base}/ready");
    let found = wait_for(WAIT, POLL, || async {
        let (status, body) = get_json(&url).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        (status == 503 && message.contains(needle)).then_some(body)
    })
    .await;
    match found {
        Some(body) => body,
        None => panic!("/ready never said {needle:?}: {:?}", get_json(&url).await),
    }
}

fn chain_json(body: &Value) -> Value {
    body["chains"]
        .as_array()
        .and_then(|chains| chains.iter().find(|c| c["name"] == CHAIN))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `livechain reset-chain devnet --config <config>`: its exit success and what it printed.
fn reset_chain(config: &std::path::Path) -> (bool, String) {
    let output = Command::new(support::livechain_bin())
        .args(["reset-chain", CHAIN, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running livechain reset-chain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_far_below_the_checkpoint_are_reported_and_reset_chain_starts_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("stuck.db");

    // First life: the chain indexed up to block 60.
    let first = support::devnet_with(still(1, 60)).await;
    let app = start_app(parse_config(&service_yaml(&first, &db))).await;
    super::wait_committed(&db, 60).await;
    app.stop().await;
    drop(first);

    // The same chain, reset to block 5 (a node that lost its data): not ready, and why.
    let reset = support::devnet_with(still(1, 5)).await;
    let app = start_app(parse_config(&service_yaml(&reset, &db))).await;
    let body = not_ready_saying(&app.base, "blocks below the stored checkpoint").await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for needle in [
        "chain devnet",
        "(5)",
        "(60)",
        "livechain reset-chain devnet",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert!(!message.contains("another chain"), "{message}");
    let (_, chains) = get_json(&app.url("/v1/chains")).await;
    let chain = chain_json(&chains);
    assert_eq!(chain["checkpoint"], 60, "{chain}");
    assert_eq!(
        chain["lag_blocks"], -55,
        "the lag is honest, never 0: {chain}"
    );
    assert!(
        chain["problem"]
            .as_str()
            .is_some_and(|p| p.contains("(60)")),
        "{chain}"
    );
    app.stop().await;
    drop(reset);

    // Another chain behind the same URLs (another seed): said so.
    let other = support::devnet_with(still(2, 5)).await;
    let config = dir.path().join("other.yaml");
    std::fs::write(&config, service_yaml(&other, &db)).expect("writing the config");
    let app = start_app(parse_config(&service_yaml(&other, &db))).await;
    not_ready_saying(&app.base, "serves another chain").await;

    // The way out needs the service stopped: refused while it runs.
    let (ok, text) = reset_chain(&config);
    assert!(!ok, "reset-chain ran under a live service: {text}");
    assert!(
        text.contains("in use by another livechain process"),
        "{text}"
    );
    app.stop().await;

    let (ok, text) = reset_chain(&config);
    assert!(ok, "{text}");
    assert!(text.contains("checkpoint at block 60 is deleted"), "{text}");

    // Started again, it indexes the providers' chain from the configured start (block 0).
    let app = start_app(parse_config(&service_yaml(&other, &db))).await;
    super::wait_committed(&db, 5).await;
    let ready = wait_for(WAIT, POLL, || async {
        let (status, _) = get_json(&app.url("/ready")).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "not ready after the reset");
    let canonical = support::all_events(&app.base, "kind=block").await;
    let numbers: Vec<u64> = canonical
        .iter()
        .filter_map(|e| e["block_number"].as_u64())
        .collect();
    assert_eq!(
        numbers,
        (0..=5).collect::<Vec<_>>(),
        "the new chain's blocks"
    );
    for event in &canonical {
        let n = event["block_number"].as_u64().unwrap_or(u64::MAX);
        let hash = other.block(n).map(|b| b.header.hash.to_string());
        assert_eq!(event["block_hash"].as_str(), hash.as_deref(), "{event}");
    }
    // The first life's 61 blocks are all retracted, none deleted.
    let removed = support::all_events(&app.base, "kind=block&include_removed=true")
        .await
        .into_iter()
        .filter(|e| e["removed"] == true)
        .count();
    assert_eq!(removed, 61);
    app.stop().await;
}
