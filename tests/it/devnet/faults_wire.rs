//! Devnet: faults on the wire — silent stalls, garbage frames, refused connections — and that
//! no fault leaks a subscription or a task.

use super::*;

/// Whether nothing arrives on `ws` for `quiet` (messages already set aside count too).
async fn silent_for(ws: &mut Ws, quiet: Duration) -> bool {
    ws.notifications.is_empty() && tokio::time::timeout(quiet, ws.stream.next()).await.is_err()
}

#[tokio::test]
async fn a_stalled_provider_stays_open_and_silent_until_lifted() {
    let net = start(config(20, 5)).await;
    let faults = net.faults(0).unwrap();
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut other = Ws::connect(&net.ws_url(1)).await;
    other.subscribe(json!(["newHeads"])).await;
    assert!(ws.notification().await.is_some());

    faults.set_stalled(true);
    // Whatever was already on its way drains; then nothing, not even for a request.
    for _ in 0..50 {
        if silent_for(&mut ws, Duration::from_millis(150)).await {
            break;
        }
        ws.notifications.clear();
    }
    ws.send_text(request("eth_subscribe", json!(["newHeads"])).to_string())
        .await;
    assert!(
        silent_for(&mut ws, Duration::from_millis(300)).await,
        "silent"
    );
    assert_eq!(
        net.active_subscriptions(0),
        1,
        "a dropped request runs nothing"
    );
    assert_eq!(net.open_connections(0), 1, "but the socket stays open");
    let hung = reqwest::Client::new()
        .post(net.http(0))
        .header("content-type", "application/json")
        .body(request("eth_blockNumber", json!([])).to_string())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        hung.unwrap_err().is_timeout(),
        "HTTP hangs until the client gives up"
    );
    other.notifications.clear();
    assert!(
        other.notification().await.is_some(),
        "provider 1 is unaffected"
    );
    http_result(&net.http(1), "eth_blockNumber", json!([])).await;

    // A request that arrives during the stall is answered once it is lifted.
    let url = net.http(0);
    let waiting = tokio::spawn(async move { http_result(&url, "eth_chainId", json!([])).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = net.head();
    faults.set_stalled(false);
    assert_eq!(waiting.await.unwrap(), "0x7a69");
    let (_, head) = ws.notification().await.expect("notifications resume");
    let number: Header = serde_json::from_value(head).unwrap();
    assert!(
        number.number >= before,
        "skipped what it missed: {}",
        number.number
    );
    assert_eq!(ws.result("eth_chainId", json!([])).await, "0x7a69");
}

/// Frames from a raw WebSocket: `Ok(json)` or `Err(text)` for what is not JSON.
async fn frames(url: &str, count: usize) -> Vec<Result<Value, String>> {
    let (mut stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let subscribe = request("eth_subscribe", json!(["newHeads"])).to_string();
    stream.send(Message::text(subscribe)).await.unwrap();
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            out.push(serde_json::from_str::<Value>(&text).map_err(|_| text.to_string()));
        }
    }
    out
}

/// The garbage kind a frame is, if it is garbage.
fn garbage(frame: &Result<Value, String>) -> Option<GarbageKind> {
    match frame {
        Err(text) if text.starts_with('<') => Some(GarbageKind::NotJson),
        Err(_) => Some(GarbageKind::Truncated),
        Ok(value) => {
            let result = &value["params"]["result"];
            let head = serde_json::from_value::<Header>(result.clone());
            (value.get("params").is_some() && head.is_err())
                .then_some(GarbageKind::MalformedNotification)
        }
    }
}

#[tokio::test]
async fn garbage_frames_come_every_nth_message_and_repeat_per_seed() {
    let net = start(config(10, 5)).await;
    let faults = net.faults(0).unwrap();
    faults.set_garbage_every(Some(3));
    let seen = frames(&net.ws_url(0), 24).await;
    // Garbage goes before messages 3, 6, 9...: frames 3, 7, 11... (1-based) are garbage.
    let kinds: Vec<Option<GarbageKind>> = seen.iter().map(garbage).collect();
    for (i, kind) in kinds.iter().enumerate() {
        let position = i as u64 + 1;
        if position % 4 == 3 {
            let message = position / 4 * 3 + 3;
            assert_eq!(
                *kind,
                Some(faults.garbage_kind(message)),
                "frame {position}"
            );
        } else {
            assert_eq!(*kind, None, "frame {position} is real: {:?}", seen[i]);
        }
    }
    let again: Vec<Option<GarbageKind>> = frames(&net.ws_url(0), 24)
        .await
        .iter()
        .map(garbage)
        .collect();
    assert_eq!(kinds, again, "the same garbage at the same places");
    let clean = frames(&net.ws_url(1), 12).await;
    assert!(
        clean.iter().all(|f| garbage(f).is_none()),
        "provider 1 sends none"
    );
    faults.set_garbage_every(None);
    let clean = frames(&net.ws_url(0), 12).await;
    assert!(clean.iter().all(|f| garbage(f).is_none()), "lifted");
}

