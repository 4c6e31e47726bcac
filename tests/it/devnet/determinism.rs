//! Devnet: One chain: identical bytes across provider ports, across runs, and per seed.

use super::*;

#[tokio::test]
async fn providers_serve_identical_bytes() {
    let net = start(DevnetConfig {
        providers: 3,
        ..config(FROZEN, 50)
    })
    .await;
    let payloads = [
        request("eth_getBlockByNumber", json!(["0x1f", false])),
        request("eth_getBlockByNumber", json!(["latest", true])),
        request(
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "toBlock": "0x32"}]),
        ),
    ];
    for payload in payloads {
        let (_, first) = post_raw(&net.http(0), payload.to_string()).await;
        for provider in 1..3 {
            let (_, other) = post_raw(&net.http(provider), payload.to_string()).await;
            assert_eq!(first, other, "provider {provider}");
        }
    }
}

#[tokio::test]
async fn live_notifications_are_identical_across_ports() {
    let net = start(config(40, 5)).await;
    // Per port: block number → the raw `result` texts of its head and logs, in arrival order.
    let mut per_port: Vec<BTreeMap<u64, Vec<String>>> = Vec::new();
    let mut streams = Vec::new();
    for provider in 0..2 {
        let (mut stream, _) = tokio_tungstenite::connect_async(net.ws_url(provider))
            .await
            .unwrap();
        let subscribe = json!([
            request("eth_subscribe", json!(["newHeads"])),
            request("eth_subscribe", json!(["logs"])),
        ]);
        stream
            .send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        streams.push(stream);
    }
    for mut stream in streams {
        let mut blocks: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        while blocks.len() < 5 {
            let message = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let text = message.into_text().unwrap().to_string();
            if !text.contains("eth_subscription") {
                continue; // the answer to the subscribe batch
            }
            let at = text.find(r#""result":"#).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            let result = &value["params"]["result"];
            let number = result.get("number").or(result.get("blockNumber")).unwrap();
            let number = u64::from_str_radix(&number.as_str().unwrap()[2..], 16).unwrap();
            // The subscription ids differ between ports; everything after them must not.
            blocks
                .entry(number)
                .or_default()
                .push(text[at..].to_owned());
        }
        per_port.push(blocks);
    }
    // Compare the blocks both ports saw whole (9 messages: a head and 8 logs).
    let mut compared = 0;
    for (number, texts) in &per_port[0] {
        if let Some(other) = per_port[1].get(number)
            && texts.len() == 9
            && other.len() == 9
        {
            assert_eq!(texts, other, "block {number}");
            compared += 1;
        }
    }
    assert!(
        compared >= 1,
        "the ports overlapped on at least one whole block"
    );
}

#[tokio::test]
async fn same_seed_same_chain_other_seed_other_chain() {
    let one = start(config(FROZEN, 20)).await;
    let again = start(config(FROZEN, 20)).await;
    let other = start(DevnetConfig {
        seed: 2,
        ..config(FROZEN, 20)
    })
    .await;
    let payload = request(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x14"}]),
    )
    .to_string();
    let (_, logs_one) = post_raw(&one.http(0), payload.clone()).await;
    let (_, logs_again) = post_raw(&again.http(1), payload.clone()).await;
    let (_, logs_other) = post_raw(&other.http(0), payload).await;
    assert_eq!(logs_one, logs_again);
    assert_ne!(logs_one, logs_other);
    for n in [0u64, 1, 20] {
        let hash = |net: &Net| net.block(n).unwrap().header.hash;
        assert_eq!(hash(&one), hash(&again), "block {n}");
        assert_ne!(hash(&one), hash(&other), "block {n}");
    }
    let contracts: Vec<Address> = one.contracts();
    assert_eq!(contracts, again.contracts());
    assert_ne!(contracts, other.contracts());
}
