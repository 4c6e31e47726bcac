//! The write rule: a write that may have reached a provider is not sent to another when the
//! answer is lost; one that provably did not (connection refused) goes to the next. Reads are
//! retried either way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use livechain::config::GatewayConfig;
use livechain::gateway::Caller;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{gateway_over, gateway_with_rules};

/// Requests a fake provider received, by whether they held a write.
#[derive(Default)]
struct Seen {
    writes: AtomicUsize,
    reads: AtomicUsize,
}

/// What a fake provider does with each request it read whole.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Closes the connection without a word (the answer lost after the request arrived).
    Drop,
    /// Answers every call with the result `"0xabc"`.
    Answer,
    /// Answers every call with the error object `-39001 custom busy`.
    Odd,
}

async fn provider(mode: Mode) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let Some(body) = read_request(&mut socket).await else {
                    return;
                };
                let counter = if body.contains("eth_sendRawTransaction") {
                    &counts.writes
                } else {
                    &counts.reads
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if mode == Mode::Drop {
                    return; // dropped: the connection closes unanswered
                }
                let result = |r: &Value| match mode {
                    Mode::Odd => {
                        serde_json::json!({"jsonrpc": "2.0", "id": r["id"], "error": {"code": -39001, "message": "custom busy"}})
                    }
                    _ => serde_json::json!({"jsonrpc": "2.0", "id": r["id"], "result": "0xabc"}),
                };
                let reply = match serde_json::from_str(&body).unwrap_or(Value::Null) {
                    Value::Array(calls) => Value::Array(calls.iter().map(result).collect()),
                    one => result(&one),
                }
                .to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = socket.write_all(format!("{head}{reply}").as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// One HTTP/1.1 request's body (content-length framed), bounded in size and reads.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..64 {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned());
            }
        }
    }
    None
}

/// An address nothing listens on: connecting is refused.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

const WRITE: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"eth_sendRawTransaction","params":["0x02f8"]}"#;
const READ: &str = r#"{"jsonrpc":"2.0","id":8,"method":"eth_getBalance","params":["0x0000000000000000000000000000000000000000","latest"]}"#;

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_sent_again() {
    let (lossy, lossy_seen) = provider(Mode::Drop).await;
    let (good, good_seen) = provider(Mode::Answer).await;
    let gateway = gateway_over(
        &[format!("http://{lossy}/"), format!("http://{good}/")],
        GatewayConfig::default(),
    );

    let answer = gateway
        .handle(WRITE.as_bytes(), Caller::Session(1), true)
        .await;
    let reply: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert_eq!(reply["error"]["data"]["retried"], false, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("eth_getTransactionByHash"),
        "{reply}"
    );
    assert_eq!(lossy_seen.writes.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(
        good_seen.writes.load(Ordering::SeqCst),
        0,
        "never sent to the second"
    );

    // A batch holding a write is a write: sent once (the first provider, which failed at its
    // start, is backing off now, so it goes to the second, which was never sent it).
    let batch = format!("[{READ},{WRITE}]");
    gateway
        .handle(batch.as_bytes(), Caller::Session(1), true)
        .await;
    let writes = lossy_seen.writes.load(Ordering::SeqCst) + good_seen.writes.load(Ordering::SeqCst);
    assert_eq!(writes, 2, "each write sent exactly once");

    // A read is retried on the next provider.
    let answer = gateway
        .handle(READ.as_bytes(), Caller::Session(1), true)
        .await;
    let reply: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(reply["result"], "0xabc", "{reply}");
    assert_eq!(answer.provider.as_deref(), Some("u1"));
    assert!(good_seen.reads.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_write_that_never_left_goes_to_the_next_provider() {
    let refused = closed_port().await;
    let (good, good_seen) = provider(Mode::Answer).await;
    let gateway = gateway_over(
        &[format!("http://{refused}/"), format!("http://{good}/")],
        GatewayConfig::default(),
    );
    let answer = gateway
        .handle(WRITE.as_bytes(), Caller::Session(1), true)
        .await;
    let reply: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(
        reply,
        serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": "0xabc"})
    );
    assert_eq!(
        good_seen.writes.load(Ordering::SeqCst),
        1,
        "sent exactly once, to the second"
    );
}

/// `error_rules` teach the gateway (and ingestion, which classifies with the same rules) a
/// provider's odd error code: unknown, it is the caller's error and passed back; taught as a
/// fault, the call goes to the next provider.
#[tokio::test]
async fn error_rules_teach_a_providers_odd_codes() {
    let (odd, _) = provider(Mode::Odd).await;
    let (good, _) = provider(Mode::Answer).await;
    let urls = [format!("http://{odd}/"), format!("http://{good}/")];
    let untaught = gateway_over(&urls, GatewayConfig::default());
    let answer = untaught
        .handle(READ.as_bytes(), Caller::Session(1), true)
        .await;
    let reply: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(
        reply["error"]["code"], -39001,
        "passed back as the caller's: {reply}"
    );

    let rule = livechain::config::ErrorRule {
        code: Some(-39001),
        message: None,
        class: livechain::config::ErrorClass::Fault,
    };
    let taught = gateway_with_rules(&urls, GatewayConfig::default(), &[rule]);
    let answer = taught
        .handle(READ.as_bytes(), Caller::Session(1), true)
        .await;
    let reply: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(
        reply["result"], "0xabc",
        "asked of the next provider: {reply}"
    );
}
