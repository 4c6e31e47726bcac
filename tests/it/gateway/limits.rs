//! The gateway's WebSocket limits over real sockets. `gateway.ws_calls_per_second`: a caller
//! that floods its connection gets `-32005` in place of each call over the limit (every id still
//! answered once, the limit named), other connections are not slowed by it, and the flooded one
//! is served again once the second has passed. `gateway.max_ws_sessions` and
//! `gateway.max_ws_sessions_per_client`: one socket too many is refused before the upgrade
//! (503 / 429, `-32005` naming the key), and a closed socket gives its slot back.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, parse_config, start_app};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    socket
}

/// Sends a batch of `n` `eth_chainId` calls (ids `first..first + n`) and returns the answers by
/// id.
async fn batch(socket: &mut Socket, first: u64, n: u64) -> HashMap<u64, Value> {
    let calls: Vec<Value> = (first..first + n)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "eth_chainId", "params": []}))
        .collect();
    socket
        .send(Message::Text(Value::from(calls).to_string().into()))
        .await
        .expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("answered in time");
    let Some(Ok(Message::Text(text))) = answer else {
        panic!("no answer: {answer:?}");
    };
    let answers: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
    answers
        .into_iter()
        .map(|a| (a["id"].as_u64().expect("an id"), a))
        .collect()
}

#[tokio::test]
async fn calls_over_the_per_connection_rate_are_answered_32005() {
    let devnet = support::devnet(1, 100, 1, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A chain name of its own: metrics are one registry for every test of this process.
    let yaml = support::service_yaml(&devnet, &dir.path().join("rate.db"))
        .replace("  devnet:\n", "  rated:\n")
        + "gateway: { ws_calls_per_second: 5 }\n";
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/rated").replacen("http://", "ws://", 1);

    let mut flooded = connect(&url).await;
    let answers = batch(&mut flooded, 0, 40).await;
    assert_eq!(answers.len(), 40, "every call answered once");
    let limited: Vec<&Value> = answers
        .values()
        .filter(|a| a["error"]["code"] == -32005)
        .collect();
    let served = answers.values().filter(|a| a["result"].is_string()).count();
    assert_eq!(limited.len() + served, 40, "{answers:?}");
    assert!((5..=10).contains(&served), "{served} served at 5 a second");
    let message = limited[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gateway.ws_calls_per_second"), "{message}");

    // Another connection has a budget of its own.
    let other = batch(&mut connect(&url).await, 100, 5).await;
    assert!(other.values().all(|a| a["result"].is_string()), "{other:?}");

    // The flooded connection is served again as its budget refills (bounded: 50 tries).
    let mut served_again = false;
    for id in 200..250 {
        if batch(&mut flooded, id, 1).await[&id]["result"].is_string() {
            served_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served_again,
        "the flooded connection was never served again"
    );

    let text = support::metrics_text(&app).await;
    let counted: f64 = text
        .lines()
        .find(|l| l.starts_with("livechain_gateway_rate_limited_total{chain=\"rated\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(counted as usize >= limited.len(), "{counted} counted");
    app.stop().await;
}

/// The status and JSON-RPC error of a WebSocket upgrade the service refused.
async fn refused(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("one WebSocket too many was opened"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            (response.status().as_u16(), json)
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn gateway_sockets_are_capped_in_total_and_per_client() {
    let devnet = support::devnet(1, 100, 1, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = support::service_yaml(&devnet, &dir.path().join("caps.db"));
    // In total: trusted loopback callers are counted there only.
    let total = start_app(parse_config(
        &(yaml.clone() + "gateway: { max_ws_sessions: 2 }\n"),
    ))
    .await;
    let url = total.url("/rpc/devnet").replacen("http://", "ws://", 1);
    let open = [connect(&url).await, connect(&url).await];
    let (status, body) = refused(&url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], -32005);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gateway.max_ws_sessions"), "{message}");
    drop(open);
    // A slot comes back when its socket closes (bounded: 50 tries).
    let mut reopened = false;
    for _ in 0..50 {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "the closed sockets' slots never came back");
    total.stop().await;

    // Per client: this test's loopback calls count as a remote client's.
    let yaml = yaml.replace(
        "server: { listen: \"127.0.0.1:0\" }",
        "server: { listen: \"127.0.0.1:0\", trust_loopback: false, public: true }",
    ) + "gateway: { max_ws_sessions_per_client: 2 }\n";
    let per_client = start_app(parse_config(&yaml)).await;
    let url = per_client
        .url("/rpc/devnet")
        .replacen("http://", "ws://", 1);
    let _open = [connect(&url).await, connect(&url).await];
    let (status, body) = refused(&url).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("gateway.max_ws_sessions_per_client"),
        "{message}"
    );
    per_client.stop().await;
}
