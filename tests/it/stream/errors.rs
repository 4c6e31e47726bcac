//! `/v1/stream` refusals: the filters follow the REST rules (known chains, no empty lists, the
//! address rule), and every refusal is an `error` message followed by a close frame carrying a
//! code and a reason — 1008 for a bad request, 1009 for a frame over the size limit.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::{Ws, connect, next_json};
use crate::support::{self, TestApp, TestDevnet, parse_config, service_yaml, start_app};

/// The chain `support::service_yaml` configures.
const CHAIN: &str = "devnet";
/// Longest a single read may take.
const READ: Duration = Duration::from_secs(10);
/// A valid EIP-55 checksum with one letter's case flipped.
const BAD_CHECKSUM: &str = "0xD8dA6BF26964aF9D7eEd9e03E53415D37aA96045";
/// The stream's limit on a client message (`MAX_CLIENT_MESSAGE`).
const LIMIT: usize = 64 * 1024;

/// A still devnet with logs and the service on it, its history stored.
async fn service() -> (TestDevnet, TestApp, tempfile::TempDir) {
    let net = support::devnet(1, 3_600_000, 5, 6).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    let head = net.head();
    let reached = support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(25),
        || async {
            support::checkpoint(&app.base, CHAIN)
                .await
                .filter(|cp| *cp >= head)
        },
    )
    .await;
    assert!(reached.is_some(), "the service did not store block {head}");
    (net, app, dir)
}

/// Reads until the server's `error` message and the close frame that must follow it.
async fn refusal(ws: &mut Ws, what: &str) -> (Value, CloseFrame) {
    let deadline = Instant::now() + READ;
    let mut error: Option<Value> = None;
    for _ in 0..100 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("{what}: no error and close within {READ:?}"));
        let message = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no error and close within {READ:?}"));
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON text");
                assert_eq!(value["type"], "error", "{what}: {value}");
                assert!(error.is_none(), "{what}: a second message {value}");
                error = Some(value);
            }
            Some(Ok(Message::Close(frame))) => {
                let error = error.unwrap_or_else(|| panic!("{what}: closed without an error"));
                let frame = frame.unwrap_or_else(|| panic!("{what}: a close without a code"));
                return (error, frame);
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("{what}: the connection failed ({err}) after {error:?}"),
            None => panic!("{what}: the connection ended without a close frame"),
        }
    }
    panic!("{what}: no error and close in 100 messages");
}

