//! Failover: a client sends a steady stream of reads through the gateway while the preferred
//! provider drops connections, stalls, answers 5xx, answers garbage or rate-limits. Not one
//! read fails while the other provider is healthy; the breaker opens on the faults and closes
//! again once they stop.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, TestApp, get_json, parse_config, start_app, wait_for};

/// Reads sent per fault.
const READS: usize = 24;

async fn read(client: &reqwest::Client, rpc: &str, body: &Value) -> Value {
    let response = client
        .post(rpc)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "{body}");
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// The reads of one round: the head, its block, and that block's logs in one batch.
async fn round(client: &reqwest::Client, rpc: &str, fault: &str) {
    let head = read(
        client,
        rpc,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}),
    )
    .await;
    let number = head["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{fault}: eth_blockNumber failed: {head}"))
        .to_owned();
    let batch = json!([
        {"jsonrpc": "2.0", "id": "b", "method": "eth_getBlockByNumber", "params": [number, false]},
        {"jsonrpc": "2.0", "id": "l", "method": "eth_getLogs", "params": [{"fromBlock": number, "toBlock": number}]},
    ]);
    let answers = read(client, rpc, &batch).await;
    let answers = answers
        .as_array()
        .unwrap_or_else(|| panic!("{fault}: not a batch answer: {answers}"));
    for answer in answers {
        assert!(
            answer.get("error").is_none(),
            "{fault}: a read failed: {answer}"
        );
        assert!(
            !answer["result"].is_null(),
            "{fault}: block {number} not found: {answer}"
        );
    }
}

/// A provider's breaker state and whether it counts as healthy (`/v1/providers`).
async fn breaker_state(app: &TestApp, id: &str) -> (String, bool) {
    let (_, body) = get_json(&app.url("/v1/providers")).await;
    let entry = body["providers"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["id"] == id))
        .cloned()
        .unwrap_or_default();
    let state = entry["breaker"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (state, entry["healthy"] == true)
}

/// The service's YAML with p0 preferred by priority, so each fault meets it first whatever the
/// latencies.
fn p0_first(devnet: &support::TestDevnet, db: &std::path::Path, chain: &str) -> String {
    support::service_yaml(devnet, db)
        .replace("  devnet:\n", &format!("  {chain}:\n"))
        .replace("      - id: p0\n", "      - id: p0\n        priority: 0\n")
        .replace("      - id: p1\n", "      - id: p1\n        priority: 1\n")
}

/// The sum of metric `name`'s samples of chain `chain` whose labels also hold `with`: metrics
/// are one registry for the whole test process, so each test here names its chain.
async fn chain_metric(app: &TestApp, name: &str, chain: &str, with: &[&str]) -> f64 {
    let chain = format!("chain=\"{chain}\"");
    support::metrics_text(app)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&chain))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn reads_never_fail_while_one_provider_is_healthy() {
    let devnet = support::devnet(2, 100, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = p0_first(&devnet, &dir.path().join("gw.db"), "failover");
    let yaml = format!(
        "{providers}breaker: {{ failure_threshold: 3, recovery_timeout: 1000 }}\n\
         health: {{ stall_timeout: 2000, max_lag_blocks: 1000 }}\n\
         gateway: {{ timeout: 1000 }}\n"
    );
    let app = start_app(parse_config(&yaml)).await;
    let rpc = app.url("/rpc/failover");
    let client = reqwest::Client::new();
    round(&client, &rpc, "no fault").await;
    let p0 = devnet.faults(0).expect("provider 0");
    let faults: [(&str, &dyn Fn(bool)); 5] = [
        ("refused connections", &|on| p0.set_refuse_connections(on)),
        ("stall", &|on| p0.set_stalled(on)),
        ("HTTP 503", &|on| p0.set_server_error(on.then_some(503))),
        ("garbage", &|on| p0.set_http_garbage(on)),
        ("429", &|on| p0.set_rate_limited(on)),
    ];
    for (name, set) in faults {
        set(true);
        for _ in 0..READS {
            round(&client, &rpc, name).await;
        }
        if name == "HTTP 503" {
            let opened = chain_metric(
                &app,
                "livechain_breaker_transitions_total",
                "failover",
                &["provider=\"p0\"", "to=\"open\""],
            )
            .await;
            assert!(opened > 0.0, "the breaker opened on 5xx");
        }
        set(false);
        // Back to health: the breaker closes again (recovery 1 s, then a probe passes) and
        // the provider catches up, so the next fault meets it first in line.
        let closed = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                (breaker_state(&app, "p0").await == ("closed".to_owned(), true)).then_some(())
            },
        )
        .await;
        assert!(
            closed.is_some(),
            "{name}: p0 did not recover: {:?}",
            breaker_state(&app, "p0").await
        );
    }
    let retried = chain_metric(
        &app,
        "livechain_gateway_retries_total",
        "failover",
        &["provider=\"p0\""],
    )
    .await;
    assert!(
        retried >= 1.0,
        "calls passed on from p0 are counted: {retried}"
    );
    app.stop().await;
}

