//! Integration tests: the devnet over real sockets on 127.0.0.1 — every method over HTTP and
//! WebSocket, filters, subscriptions, determinism across ports and runs, bad input, automatic
//! reorgs, every fault kind, throughput mode and shutdown.
//!
//! Every wait is bounded (`WAIT`); nothing asserts an upper bound on time. This file holds the
//! shared helpers (a devnet that stops with its test, HTTP and WebSocket JSON-RPC clients); the
//! tests live in the submodules, one per concern.

mod determinism;
mod faults;
mod faults_rpc;
mod faults_wire;
mod filters;
mod lifecycle;
mod methods;
mod reorgs;
mod subscriptions;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use alloy_primitives::{Address, B256, BloomInput};
use alloy_rpc_types_eth::{Block, Header, Log};
use futures_util::{SinkExt, StreamExt};
use livechain::devnet::{Devnet, DevnetConfig, GarbageKind};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// A block time so long that the head stays at `initial_blocks` for the whole test.
const FROZEN: u64 = 3_600_000;

/// A devnet that stops when the test ends, pass or panic.
struct Net {
    devnet: Devnet,
    token: CancellationToken,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl std::ops::Deref for Net {
    type Target = Devnet;
    fn deref(&self) -> &Devnet {
        &self.devnet
    }
}

fn config(block_time_ms: u64, initial_blocks: u64) -> DevnetConfig {
    DevnetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        providers: 2,
        block_time_ms,
        logs_per_block: 8,
        initial_blocks,
        ..DevnetConfig::default()
    }
}

async fn start(config: DevnetConfig) -> Net {
    let token = CancellationToken::new();
    let devnet = Devnet::start(config, token.clone()).await.unwrap();
    Net { devnet, token }
}

impl Net {
    fn http(&self, provider: usize) -> String {
        self.endpoints()[provider].http_url.clone()
    }

    fn ws_url(&self, provider: usize) -> String {
        self.endpoints()[provider].ws_url.clone()
    }
}

fn request(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// POSTs raw text; returns status and body.
async fn post_raw(url: &str, body: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Calls a method over HTTP; returns the whole response object.
async fn http_call(url: &str, method: &str, params: Value) -> Value {
    let (status, body) = post_raw(url, request(method, params).to_string()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Calls a method over HTTP and returns its `result`, failing on an error.
async fn http_result(url: &str, method: &str, params: Value) -> Value {
    let response = http_call(url, method, params).await;
    assert!(response.get("error").is_none(), "{method}: {response}");
    response["result"].clone()
}

/// A JSON-RPC WebSocket client that sets notifications aside while waiting for a response.
struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    notifications: VecDeque<Value>,
    next_id: u64,
}

impl Ws {
    async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .unwrap();
        Ws {
            stream,
            notifications: VecDeque::new(),
            next_id: 1,
        }
    }

    async fn send_text(&mut self, text: String) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// The next JSON message, or `None` once the server has closed the connection.
    async fn next_message(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message or a close in time");
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `payload` and returns the next message that is not a notification.
    async fn roundtrip(&mut self, payload: String) -> Value {
        self.send_text(payload).await;
        loop {
            let message = self.next_message().await.expect("connection stays open");
            if message.get("method") == Some(&json!("eth_subscription")) {
                self.notifications.push_back(message);
            } else {
                return message;
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let payload = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.roundtrip(payload.to_string()).await;
        assert_eq!(response["id"], id, "{response}");
        response
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    async fn subscribe(&mut self, params: Value) -> String {
        let id = self.result("eth_subscribe", params).await;
        id.as_str().unwrap().to_owned()
    }

    /// The next notification: `(subscription id, result)`.
    async fn notification(&mut self) -> Option<(String, Value)> {
        let message = match self.notifications.pop_front() {
            Some(message) => message,
            None => self.next_message().await?,
        };
        assert_eq!(message["method"], "eth_subscription", "{message}");
        let params = &message["params"];
        Some((
            params["subscription"].as_str().unwrap().to_owned(),
            params["result"].clone(),
        ))
    }
}

fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn logs_matching(net: &Net, from: u64, to: u64, keep: impl Fn(&Log) -> bool) -> Vec<Log> {
    (from..=to)
        .flat_map(|n| net.logs(n).unwrap())
        .filter(|log| keep(log))
        .collect()
}

fn as_logs(value: Value) -> Vec<Log> {
    serde_json::from_value(value).unwrap()
}

/// Polls `condition` every 10 ms for at most `WAIT`.
async fn wait_until(condition: impl Fn() -> bool) -> bool {
    for _ in 0..(WAIT.as_millis() / 10) {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
