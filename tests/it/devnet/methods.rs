//! Devnet: Every method over HTTP and WebSocket as alloy types, block tags, batches and bad input.

use super::*;

#[tokio::test]
async fn http_serves_every_method_as_alloy_types() {
    let net = start(config(FROZEN, 100)).await;
    let url = net.http(0);
    assert_eq!(http_result(&url, "eth_chainId", json!([])).await, "0x7a69");
    assert_eq!(http_result(&url, "net_version", json!([])).await, "31337");
    let version = http_result(&url, "web3_clientVersion", json!([])).await;
    assert!(version.as_str().unwrap().starts_with("livechain-devnet/"));
    assert_eq!(
        http_result(&url, "eth_blockNumber", json!([])).await,
        "0x64"
    );

    for full in [false, true] {
        let value = http_result(&url, "eth_getBlockByNumber", json!(["0x5", full])).await;
        let block: Block = serde_json::from_value(value).unwrap();
        assert_eq!(block.header.number, 5);
        assert_eq!(block, net.block(5).unwrap());
        assert_eq!(block.transactions.hashes().count(), {
            let mut txs: Vec<_> = net
                .logs(5)
                .unwrap()
                .iter()
                .map(|l| l.transaction_hash)
                .collect();
            txs.dedup();
            txs.len()
        });
    }
    let header: Header =
        serde_json::from_value(http_result(&url, "eth_getBlockByNumber", json!(["0x6"])).await)
            .unwrap();
    let by_hash = http_result(&url, "eth_getBlockByHash", json!([header.hash, false])).await;
    assert_eq!(serde_json::from_value::<Header>(by_hash).unwrap(), header);

    let logs = as_logs(
        http_result(
            &url,
            "eth_getLogs",
            json!([{"fromBlock": "0x5", "toBlock": "0x6"}]),
        )
        .await,
    );
    assert_eq!(logs, logs_matching(&net, 5, 6, |_| true));
    assert_eq!(logs.len(), 16);
    for log in &logs {
        assert!(!log.removed);
        assert!((1..=4).contains(&log.topics().len()));
    }
}

#[tokio::test]
async fn ws_answers_match_http_answers() {
    let net = start(config(FROZEN, 40)).await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let url = net.http(0);
    let hash = net.block(7).unwrap().header.hash;
    let calls = [
        ("eth_chainId", json!([])),
        ("net_version", json!([])),
        ("web3_clientVersion", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_getBlockByNumber", json!(["latest", false])),
        ("eth_getBlockByNumber", json!(["0x7", true])),
        ("eth_getBlockByHash", json!([hash, false])),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "toBlock": "0x9"}]),
        ),
        ("eth_getLogs", json!([{"blockHash": hash}])),
    ];
    for (method, params) in calls {
        let over_ws = ws.result(method, params.clone()).await;
        let over_http = http_result(&url, method, params).await;
        assert_eq!(over_ws, over_http, "{method}");
    }
}

#[tokio::test]
async fn block_tags_resolve_and_unknown_blocks_are_null() {
    let net = start(config(FROZEN, 100)).await;
    let url = net.http(0);
    let cases = [
        ("latest", 100),
        ("pending", 100),
        ("safe", 100 - livechain::devnet::SAFE_DEPTH),
        ("finalized", 100 - livechain::devnet::FINALIZED_DEPTH),
        ("earliest", 0),
        ("0x0", 0),
        ("0x64", 100),
    ];
    for (tag, number) in cases {
        let value = http_result(&url, "eth_getBlockByNumber", json!([tag, false])).await;
        let header: Header = serde_json::from_value(value).unwrap();
        assert_eq!(header.number, number, "{tag}");
        assert_eq!(
            header.timestamp,
            livechain::devnet::GENESIS_TIMESTAMP + number
        );
    }
    let genesis = net.block(0).unwrap();
    assert_eq!(genesis.header.parent_hash, B256::ZERO);
    assert_eq!(genesis.transactions.hashes().count(), 0);
    assert_eq!(
        http_result(&url, "eth_getBlockByNumber", json!(["0x65", false])).await,
        Value::Null
    );
    let unknown = B256::repeat_byte(0x42);
    assert_eq!(
        http_result(&url, "eth_getBlockByHash", json!([unknown, false])).await,
        Value::Null
    );

    // A young chain: every tag saturates at genesis.
    let young = start(config(FROZEN, 3)).await;
    let value = http_result(
        &young.http(1),
        "eth_getBlockByNumber",
        json!(["finalized", false]),
    )
    .await;
    assert_eq!(value["number"], "0x0");
}

#[tokio::test]
async fn blocks_by_hash_agree_with_blocks_by_number_and_link() {
    let net = start(config(FROZEN, 30)).await;
    let url = net.http(1);
    let mut previous: Option<Header> = None;
    for n in 0..=30u64 {
        let by_number =
            http_result(&url, "eth_getBlockByNumber", json!([quantity(n), false])).await;
        let header: Header = serde_json::from_value(by_number.clone()).unwrap();
        let by_hash = http_result(&url, "eth_getBlockByHash", json!([header.hash, false])).await;
        assert_eq!(by_hash, by_number, "block {n}");
        if let Some(parent) = &previous {
            assert_eq!(header.parent_hash, parent.hash);
            assert_eq!(header.number, parent.number + 1);
        }
        assert!(header.gas_used <= header.gas_limit);
        assert!(header.base_fee_per_gas.is_some());
        previous = Some(header);
    }
}

