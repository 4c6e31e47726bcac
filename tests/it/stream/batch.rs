//! `batch`: a subscriber that asks for it gets several messages per frame (a JSON array) when
//! more than one is ready, and the same messages in the same order as any other subscriber.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::connect;
use crate::support::{self, all_events, parse_config, service_yaml, start_app};

/// Reads frames for at most `limit` until an event past `through` arrives: the messages in
/// order, and the largest number of messages one frame held.
async fn read_frames(ws: &mut super::Ws, through: i64, limit: Duration) -> (Vec<Value>, usize) {
    let deadline = Instant::now() + limit;
    let (mut messages, mut widest) = (Vec::new(), 0);
    for _ in 0..1_000_000 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let text = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            _ => break,
        };
        let frame: Value = serde_json::from_str(text.as_str()).expect("a frame is JSON");
        let batch = match frame {
            Value::Array(list) => list,
            single => vec![single],
        };
        assert!(!batch.is_empty(), "an empty frame");
        widest = widest.max(batch.len());
        let past = batch
            .iter()
            .any(|m| m["type"] == "event" && m["cursor"].as_i64() > Some(through));
        messages.extend(batch);
        if past {
            break;
        }
    }
    (messages, widest)
}

#[tokio::test]
async fn a_batching_subscriber_gets_arrays_of_the_same_messages_in_order() {
    let net = support::devnet(2, 50, 20, 60).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            support::checkpoint(&app.base, "devnet")
                .await
                .filter(|cp| *cp >= 60)
        },
    )
    .await
    .expect("the initial blocks are stored");
    let history = all_events(&app.base, "include_removed=true").await;
    let through = history
        .last()
        .and_then(|e| e["cursor"].as_i64())
        .expect("stored events");

    // The replay of the history, then live blocks (20 logs each) past it.
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let mut ws = connect(&format!("{ws_base}/v1/stream?since=0&batch=true")).await;
    let (messages, widest) = read_frames(&mut ws, through, Duration::from_secs(20)).await;
    assert!(widest > 1, "no frame held more than one message");
    let cursors: Vec<i64> = messages
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["cursor"].as_i64().expect("cursor"))
        .collect();
    assert!(
        cursors.last() > Some(&through),
        "the stream went live past {through}"
    );
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "in cursor order");
    let last = *cursors.last().expect("events");
    let stored: Vec<i64> = all_events(&app.base, "include_removed=true")
        .await
        .iter()
        .filter(|e| e["removed"] != true)
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .filter(|c| *c <= last)
        .collect();
    assert_eq!(cursors, stored, "every stored event once, none missing");
    app.stop().await;
}