/// A provider that hangs is hedged, not waited for: with a 30 s timeout, reads still come back
/// from the other provider before the client's own 10 s deadline, and the hedges are counted.
#[tokio::test]
async fn a_hanging_provider_is_hedged_not_waited_for() {
    let devnet = support::devnet(2, 100, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = p0_first(&devnet, &dir.path().join("hedge.db"), "hedge");
    let yaml = format!("{providers}gateway: {{ timeout: 30000 }}\n");
    let app = start_app(parse_config(&yaml)).await;
    let rpc = app.url("/rpc/hedge");
    let client = reqwest::Client::new();
    round(&client, &rpc, "no fault").await;
    devnet.faults(0).expect("p0").set_stalled(true);
    for i in 0..3 {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": ["0x1", false]});
        let answer = read(&client, &rpc, &body).await;
        assert!(answer["result"]["hash"].is_string(), "read {i}: {answer}");
    }
    devnet.faults(0).expect("p0").set_stalled(false);
    let hedged = chain_metric(
        &app,
        "livechain_gateway_retries_total",
        "hedge",
        &["reason=\"hedged\""],
    )
    .await;
    assert!(hedged >= 1.0, "hedges counted: {hedged}");
    app.stop().await;
}

/// Consistency for a caller: `eth_blockNumber` never goes back for a caller when the provider
/// ahead fails now and then and the one lagging 8 blocks is all that answers.
#[tokio::test]
async fn tags_never_go_back_for_a_caller() {
    let devnet = support::devnet(2, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // p0 ahead and preferred; p1 behind, never unhealthy for its lag.
    let providers = p0_first(&devnet, &dir.path().join("lag.db"), "tags");
    // Heads forwarded, not taken from the streams: the providers' answers are the point.
    let yaml = format!(
        "{providers}health: {{ max_lag_blocks: 1000 }}\ngateway: {{ head_from_streams: false }}\n"
    );
    let app = start_app(parse_config(&yaml)).await;
    let rpc = app.url("/rpc/tags");
    let client = reqwest::Client::new();
    let (p0, p1) = (devnet.faults(0).expect("p0"), devnet.faults(1).expect("p1"));
    p1.set_lag_blocks(8);
    assert!(
        devnet
            .wait_for_head(devnet.head() + 12, Duration::from_secs(20))
            .await
    );
    let mut seen = 0;
    for i in 0..40u64 {
        p0.set_server_error((i % 4 == 3).then_some(503));
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"});
        let head = read(&client, &rpc, &body).await;
        let hex = head["result"]
            .as_str()
            .unwrap_or_else(|| panic!("call {i}: {head}"));
        let n = u64::from_str_radix(hex.trim_start_matches("0x"), 16).expect("a quantity");
        assert!(
            n >= seen,
            "call {i}: eth_blockNumber went back from {seen} to {n}"
        );
        seen = n;
    }
    app.stop().await;
}

/// A provider that has not reached the block asked for is passed over, not believed: with the
/// lagging provider preferred, the newest block still comes back.
#[tokio::test]
async fn a_provider_behind_is_not_believed() {
    let devnet = support::devnet(2, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // p0 behind and preferred; never unhealthy for its lag.
    let providers = p0_first(&devnet, &dir.path().join("behind.db"), "behind");
    // Heads forwarded, not taken from the streams: the providers' answers are the point.
    let yaml = format!(
        "{providers}health: {{ max_lag_blocks: 1000 }}\ngateway: {{ head_from_streams: false }}\n"
    );
    let app = start_app(parse_config(&yaml)).await;
    let rpc = app.url("/rpc/behind");
    let client = reqwest::Client::new();
    devnet.faults(0).expect("p0").set_lag_blocks(8);
    assert!(
        devnet
            .wait_for_head(devnet.head() + 12, Duration::from_secs(20))
            .await
    );
    for i in 0..10u64 {
        let n = devnet.head().saturating_sub(1);
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [format!("0x{n:x}"), false]});
        let block = read(&client, &rpc, &body).await;
        assert!(
            block["result"]["hash"].is_string(),
            "block {n} believed missing: {block}"
        );
    }
    app.stop().await;
}
