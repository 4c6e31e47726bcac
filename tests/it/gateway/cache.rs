//! Final answers kept: a block, its logs or anything by hash at or below the finalized height
//! is answered again without a provider (`x-livechain-cache: hit`), the same bytes; nothing
//! at a tag or above the finalized height is; `gateway.cache_bytes: 0` keeps nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, parse_config, start_app};

/// POSTs `body`: the cache header (if any) and the body.
async fn ask(url: &str, body: &Value) -> (Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let cache = response
        .headers()
        .get("x-livechain-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    (cache, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn call(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Asks `body` until the range sync has read a finalized height covering it and the second
/// copy is answered from the cache (bounded); the two answers.
async fn until_kept(url: &str, body: &Value) -> Option<(Value, Value)> {
    for _ in 0..100 {
        let (_, first) = ask(url, body).await;
        let (cache, second) = ask(url, body).await;
        if cache.as_deref() == Some("hit") {
            return Some((first, second));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn final_answers_are_kept_and_nothing_else() {
    let devnet = support::devnet(1, 200, 3, 60).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A chain name of its own: the metrics registry is shared by this process's tests, and
    // another one sets the same gauge to 0 for `devnet`.
    let yaml = support::service_yaml(&devnet, &dir.path().join("c.db"))
        .replace("\n  devnet:\n", "\n  kept:\n");
    assert!(yaml.contains("\n  kept:\n"), "{yaml}");
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/kept");

    // Block 5 is final (the devnet finalizes 32 below its head): kept.
    let block = call(1, "eth_getBlockByNumber", json!(["0x5", true]));
    let (first, second) = until_kept(&url, &block).await.expect("block 5 kept");
    assert_eq!(first, second, "the same answer");
    assert_eq!(second["result"]["number"], "0x5");
    let hash = second["result"]["hash"].clone();

    // Its logs by range, the block by hash, the chain id. (Receipts, kept once their block is
    // final, are the unit tests' in `gateway::cache`: the devnet serves none.)
    let logs = call(
        2,
        "eth_getLogs",
        json!([{"fromBlock": "0x5", "toBlock": "0x5"}]),
    );
    assert!(
        until_kept(&url, &logs).await.is_some(),
        "logs of a final range"
    );
    let by_hash = call(3, "eth_getBlockByHash", json!([hash, false]));
    assert!(
        until_kept(&url, &by_hash).await.is_some(),
        "a block by hash"
    );
    let (_, kept) = until_kept(&url, &call(4, "eth_chainId", json!([])))
        .await
        .expect("the chain id");
    assert_eq!(kept["result"], format!("0x{:x}", devnet.config().chain_id));

    // Never at a tag, never above the finalized height.
    for body in [
        call(5, "eth_getBlockByNumber", json!(["latest", false])),
        call(7, "eth_getLogs", json!([{"fromBlock": "0x5"}])),
    ] {
        ask(&url, &body).await;
        let (cache, answer) = ask(&url, &body).await;
        assert_eq!(cache, None, "{body} answered {answer}");
    }
    let head = devnet.head();
    let recent = call(
        8,
        "eth_getBlockByNumber",
        json!([format!("0x{head:x}"), false]),
    );
    ask(&url, &recent).await;
    assert_eq!(
        ask(&url, &recent).await.0,
        None,
        "block {head} is not final"
    );

    // A batch of a kept answer and another: partial, each in its place.
    let batch = json!([
        block,
        call(9, "eth_getBlockByNumber", json!(["latest", false]))
    ]);
    let (cache, answers) = ask(&url, &batch).await;
    assert_eq!(cache.as_deref(), Some("partial"));
    assert_eq!(answers[0]["result"]["number"], "0x5");
    assert!(answers[1]["result"]["number"].is_string(), "{answers}");

    let hits = support::metrics_text(&app)
        .await
        .lines()
        .any(|l| l.starts_with("livechain_gateway_cache_bytes{") && !l.ends_with(" 0"));
    assert!(hits, "the kept bytes are exported");
    app.stop().await;
}

#[tokio::test]
async fn a_cache_of_zero_bytes_keeps_nothing() {
    let devnet = support::devnet(1, 200, 3, 60).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml =
        support::service_yaml(&devnet, &dir.path().join("z.db")) + "gateway: { cache_bytes: 0 }\n";
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/devnet");
    let block = call(1, "eth_getBlockByNumber", json!(["0x5", false]));
    let chain_id = call(2, "eth_chainId", json!([]));
    // Long enough for the range sync to have read the finalized height.
    let stored = support::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let base = app.url("");
        async move {
            support::checkpoint(&base, "devnet")
                .await
                .filter(|&c| c >= 40)
        }
    })
    .await;
    assert!(stored.is_some(), "the chain was read");
    for body in [&block, &chain_id, &block, &chain_id] {
        let (cache, answer) = ask(&url, body).await;
        assert_eq!(cache, None, "{answer}");
        assert!(
            answer["result"].is_string() || answer["result"].is_object(),
            "{answer}"
        );
    }
    app.stop().await;
}

/// `eth_blockNumber` is the head the healthy providers' streams delivered last, answered
/// without a provider (`hit`); with no healthy stream it is forwarded; either way it never
/// goes back for a caller.
#[tokio::test]
async fn the_head_comes_from_the_streams_while_one_is_healthy() {
    let devnet = support::devnet(2, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = support::service_yaml(&devnet, &dir.path().join("h.db"));
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/devnet");
    let p1 = devnet.faults(1).expect("p1");
    // p0 lags 8 blocks: unhealthy (max_lag_blocks 5), its stream's head not believed.
    devnet.faults(0).expect("p0").set_lag_blocks(8);
    let head = call(1, "eth_blockNumber", json!([]));
    let number = |answer: &Value| {
        let hex = answer["result"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        u64::from_str_radix(hex.trim_start_matches("0x"), 16).expect("a quantity")
    };
    let streamed = support::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let (url, head) = (url.clone(), head.clone());
        async move {
            let (cache, answer) = ask(&url, &head).await;
            (cache.as_deref() == Some("hit")).then_some(answer)
        }
    })
    .await
    .expect("answered from the streams");
    let at = devnet.head();
    assert!(number(&streamed) + 2 >= at, "{streamed} at head {at}");

    let mut seen = number(&streamed);
    let mut forwarded = 0;
    for phase in [true, false] {
        p1.set_refuse_connections(phase);
        for _ in 0..30 {
            let (cache, answer) = ask(&url, &head).await;
            let n = number(&answer);
            assert!(n >= seen, "went back from {seen} to {n}");
            seen = n;
            forwarded += usize::from(cache.is_none());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        forwarded > 0,
        "forwarded while no healthy provider streamed"
    );
    let back = support::wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let (url, head) = (url.clone(), head.clone());
        async move { (ask(&url, &head).await.0.as_deref() == Some("hit")).then_some(()) }
    })
    .await;
    assert!(back.is_some(), "from the streams again once p1 is back");
    app.stop().await;
}
