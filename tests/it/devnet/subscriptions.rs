//! Devnet: `eth_subscribe`: newHeads and logs delivery, ordering, unsubscribe and counts.

use super::*;

#[tokio::test]
async fn new_heads_arrive_in_order_and_link() {
    let net = start(config(50, 5)).await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let id = ws.subscribe(json!(["newHeads"])).await;
    let mut previous: Option<Header> = None;
    for _ in 0..8 {
        let (sub, result) = ws.notification().await.expect("a head");
        assert_eq!(sub, id);
        let header: Header = serde_json::from_value(result).unwrap();
        if let Some(parent) = &previous {
            assert_eq!(header.number, parent.number + 1);
            assert_eq!(header.parent_hash, parent.hash);
        }
        assert_eq!(header, net.block(header.number).unwrap().header);
        previous = Some(header);
    }
}

#[tokio::test]
async fn logs_subscription_delivers_exactly_what_get_logs_returns() {
    let net = start(config(50, 5)).await;
    let contracts = net.contracts();
    let filter = json!({"address": [contracts[1], contracts[2], contracts[5]]});
    let mut ws = Ws::connect(&net.ws_url(1)).await;
    let heads = ws.subscribe(json!(["newHeads"])).await;
    let logs_id = ws.subscribe(json!(["logs", filter.clone()])).await;
    let mut first_head = None;
    let mut delivered: Vec<Log> = Vec::new();
    let last = loop {
        let (sub, result) = ws.notification().await.expect("notifications");
        if sub == heads {
            let number = serde_json::from_value::<Header>(result).unwrap().number;
            let first = *first_head.get_or_insert(number);
            // A head comes before its block's logs: at `first + 6`, blocks up to `first + 5`
            // have been delivered completely.
            if number == first + 6 {
                break number - 1;
            }
        } else {
            assert_eq!(sub, logs_id);
            let log: Log = serde_json::from_value(result).unwrap();
            assert!(first_head.is_some(), "a block's head comes before its logs");
            delivered.push(log);
        }
    };
    let first = first_head.unwrap();
    let mut range = filter.clone();
    range["fromBlock"] = json!(quantity(first));
    range["toBlock"] = json!(quantity(last));
    let fetched = as_logs(ws.result("eth_getLogs", json!([range])).await);
    assert!(!fetched.is_empty());
    assert_eq!(delivered, fetched);
    let keys: Vec<_> = delivered
        .iter()
        .map(|l| (l.block_number, l.log_index))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "logs arrive in chain order");
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_counts_follow() {
    let net = start(config(50, 5)).await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let keep = ws.subscribe(json!(["newHeads"])).await;
    let gone = ws.subscribe(json!(["newHeads"])).await;
    let logs = ws.subscribe(json!(["logs"])).await;
    assert_eq!(net.active_subscriptions(0), 3);
    assert_eq!(net.active_subscriptions(1), 0);
    assert_eq!(ws.result("eth_unsubscribe", json!([gone])).await, true);
    assert_eq!(ws.result("eth_unsubscribe", json!([gone])).await, false);
    assert_eq!(ws.result("eth_unsubscribe", json!([logs])).await, true);
    assert_eq!(net.active_subscriptions(0), 1);
    // Drop what was queued before the unsubscribe answer, then watch a few blocks.
    ws.notifications.clear();
    for _ in 0..4 {
        let (sub, _) = ws.notification().await.expect("heads continue");
        assert_eq!(sub, keep, "nothing for a removed subscription");
    }

    let mut other = Ws::connect(&net.ws_url(0)).await;
    other.subscribe(json!(["logs", {"topics": [null]}])).await;
    other.subscribe(json!(["newHeads"])).await;
    assert_eq!(net.active_subscriptions(0), 3);
    drop(other);
    drop(ws);
    assert!(
        wait_until(|| net.active_subscriptions(0) == 0).await,
        "closing sockets releases subscriptions"
    );
    assert!(wait_until(|| net.open_connections(0) == 0).await);
}

#[tokio::test]
async fn subscriptions_need_a_websocket() {
    let net = start(config(FROZEN, 1)).await;
    let response = http_call(&net.http(0), "eth_subscribe", json!(["newHeads"])).await;
    assert_eq!(response["error"]["code"], -32601);
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let response = ws
        .call("eth_subscribe", json!(["newPendingTransactions"]))
        .await;
    assert_eq!(response["error"]["code"], -32602);
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("newPendingTransactions")
    );
}