/// Asserts a refusal naming `field`, closed with `code` and a non-empty reason; returns the
/// error's message.
async fn assert_refused(ws: &mut Ws, what: &str, field: &str, code: u16) -> String {
    let (error, frame) = refusal(ws, what).await;
    assert_eq!(error["error"]["code"], "bad_request", "{what}: {error}");
    assert_eq!(error["error"]["field"], field, "{what}: {error}");
    assert_eq!(u16::from(frame.code), code, "{what}: {frame:?}");
    assert!(!frame.reason.is_empty(), "{what}: a close without a reason");
    error["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn subscribe(ws_base: &str, message: &Value) -> Ws {
    let mut ws = connect(&format!("{ws_base}/v1/stream")).await;
    ws.send(Message::text(message.to_string()))
        .await
        .expect("send subscribe");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_chains_and_empty_lists_are_refused_with_a_policy_close() {
    let (_net, app, _dir) = service().await;
    let ws_base = app.base.replacen("http://", "ws://", 1);

    let mut ws = connect(&format!("{ws_base}/v1/stream?chain=nope")).await;
    let message = assert_refused(&mut ws, "?chain=nope", "chain", 1008).await;
    assert!(
        message.contains("nope") && message.contains(CHAIN),
        "{message}"
    );
    let mut ws = subscribe(&ws_base, &json!({"type": "subscribe", "chain": "nope"})).await;
    let message = assert_refused(&mut ws, "subscribe chain nope", "chain", 1008).await;
    assert!(message.contains(CHAIN), "{message}");

    // An empty address list is refused as `address=` is on REST, not read as "every address".
    let mut ws = subscribe(&ws_base, &json!({"type": "subscribe", "address": []})).await;
    assert_refused(&mut ws, "subscribe address []", "address", 1008).await;
    let mut ws = connect(&format!("{ws_base}/v1/stream?address=")).await;
    assert_refused(&mut ws, "?address=", "address", 1008).await;
    let (status, body) = support::get_json(&app.url("/v1/events?address=")).await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("address")));
    let mut ws = subscribe(&ws_base, &json!({"type": "subscribe", "topic0": ""})).await;
    assert_refused(&mut ws, "subscribe topic0 \"\"", "topic0", 1008).await;

    // Any bad filter: the error, then a close with its code and reason.
    let mut ws = connect(&format!("{ws_base}/v1/stream?kind=tx")).await;
    let (_, frame) = refusal(&mut ws, "?kind=tx").await;
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(frame.reason.contains("kind"), "{frame:?}");

    // Not an error: a service stopping closes its streams with 1001 (going away).
    let mut ws = connect(&format!("{ws_base}/v1/stream?kind=block")).await;
    let stop = tokio::spawn(app.stop());
    let mut close = None;
    for _ in 0..100 {
        match tokio::time::timeout(READ, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                close = frame;
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let close = close.expect("a close frame when the service stops");
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    stop.await.expect("the service stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_addresses_follow_the_rest_rule() {
    let (net, app, _dir) = service().await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let contract = net.contracts()[0];

    // Refused alike on REST, in the URL and in a subscribe message.
    let hex = format!("{contract:x}");
    for bad in [BAD_CHECKSUM.to_owned(), hex.clone(), format!("0X{hex}")] {
        let (status, body) =
            support::get_json(&app.url(&format!("/v1/events?address={bad}"))).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("address")),
            "{bad}: {body}"
        );
        let mut ws = connect(&format!("{ws_base}/v1/stream?address={bad}")).await;
        assert_refused(&mut ws, &format!("?address={bad}"), "address", 1008).await;
        let mut ws = subscribe(&ws_base, &json!({"type": "subscribe", "address": [bad]})).await;
        assert_refused(&mut ws, &format!("subscribe {bad}"), "address", 1008).await;
    }
    let mut ws = connect(&format!("{ws_base}/v1/stream?address={BAD_CHECKSUM}")).await;
    let message = assert_refused(&mut ws, "bad checksum", "address", 1008).await;
    assert!(message.contains("EIP-55"), "{message}");

    // Accepted: checksummed, lower case, upper case; each streams the contract's logs.
    let spellings = [
        contract.to_checksum(None),
        format!("{contract:#x}"),
        format!("0x{}", hex.to_uppercase()),
    ];
    for good in &spellings {
        let mut by_url = connect(&format!(
            "{ws_base}/v1/stream?since=0&kind=log&address={good}"
        ))
        .await;
        let by_message = json!({"type": "subscribe", "since": 0, "kind": "log", "address": [good]});
        let mut by_message = subscribe(&ws_base, &by_message).await;
        for ws in [&mut by_url, &mut by_message] {
            let msg = next_json(ws, READ).await.expect("a log");
            assert_eq!(msg["type"], "event", "{good}: {msg}");
            assert_eq!(
                msg["event"]["address"],
                contract.to_checksum(None),
                "{good}: {msg}"
            );
        }
    }
    app.stop().await;
}

/// A frame over the limit — just over, far over (past the transport's own limit), before or
/// after subscribing — is answered with an error and a close 1009, not a dropped connection.
/// Up to twice the limit the frame is read whole, so the connection then ends cleanly (a FIN,
/// not a reset); past that its unread rest makes the end a reset, after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_is_answered_with_close_1009() {
    let (_net, app, _dir) = service().await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    for (size, subscribed) in [
        (LIMIT + 1, false),
        (LIMIT + 1, true),
        (100 * 1024, false),
        (4 * 1024 * 1024, false),
        (4 * 1024 * 1024, true),
    ] {
        let what = format!("a {size}-byte frame (subscribed: {subscribed})");
        let url = if subscribed {
            format!("{ws_base}/v1/stream?kind=block")
        } else {
            format!("{ws_base}/v1/stream")
        };
        let ws = connect(&url).await;
        let (mut sink, mut stream) = ws.split();
        // Sent from its own task: a frame the server will not read may not fit the socket's
        // buffers, and the answer must be read meanwhile.
        let sender = tokio::spawn(async move {
            let _ = sink.send(Message::text("x".repeat(size))).await;
            sink
        });
        let deadline = Instant::now() + READ;
        let mut error: Option<Value> = None;
        let mut close: Option<CloseFrame> = None;
        // How the connection ended after the close frame: `None` is a clean end.
        let mut end: Option<String> = Some("no end within the time".into());
        for _ in 0..100 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if value["type"] == "error" {
                        error = Some(value);
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => close = frame,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(err))) if close.is_some() => {
                    end = Some(err.to_string());
                    break;
                }
                Ok(Some(Err(err))) => panic!("{what}: {err} (error so far: {error:?})"),
                Ok(None) => {
                    end = None;
                    break;
                }
                Err(_) => break,
            }
        }
        sender.abort();
        let error = error.unwrap_or_else(|| panic!("{what}: no error message"));
        assert_eq!(error["error"]["code"], "too_large", "{what}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&LIMIT.to_string()), "{what}: {error}");
        let close = close.unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(u16::from(close.code), 1009, "{what}: {close:?}");
        assert!(!close.reason.is_empty(), "{what}: {close:?}");
        if size <= 2 * LIMIT {
            assert_eq!(end, None, "{what}: the connection did not end cleanly");
        }
    }
    // The service is unharmed.
    let (status, _) = support::get_json(&app.url("/health")).await;
    assert_eq!(status, 200);
    app.stop().await;
}