#[tokio::test]
async fn refusing_connections_cuts_old_ones_and_closes_new_ones() {
    let net = start(config(20, 5)).await;
    let faults = net.faults(0).unwrap();
    let mut ws = Ws::connect(&net.ws_url(0)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut other = Ws::connect(&net.ws_url(1)).await;
    other.subscribe(json!(["newHeads"])).await;
    let pooled = reqwest::Client::new();
    let call = |client: &reqwest::Client, url: String| {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(request("eth_chainId", json!([])).to_string())
            .timeout(WAIT)
            .send()
    };
    assert!(
        call(&pooled, net.http(0))
            .await
            .unwrap()
            .status()
            .is_success()
    );

    faults.set_refuse_connections(true);
    let mut closed = false;
    for _ in 0..100 {
        if ws.next_message().await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the open WebSocket is dropped");
    assert!(wait_until(|| net.open_connections(0) == 0 && net.active_subscriptions(0) == 0).await);
    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(net.ws_url(0))).await;
    assert!(
        refused.unwrap().is_err(),
        "a new WebSocket is closed at once"
    );
    assert!(
        call(&reqwest::Client::new(), net.http(0)).await.is_err(),
        "new HTTP too"
    );
    assert!(
        call(&pooled, net.http(0)).await.is_err(),
        "and the kept-alive one"
    );
    other.notifications.clear();
    assert!(
        other.notification().await.is_some(),
        "provider 1 is unaffected"
    );

    faults.set_refuse_connections(false);
    let mut again = Ws::connect(&net.ws_url(0)).await;
    assert_eq!(again.result("eth_chainId", json!([])).await, "0x7a69");
    assert!(
        call(&pooled, net.http(0))
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

#[tokio::test]
async fn subscriptions_stay_exact_and_shutdown_is_quick_under_every_fault() {
    let net = start(config(10, 5)).await;
    let faults = net.faults(0).unwrap();
    let mut kept = Ws::connect(&net.ws_url(0)).await;
    kept.subscribe(json!(["newHeads"])).await;
    for round in 0..12u64 {
        let mut ws = Ws::connect(&net.ws_url(0)).await;
        ws.subscribe(json!(["newHeads"])).await;
        ws.subscribe(json!(["logs"])).await;
        assert_eq!(net.active_subscriptions(0), 3, "round {round}");
        match round % 6 {
            0 => faults.set_garbage_every(Some(2)),
            1 => faults.set_lag_blocks(3),
            2 => faults.set_rate_limited(true),
            3 => faults.set_server_error(Some(503)),
            4 => faults.set_error_rate(0.5),
            _ => faults.set_latency_ms(30),
        }
        // Whatever the fault, closing the socket releases exactly its subscriptions.
        drop(ws);
        assert!(
            wait_until(|| net.active_subscriptions(0) == 1).await,
            "round {round}: {}",
            net.active_subscriptions(0)
        );
        faults.clear();
    }
    faults.set_drop_after_messages(Some(3));
    let mut dropped = Ws::connect(&net.ws_url(0)).await;
    dropped.subscribe(json!(["newHeads"])).await;
    assert!(
        wait_until(|| net.active_subscriptions(0) == 0).await,
        "both dropped"
    );
    faults.clear();

    // Shut down with a stalled HTTP request and a stalled socket outstanding.
    let mut stalled = Ws::connect(&net.ws_url(0)).await;
    stalled.subscribe(json!(["newHeads"])).await;
    faults.set_stalled(true);
    let url = net.http(0);
    let hung =
        tokio::spawn(
            async move { post_raw(&url, request("eth_chainId", json!([])).to_string()).await },
        );
    tokio::time::sleep(Duration::from_millis(50)).await;
    net.token.cancel();
    let stopped = net.devnet.clone().stopped();
    assert!(
        tokio::time::timeout(WAIT, stopped).await.is_ok(),
        "every task ended"
    );
    let (status, _) = tokio::time::timeout(WAIT, hung).await.unwrap().unwrap();
    assert_eq!(status, 503, "the held request is released at shutdown");
    assert_eq!(net.active_subscriptions(0), 0);
}
