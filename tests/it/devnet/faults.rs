//! Devnet: Per-provider faults: latency, dropped sockets, message limits, log range limits, slow clients.

use super::*;

#[tokio::test]
async fn latency_fault_delays_answers_of_one_provider() {
    let net = start(config(FROZEN, 5)).await;
    let delay = Duration::from_millis(150);
    net.faults(0).unwrap().set_latency_ms(150);
    let started = tokio::time::Instant::now();
    http_result(&net.http(0), "eth_blockNumber", json!([])).await;
    assert!(
        started.elapsed() >= delay,
        "HTTP answers wait for the latency"
    );
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let started = tokio::time::Instant::now();
    ws.result("eth_blockNumber", json!([])).await;
    assert!(
        started.elapsed() >= delay,
        "WebSocket answers wait for the latency"
    );
    net.faults(0).unwrap().clear();
    assert!(
        net.faults(1).unwrap().latency().is_zero(),
        "faults are per provider"
    );
    assert!(net.faults(2).is_none());
}

#[tokio::test]
async fn latency_fault_delays_notifications() {
    let net = start(config(20, 5)).await;
    net.faults(1).unwrap().set_latency_ms(300);
    let mut ws = Ws::connect(&net.ws_url(1)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let (_, head) = ws.notification().await.unwrap();
    let number = u64::from_str_radix(
        head["number"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    // The block was produced at least 300 ms (~15 block times) before it arrived: by now the
    // chain has moved on.
    assert!(
        net.head() > number,
        "head {} vs delivered {number}",
        net.head()
    );
}

#[tokio::test]
async fn drop_sockets_closes_only_that_providers_connections() {
    let net = start(config(50, 5)).await;
    let mut a = Ws::connect(&net.ws_url(0)).await;
    let mut b = Ws::connect(&net.ws_url(0)).await;
    let mut c = Ws::connect(&net.ws_url(1)).await;
    a.subscribe(json!(["newHeads"])).await;
    b.result("eth_chainId", json!([])).await;
    c.subscribe(json!(["newHeads"])).await;
    assert!(wait_until(|| net.open_connections(0) == 2).await);
    net.faults(0).unwrap().drop_sockets();
    for ws in [&mut a, &mut b] {
        let mut closed = false;
        for _ in 0..100 {
            if ws.next_message().await.is_none() {
                closed = true;
                break;
            }
        }
        assert!(closed, "provider 0 connections are dropped");
    }
    assert!(wait_until(|| net.active_subscriptions(0) == 0 && net.open_connections(0) == 0).await);
    assert!(c.notification().await.is_some(), "provider 1 keeps serving");
    let mut again = Ws::connect(&net.ws_url(0)).await;
    assert_eq!(
        again.result("eth_chainId", json!([])).await,
        "0x7a69",
        "reconnecting works"
    );
}

#[tokio::test]
async fn drop_after_messages_closes_after_n_notifications() {
    let net = start(config(20, 5)).await;
    net.faults(0).unwrap().set_drop_after_messages(Some(5));
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut received = 0;
    while ws.notification().await.is_some() {
        received += 1;
        assert!(received <= 5, "no notification past the limit");
    }
    assert_eq!(received, 5);
}

#[tokio::test]
async fn max_logs_range_refuses_wide_queries() {
    let net = start(config(FROZEN, 200)).await;
    net.faults(0).unwrap().set_max_logs_range(Some(100));
    let wide = json!([{"fromBlock": "0x0", "toBlock": "0x64"}]);
    let response = http_call(&net.http(0), "eth_getLogs", wide.clone()).await;
    assert_eq!(response["error"]["code"], -32005);
    assert_eq!(
        response["error"]["message"],
        "query exceeds max block range 100"
    );
    let narrow = json!([{"fromBlock": "0x0", "toBlock": "0x63"}]);
    let logs = as_logs(http_result(&net.http(0), "eth_getLogs", narrow).await);
    assert_eq!(logs.len(), 99 * 8, "genesis has no logs");
    let tags = json!([{"fromBlock": "earliest", "toBlock": "latest"}]);
    let response = http_call(&net.http(0), "eth_getLogs", tags.clone()).await;
    assert_eq!(
        response["error"]["code"], -32005,
        "tags count as their heights"
    );
    let other = as_logs(http_result(&net.http(1), "eth_getLogs", wide).await);
    assert_eq!(other.len(), 100 * 8, "the other provider has no limit");
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    assert_eq!(ws.call("eth_getLogs", tags).await["error"]["code"], -32005);
}

#[tokio::test]
async fn slow_subscriber_is_disconnected_in_timed_mode() {
    let net = start(DevnetConfig {
        logs_per_block: 300,
        ..config(5, 1)
    })
    .await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["logs"])).await;
    let mut reader = Ws::connect(&net.ws_url(1)).await;
    reader.subscribe(json!(["newHeads"])).await;
    // `ws` never reads again: its socket buffers fill, then its queue, then it is dropped.
    assert!(
        wait_until(|| net.open_connections(0) == 0).await,
        "slow client disconnected"
    );
    assert_eq!(net.active_subscriptions(0), 0);
    assert!(
        reader.notification().await.is_some(),
        "a reading client is unaffected"
    );
    drop(ws);
}
