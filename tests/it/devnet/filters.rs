//! Devnet: `eth_getLogs` filters: addresses, topic positions, ranges, tags and block hashes.

use super::*;

#[tokio::test]
async fn get_logs_filters_by_address_topics_and_range() {
    let net = start(config(FROZEN, 60)).await;
    let url = net.http(0);
    let contracts = net.contracts();
    let (a, b) = (contracts[0], contracts[3]);
    let sample = logs_matching(&net, 10, 40, |_| true);
    let topic0 = sample[0].topics()[0];
    let other0 = sample
        .iter()
        .map(|l| l.topics()[0])
        .find(|t| *t != topic0)
        .unwrap();
    let with_topic1 = sample.iter().find(|l| l.topics().len() >= 2).unwrap();
    let topic1 = with_topic1.topics()[1];

    let range = |extra: Value| {
        let mut filter = json!({"fromBlock": "0xa", "toBlock": "0x28"});
        for (key, value) in extra.as_object().unwrap() {
            filter[key] = value.clone();
        }
        json!([filter])
    };
    type Keep = Box<dyn Fn(&Log) -> bool>;
    let cases: Vec<(Value, Keep)> = vec![
        (json!({}), Box::new(|_| true)),
        (json!({"address": a}), Box::new(move |l| l.address() == a)),
        (
            json!({"address": [a, b]}),
            Box::new(move |l| [a, b].contains(&l.address())),
        ),
        (json!({"address": []}), Box::new(|_| true)),
        (
            json!({"topics": [topic0]}),
            Box::new(move |l| l.topics()[0] == topic0),
        ),
        (
            json!({"topics": [[topic0, other0]]}),
            Box::new(move |l| [topic0, other0].contains(&l.topics()[0])),
        ),
        (
            json!({"topics": [null, topic1]}),
            Box::new(move |l| l.topics().get(1) == Some(&topic1)),
        ),
        // Trailing wildcards match logs with fewer topics (as Anvil and reth do).
        (
            json!({"address": a, "topics": [topic0, null, null]}),
            Box::new(move |l| l.address() == a && l.topics()[0] == topic0),
        ),
        (
            json!({"topics": [null, null, null, null]}),
            Box::new(|_| true),
        ),
        (
            json!({"topics": [null, null, null, topic1]}),
            Box::new(move |l| l.topics().get(3) == Some(&topic1)),
        ),
    ];
    for (extra, keep) in cases {
        let params = range(extra.clone());
        let got = as_logs(http_result(&url, "eth_getLogs", params).await);
        let expected = logs_matching(&net, 10, 40, keep);
        assert_eq!(got, expected, "filter {extra}");
    }

    // Block hash, tags, a range reaching past the head, a reversed range.
    let hash = net.block(12).unwrap().header.hash;
    let got = as_logs(
        http_result(
            &url,
            "eth_getLogs",
            json!([{"blockHash": hash, "address": a}]),
        )
        .await,
    );
    assert_eq!(got, logs_matching(&net, 12, 12, |l| l.address() == a));
    let got = as_logs(http_result(&url, "eth_getLogs", json!([{"fromBlock": "0x3c"}])).await);
    assert_eq!(
        got,
        logs_matching(&net, 60, 60, |_| true),
        "default toBlock is latest"
    );
    let got = as_logs(
        http_result(
            &url,
            "eth_getLogs",
            json!([{"fromBlock": "0x3a", "toBlock": "0x50"}]),
        )
        .await,
    );
    assert_eq!(
        got,
        logs_matching(&net, 58, 60, |_| true),
        "served up to the head"
    );
    let reversed = http_call(
        &url,
        "eth_getLogs",
        json!([{"fromBlock": "0x9", "toBlock": "0x2"}]),
    )
    .await;
    assert_eq!(reversed["error"]["code"], -32602);
    let poll = json!([{"fromBlock": "0x3d", "toBlock": "latest"}]);
    assert_eq!(
        http_result(&url, "eth_getLogs", poll).await,
        json!([]),
        "caught up: empty"
    );
    let unknown = http_call(
        &url,
        "eth_getLogs",
        json!([{"blockHash": B256::repeat_byte(1)}]),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32000);
    let both = http_call(
        &url,
        "eth_getLogs",
        json!([{"blockHash": hash, "fromBlock": "0x1"}]),
    )
    .await;
    assert_eq!(both["error"]["code"], -32602);
}
