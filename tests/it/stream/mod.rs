//! Integration tests: `/v1/stream`, the live tail over WebSocket, resumed from cursors.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, all_events, get_json, parse_config, service_yaml, start_app};

mod batch;
mod errors;
mod expired;
mod memory;
mod scale;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect in time")
    .expect("websocket connects");
    ws
}

/// The next JSON text message, or `None` on close / timeout.
async fn next_json(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A client that drops its connection every few messages and resumes with `since` receives
/// exactly the sequence `/v1/events` holds: no gap, no duplicate, in cursor order.
#[tokio::test]
async fn a_client_resuming_from_its_cursor_sees_every_event_once_in_order() {
    let net = support::devnet(3, 20, 20, 50).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);

    let mut received: Vec<i64> = Vec::new();
    let mut since = 0i64;
    // Disconnect after 7, 13, 29, ... messages: seams land at arbitrary points of the feed.
    let cuts = [7usize, 13, 29, 101, 3, 250, 57, 500, 11, 1000];
    for &cut in cuts.iter().cycle().take(30) {
        let mut ws = connect(&format!("{ws_base}/v1/stream?since={since}")).await;
        for _ in 0..cut {
            let Some(msg) = next_json(&mut ws, Duration::from_secs(5)).await else {
                break;
            };
            match msg["type"].as_str() {
                Some("event") => {
                    let cursor = msg["cursor"].as_i64().expect("cursor");
                    assert_eq!(msg["event"]["cursor"].as_i64(), Some(cursor));
                    received.push(cursor);
                    since = cursor;
                }
                Some("finality") | Some("removed") => {
                    since = msg["cursor"].as_i64().expect("cursor")
                }
                Some("heartbeat") => {}
                other => panic!("unexpected message {other:?}: {msg}"),
            }
        }
        let _ = ws.close(None).await;
        if received.len() >= 4000 {
            break;
        }
    }
    assert!(
        received.len() >= 1000,
        "only {} events streamed",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing, no duplicate"
    );
    let last = *received.last().expect("some");
    let stored: Vec<i64> = all_events(&app.base, "include_removed=true")
        .await
        .iter()
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .filter(|c| *c <= last)
        .collect();
    assert_eq!(
        received, stored,
        "the stream equals the stored history up to the last cursor"
    );
    app.stop().await;
}

/// Filters in the URL, a bad filter answered with an `error` message, and a `subscribe` message
/// for a connection without parameters.
#[tokio::test]
async fn filters_errors_and_subscribe_messages() {
    let net = support::devnet(2, 30, 10, 10).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);

    let mut bad = connect(&format!("{ws_base}/v1/stream?kind=tx")).await;
    let msg = next_json(&mut bad, Duration::from_secs(5))
        .await
        .expect("an error message");
    assert_eq!(msg["type"], "error");
    assert_eq!(msg["error"]["field"], "kind");
    assert!(
        next_json(&mut bad, Duration::from_secs(5)).await.is_none(),
        "then closed"
    );

    let mut blocks = connect(&format!("{ws_base}/v1/stream?since=0&kind=block")).await;
    for _ in 0..5 {
        let msg = next_json(&mut blocks, Duration::from_secs(5))
            .await
            .expect("a block");
        if msg["type"] == "event" {
            assert_eq!(msg["event"]["kind"], "block");
        }
    }

    // A subscribe frame several times the socket's 4 KiB read buffer: 200 addresses, the
    // devnet's contracts among them.
    let mut addresses: Vec<String> = (1..=200u32).map(|i| format!("0x{i:040x}")).collect();
    addresses.extend(net.contracts().iter().map(|a| a.to_string()));
    let subscribe = serde_json::json!({
        "type": "subscribe", "since": 0, "kind": "log", "address": addresses,
    })
    .to_string();
    assert!(subscribe.len() > 8 * 1024, "{} bytes", subscribe.len());
    let mut plain = connect(&format!("{ws_base}/v1/stream")).await;
    plain
        .send(Message::text(subscribe))
        .await
        .expect("send subscribe");
    let msg = next_json(&mut plain, Duration::from_secs(5))
        .await
        .expect("a log");
    assert_eq!(msg["type"], "event");
    assert_eq!(msg["event"]["kind"], "log");
    plain
        .send(Message::text(r#"{"type":"subscribe"}"#))
        .await
        .expect("send");
    let mut saw_error = false;
    for _ in 0..200 {
        match next_json(&mut plain, Duration::from_secs(5)).await {
            Some(m) if m["type"] == "error" => {
                saw_error = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(saw_error, "a second subscription is refused with an error");
    let (status, _) = get_json(&app.url("/health")).await;
    assert_eq!(status, 200);
    app.stop().await;
}