#[tokio::test]
async fn logs_bloom_contains_every_log() {
    let net = start(config(FROZEN, 20)).await;
    let url = net.http(0);
    for n in [1u64, 7, 20] {
        let block: Block = serde_json::from_value(
            http_result(&url, "eth_getBlockByNumber", json!([quantity(n), false])).await,
        )
        .unwrap();
        let logs = as_logs(
            http_result(
                &url,
                "eth_getLogs",
                json!([{"blockHash": block.header.hash}]),
            )
            .await,
        );
        assert_eq!(logs.len(), 8);
        for (i, log) in logs.iter().enumerate() {
            assert_eq!(log.log_index, Some(i as u64), "logIndex is consecutive");
            assert_eq!(log.block_hash, Some(block.header.hash));
            assert_eq!(log.block_number, Some(n));
            let bloom = block.header.logs_bloom;
            assert!(bloom.contains_input(BloomInput::Raw(log.address().as_slice())));
            for topic in log.topics() {
                assert!(bloom.contains_input(BloomInput::Raw(topic.as_slice())));
            }
            let tx = block
                .transactions
                .hashes()
                .nth(log.transaction_index.unwrap() as usize);
            assert_eq!(tx, log.transaction_hash);
        }
    }
}

#[tokio::test]
async fn batches_answer_in_order() {
    let net = start(config(FROZEN, 10)).await;
    let batch = json!([
        request("eth_blockNumber", json!([])),
        {"jsonrpc": "2.0", "id": "two", "method": "eth_getBlockByNumber", "params": ["0x2", false]},
        {"jsonrpc": "2.0", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_bogus"},
    ])
    .to_string();
    let (status, body) = post_raw(&net.http(0), batch.clone()).await;
    assert_eq!(status, 200);
    let answers: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(answers.len(), 3, "the notification gets no answer");
    assert_eq!(answers[0]["result"], "0xa");
    assert_eq!(answers[1]["id"], "two");
    assert_eq!(answers[1]["result"]["number"], "0x2");
    assert_eq!(answers[2]["error"]["code"], -32601);

    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let over_ws = ws.roundtrip(batch).await;
    assert_eq!(over_ws, Value::Array(answers));
    let subscribe = json!([
        request("eth_subscribe", json!(["newHeads"])),
        request("eth_subscribe", json!(["logs"])),
    ]);
    let ids = ws.roundtrip(subscribe.to_string()).await;
    assert_eq!(ids.as_array().unwrap().len(), 2);
    assert_eq!(net.active_subscriptions(0), 2);

    let (status, _) = post_raw(
        &net.http(0),
        json!({"jsonrpc": "2.0", "method": "eth_chainId"}).to_string(),
    )
    .await;
    assert_eq!(status, 204, "a lone notification gets no body");
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_socket_survives() {
    let net = start(config(FROZEN, 10)).await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    let url = net.http(0);
    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["{}"]}}"#,
        "x".repeat(livechain::devnet::MAX_REQUEST_BYTES)
    );
    let cases: Vec<(String, i64, &str)> = vec![
        (
            "{\"jsonrpc\": \"2.0\", \"id\": 1, ".into(),
            -32700,
            "parse error",
        ),
        ("[]".into(), -32600, "empty batch"),
        ("\"hello\"".into(), -32600, "JSON object"),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#.into(),
            -32600,
            "2.0",
        ),
        (
            request("eth_doesNotExist", json!([])).to_string(),
            -32601,
            "eth_doesNotExist",
        ),
        (
            request("eth_getBlockByNumber", json!(["0xzz", false])).to_string(),
            -32602,
            "block number or tag",
        ),
        (
            request("eth_getBlockByNumber", json!([])).to_string(),
            -32602,
            "missing parameter 0",
        ),
        (
            request("eth_getBlockByHash", json!(["0x1234", false])).to_string(),
            -32602,
            "block hash",
        ),
        (
            request("eth_getLogs", json!([{"topics": [1, 2]}])).to_string(),
            -32602,
            "filter",
        ),
        (
            request("eth_getLogs", json!([{"address": "0xnope"}])).to_string(),
            -32602,
            "filter",
        ),
        (
            request("eth_chainId", json!([1])).to_string(),
            -32602,
            "at most 0",
        ),
        (oversized.clone(), -32600, "exceeds the limit"),
    ];
    for (payload, code, needle) in &cases {
        for over_ws in [true, false] {
            let response = if over_ws {
                ws.roundtrip(payload.clone()).await
            } else {
                let (_, body) = post_raw(&url, payload.clone()).await;
                serde_json::from_str(&body).unwrap()
            };
            let error = &response["error"];
            assert_eq!(
                error["code"],
                *code,
                "{} over ws={over_ws}: {response}",
                &payload[..payload.len().min(60)]
            );
            let message = error["message"].as_str().unwrap();
            // The HTTP body limit answers before the JSON-RPC layer sees the request.
            if over_ws || payload.len() <= livechain::devnet::MAX_REQUEST_BYTES {
                assert!(
                    message.contains(needle),
                    "{message:?} should mention {needle:?}"
                );
            }
            assert_eq!(response["jsonrpc"], "2.0");
        }
        // The connection is still usable after every bad request.
        assert_eq!(ws.result("eth_chainId", json!([])).await, "0x7a69");
    }
    let (status, _) = post_raw(&url, oversized).await;
    assert_eq!(status, 413);
}
