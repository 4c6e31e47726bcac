//! Devnet: Production modes, reorgs, start-up errors and shutdown.

use super::*;

#[tokio::test]
async fn throughput_mode_follows_its_reader_and_idles_without_one() {
    let net = start(config(0, 10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        net.head(),
        10,
        "nothing is produced while nobody is subscribed"
    );

    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    ws.subscribe(json!(["logs"])).await;
    let mut expected = 11;
    let mut log_blocks = Vec::new();
    while expected <= 1_010 {
        let (_, result) = ws.notification().await.expect("notifications keep coming");
        if result.get("parentHash").is_some() {
            assert_eq!(
                result["number"],
                quantity(expected),
                "heads are consecutive"
            );
            expected += 1;
        } else {
            log_blocks.push(
                serde_json::from_value::<Log>(result)
                    .unwrap()
                    .block_number
                    .unwrap(),
            );
        }
    }
    // The logs subscription started a block or two after newHeads; from there, every block's
    // eight logs arrived, each block's before the next head.
    let first = log_blocks[0];
    assert!(first < 100);
    let expected_logs: Vec<u64> = (first..1_010).flat_map(|n| [n; 8]).collect();
    assert_eq!(log_blocks, expected_logs);
    drop(ws);
    assert!(wait_until(|| net.active_subscriptions(0) == 0).await);
    let stopped_at = net.head();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // At most the blocks already queued for the closed connection get produced after it left.
    assert!(
        net.head() <= stopped_at + 1,
        "head {} ran away from {stopped_at}",
        net.head()
    );
}

#[tokio::test]
async fn reorg_regrows_a_linked_different_branch() {
    let net = start(config(30, 20)).await;
    let before: Vec<B256> = (0..=20)
        .map(|n| net.block(n).unwrap().header.hash)
        .collect();
    assert_eq!(net.reorg(4), net.head());
    let forked_at = net.head();
    assert!(net.wait_for_head(forked_at + 6, WAIT).await);
    for n in forked_at + 1..=20 {
        assert_ne!(
            net.block(n).unwrap().header.hash,
            before[n as usize],
            "height {n} rewritten"
        );
    }
    for n in 1..=forked_at + 6 {
        let (block, parent) = (net.block(n).unwrap(), net.block(n - 1).unwrap());
        assert_eq!(
            block.header.parent_hash, parent.header.hash,
            "height {n} links"
        );
    }
    let orphan = before[20];
    let response = http_result(&net.http(0), "eth_getBlockByHash", json!([orphan, false])).await;
    assert_eq!(
        response,
        Value::Null,
        "an orphaned hash is not served as canonical"
    );
}

#[tokio::test]
async fn shutdown_ends_every_task_and_closes_sockets() {
    let net = start(config(20, 5)).await;
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    assert!(ws.notification().await.is_some());
    net.token.cancel();
    let stopped = net.devnet.clone().stopped();
    assert!(
        tokio::time::timeout(WAIT, stopped).await.is_ok(),
        "every task ended"
    );
    let mut closed = false;
    for _ in 0..1_000 {
        if ws.next_message().await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed);
    assert!(
        reqwest::Client::new()
            .post(net.http(0))
            .timeout(WAIT)
            .send()
            .await
            .is_err(),
        "port closed"
    );
}

#[tokio::test]
async fn start_rejects_bad_configs_and_busy_ports() {
    let token = CancellationToken::new();
    let bad = DevnetConfig {
        providers: 0,
        ..config(FROZEN, 0)
    };
    let err = Devnet::start(bad, token.clone()).await.unwrap_err();
    assert!(err.to_string().contains("providers"), "{err}");

    let net = start(config(FROZEN, 0)).await;
    let busy = DevnetConfig {
        listen: net.endpoints()[0].addr,
        providers: 1,
        ..config(FROZEN, 0)
    };
    let err = Devnet::start(busy, token).await.unwrap_err();
    assert!(
        matches!(
            err,
            livechain::devnet::DevnetError::Bind { provider: 0, .. }
        ),
        "{err}"
    );
    assert!(net.describe().contains(&net.endpoints()[1].ws_url));
}
