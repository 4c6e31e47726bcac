//! `logs` subscriptions the chain's configured subscriptions do not cover: the chain follows
//! the filter while callers hold it (one upstream subscription per provider, shared by every
//! caller asking for it, dropped when the last one leaves), with the feed's guarantees; at most
//! `gateway.max_dynamic_filters` of them.

use std::time::Duration;

use serde_json::{Value, json};

use super::subscriptions::{Client, check_logs_of, fail_over_and_reorg};
use crate::support::{self, parse_config, start_app};

/// The service's YAML for `devnet` as chain `name`, indexing blocks and the logs of the
/// devnet's first contract only; `extra` appended at the top level.
fn first_contract_only(devnet: &support::TestDevnet, db: &std::path::Path, name: &str) -> String {
    let first = devnet.contracts()[0];
    support::service_yaml(devnet, db)
        .replace("  devnet:\n", &format!("  {name}:\n"))
        .replace(
            "      - logs: { from_block: 0 }\n",
            &format!("      - logs: {{ address: \"{first}\", from_block: 0 }}\n"),
        )
}

/// The value of `metric` for chain `chain`, if exported.
async fn gauge(app: &support::TestApp, metric: &str, chain: &str) -> Option<f64> {
    support::metrics_text(app).await.lines().find_map(|l| {
        let rest = l.strip_prefix(metric)?;
        rest.contains(&format!("chain=\"{chain}\""))
            .then(|| l.rsplit(' ').next()?.parse().ok())?
    })
}

/// Waits (bounded) until provider `p` holds `n` subscriptions.
async fn upstream_subscriptions(devnet: &support::TestDevnet, p: usize, n: usize) -> bool {
    support::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let now = devnet.active_subscriptions(p);
        async move { (now == n).then_some(()) }
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_filter_nobody_indexes_is_followed_while_callers_hold_it() {
    let devnet = support::devnet(2, 100, 6, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = first_contract_only(&devnet, &dir.path().join("d.db"), "dyn");
    let app = start_app(parse_config(&yaml)).await;
    // newHeads and the first contract's logs, on each provider.
    assert!(upstream_subscriptions(&devnet, 1, 2).await, "configured");
    let url = app.url("/rpc/dyn").replacen("http://", "ws://", 1);
    let contracts = devnet.contracts();
    let wanted: Vec<String> = contracts[1..4].iter().map(|a| a.to_string()).collect();
    // Two callers, the same filter written two ways: one filter for the chain.
    let mut a = Client::connect(&url).await;
    let sub_a = a
        .call(1, "eth_subscribe", json!(["logs", {"address": wanted}]))
        .await["result"]
        .clone();
    let mut reversed = wanted.clone();
    reversed.reverse();
    let mut b = Client::connect(&url).await;
    let sub_b = b
        .call(1, "eth_subscribe", json!(["logs", {"address": reversed}]))
        .await["result"]
        .clone();
    assert!(sub_a.is_string() && sub_b.is_string(), "{sub_a} {sub_b}");
    assert!(upstream_subscriptions(&devnet, 1, 3).await, "followed once");
    assert_eq!(
        gauge(&app, "livechain_dynamic_log_filters", "dyn").await,
        Some(1.0)
    );

    let end = fail_over_and_reorg(&devnet).await;
    let stored = support::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        let base = app.url("");
        async move {
            support::checkpoint(&base, "dyn")
                .await
                .filter(|&c| c >= end)
        }
    })
    .await;
    assert!(stored.is_some(), "the chain reached {end}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let of_wanted = |log: &Value| {
        log["address"]
            .as_str()
            .is_some_and(|got| wanted.iter().any(|w| w.eq_ignore_ascii_case(got)))
    };
    for (client, sub) in [(&a, &sub_a), (&b, &sub_b)] {
        let logs = client.of(sub);
        assert!(logs.iter().all(of_wanted), "only the filter's logs");
        check_logs_of(&logs, &devnet, end, &of_wanted);
    }

    // The last caller gone, the chain stops following the filter.
    assert_eq!(
        a.call(2, "eth_unsubscribe", json!([sub_a])).await["result"],
        true
    );
    assert!(
        upstream_subscriptions(&devnet, 1, 3).await,
        "b still holds it"
    );
    b.close().await;
    assert!(
        upstream_subscriptions(&devnet, 1, 2).await,
        "dropped with b"
    );
    assert_eq!(
        gauge(&app, "livechain_dynamic_log_filters", "dyn").await,
        Some(0.0)
    );
    app.stop().await;
}

/// With a provider over HTTP only, nothing streams: what a dynamic subscription receives is
/// what the range sync reads for its filter.
#[tokio::test]
async fn dynamic_filters_are_limited_per_chain_and_read_by_the_range_sync() {
    let devnet = support::devnet(1, 100, 8, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = format!("        ws_url: \"{}\"\n", devnet.endpoints()[0].ws_url);
    let yaml = first_contract_only(&devnet, &dir.path().join("l.db"), "few").replace(&ws, "")
        + "gateway: { max_dynamic_filters: 1 }\n";
    assert!(!yaml.contains("ws_url"), "{yaml}");
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/few").replacen("http://", "ws://", 1);
    let contracts = devnet.contracts();
    let logs_of = |i: usize| json!(["logs", {"address": contracts[i].to_string()}]);
    let mut client = Client::connect(&url).await;
    let covered = client.call(1, "eth_subscribe", logs_of(0)).await;
    assert!(covered["result"].is_string(), "indexed: {covered}");
    let first = client.call(2, "eth_subscribe", logs_of(1)).await;
    assert!(first["result"].is_string(), "the one allowed: {first}");
    let shared = client.call(3, "eth_subscribe", logs_of(1)).await;
    assert!(shared["result"].is_string(), "the same filter: {shared}");
    let refused = client.call(4, "eth_subscribe", logs_of(2)).await;
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_dynamic_filters"), "{message}");
    // Released by both subscriptions, the room is back.
    for (id, sub) in [(5, &first), (6, &shared)] {
        let gone = client
            .call(id, "eth_unsubscribe", json!([sub["result"]]))
            .await;
        assert_eq!(gone["result"], true);
    }
    let again = client.call(7, "eth_subscribe", logs_of(2)).await;
    assert!(again["result"].is_string(), "room again: {again}");

    let end = devnet.head() + 15;
    assert!(devnet.wait_for_head(end, Duration::from_secs(20)).await);
    let stored = support::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let base = app.url("");
        async move {
            support::checkpoint(&base, "few")
                .await
                .filter(|&c| c >= end)
        }
    })
    .await;
    assert!(stored.is_some(), "the chain reached {end}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = contracts[2].to_string();
    let logs = client.of(&again["result"]);
    let of_third = |log: &Value| {
        log["address"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(&third))
    };
    assert!(logs.len() >= 3 && logs.iter().all(of_third), "{logs:?}");
    check_logs_of(&logs, &devnet, end, &of_third);
    app.stop().await;
}
