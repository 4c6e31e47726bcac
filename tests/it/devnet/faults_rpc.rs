//! Devnet: request-level faults — 429 / -32005 rate limits, 5xx / -32603, a seeded error rate,
//! and a provider lagging behind the head.

use super::*;

/// Status, `Retry-After` and the JSON-RPC error code of one HTTP call.
async fn http_fault(url: &str, method: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(request(method, json!([])).to_string())
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, retry_after, body["error"]["code"].clone())
}

#[tokio::test]
async fn rate_limits_answer_429_and_32005_while_notifications_flow() {
    let net = start(config(20, 5)).await;
    let faults = net.faults(0).unwrap();
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    faults.set_rate_limited(true);
    let (status, retry_after, code) = http_fault(&net.http(0), "eth_blockNumber").await;
    assert_eq!(
        (status, retry_after.as_deref(), code),
        (429, Some("1"), json!(-32005))
    );
    let refused = ws.call("eth_blockNumber", json!([])).await;
    assert_eq!(refused["error"]["code"], -32005);
    assert_eq!(refused["error"]["message"], "rate limit exceeded");
    ws.notifications.clear();
    assert!(ws.notification().await.is_some(), "notifications continue");
    http_result(&net.http(1), "eth_blockNumber", json!([])).await;

    faults.set_rate_limited(false);
    http_result(&net.http(0), "eth_blockNumber", json!([])).await;
    ws.result("eth_chainId", json!([])).await;

    // A burst: the next two requests, wherever they come from, then nothing.
    faults.rate_limit_burst(2);
    assert_eq!(http_fault(&net.http(0), "eth_chainId").await.0, 429);
    assert_eq!(
        ws.call("eth_chainId", json!([])).await["error"]["code"],
        -32005
    );
    assert!(!faults.is_rate_limited());
    ws.result("eth_chainId", json!([])).await;
    http_result(&net.http(0), "eth_chainId", json!([])).await;
}

#[tokio::test]
async fn server_errors_answer_5xx_and_32603() {
    let net = start(config(FROZEN, 5)).await;
    let faults = net.faults(1).unwrap();
    let mut ws = Ws::connect(&net.ws_url(1)).await;
    for status in [500, 502, 503] {
        faults.set_server_error(Some(status));
        assert_eq!(http_fault(&net.http(1), "eth_chainId").await.0, status);
        let refused = ws.call("eth_chainId", json!([])).await;
        assert_eq!(refused["error"]["code"], -32603);
        assert_eq!(refused["error"]["message"], "internal error");
        http_result(&net.http(0), "eth_chainId", json!([])).await;
    }
    faults.set_server_error(None);
    assert_eq!(
        http_result(&net.http(1), "eth_chainId", json!([])).await,
        "0x7a69"
    );
    assert_eq!(ws.result("eth_chainId", json!([])).await, "0x7a69");
}

/// Which of `count` HTTP calls failed with -32603 on provider 0 of a fresh devnet.
async fn failures(rate: f64, count: usize) -> Vec<bool> {
    let net = start(config(FROZEN, 5)).await;
    net.faults(0).unwrap().set_error_rate(rate);
    let mut failed = Vec::with_capacity(count);
    for _ in 0..count {
        let response = http_call(&net.http(0), "eth_blockNumber", json!([])).await;
        if response.get("error").is_some() {
            assert_eq!(response["error"]["code"], -32603);
            failed.push(true);
        } else {
            failed.push(false);
        }
    }
    let other = http_call(&net.http(1), "eth_blockNumber", json!([])).await;
    assert!(other.get("error").is_none(), "provider 1 is unaffected");
    failed
}

#[tokio::test]
async fn error_rate_fails_the_same_requests_on_every_run() {
    let first = failures(0.5, 60).await;
    let again = failures(0.5, 60).await;
    assert_eq!(first, again, "seeded: the same calls fail");
    let failed = first.iter().filter(|f| **f).count();
    assert!((10..50).contains(&failed), "{failed} of 60 failed at 50%");
    assert!(failures(1.0, 5).await.iter().all(|f| *f));
    assert!(!failures(0.0, 5).await.iter().any(|f| *f));

    let net = start(config(FROZEN, 5)).await;
    net.faults(0).unwrap().set_error_rate(1.0);
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    assert_eq!(
        ws.call("eth_chainId", json!([])).await["error"]["code"],
        -32603
    );
    net.faults(0).unwrap().set_error_rate(0.0);
    assert_eq!(ws.result("eth_chainId", json!([])).await, "0x7a69");
}

#[tokio::test]
async fn a_lagging_provider_serves_an_older_head() {
    let net = start(config(FROZEN, 100)).await;
    let url = net.http(0);
    net.faults(0).unwrap().set_lag_blocks(10);
    assert_eq!(
        http_result(&url, "eth_blockNumber", json!([])).await,
        "0x5a"
    );
    let latest = http_result(&url, "eth_getBlockByNumber", json!(["latest", false])).await;
    assert_eq!(latest["number"], "0x5a");
    let safe = http_result(&url, "eth_getBlockByNumber", json!(["safe", false])).await;
    assert_eq!(safe["number"], quantity(90 - net.safe_depth()));
    let above = http_result(&url, "eth_getBlockByNumber", json!(["0x5f", false])).await;
    assert_eq!(above, Value::Null, "nothing above its head");
    let hash = net.block(95).unwrap().header.hash;
    let by_hash = http_result(&url, "eth_getBlockByHash", json!([hash, false])).await;
    assert_eq!(by_hash, Value::Null);
    let range = json!([{"fromBlock": "0x55", "toBlock": "0x64"}]);
    let logs = as_logs(http_result(&url, "eth_getLogs", range.clone()).await);
    assert_eq!(logs, logs_matching(&net, 85, 90, |_| true));
    assert_eq!(
        http_result(&net.http(1), "eth_blockNumber", json!([])).await,
        "0x64",
        "provider 1 is at the real head"
    );
    net.faults(0).unwrap().set_lag_blocks(0);
    assert_eq!(
        http_result(&url, "eth_blockNumber", json!([])).await,
        "0x64"
    );
}

#[tokio::test]
async fn a_lagging_provider_notifies_late_then_catches_up_without_gaps() {
    let net = start(config(20, 5)).await;
    net.faults(0).unwrap().set_lag_blocks(5);
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut previous: Option<u64> = None;
    for i in 0..30 {
        let (_, head) = ws.notification().await.expect("heads keep coming");
        let header: Header = serde_json::from_value(head).unwrap();
        if let Some(previous) = previous {
            assert_eq!(header.number, previous + 1, "consecutive");
        }
        previous = Some(header.number);
        if i < 5 {
            assert!(
                header.number + 5 <= net.head(),
                "{} is 5 behind",
                header.number
            );
        }
        if i == 5 {
            net.faults(0).unwrap().set_lag_blocks(0);
        }
    }
    let last = previous.unwrap();
    assert!(
        last + 2 >= net.head(),
        "caught up: {last} vs {}",
        net.head()
    );
}
