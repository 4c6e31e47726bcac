//! Slow and idle clients over raw sockets: headers sent a byte at a time (slowloris), a
//! connection that never sends a request, a keep-alive connection left idle, an HTTP/2
//! connection left idle, a gateway body that never completes. `server.header_timeout` closes
//! the first four and `server.body_timeout` answers the last with a 408; a stream subscriber
//! that only listens is not a slow client and stays, nor is an HTTP/2 request whose body is
//! still coming.

use std::time::Instant;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// The service with a 1 s header timeout and a 1 s body timeout.
async fn start(devnet: &TestDevnet, dir: &std::path::Path) -> TestApp {
    start_with(devnet, dir, "header_timeout: 1s, body_timeout: 1s").await
}

/// The service with `server` keys beside its loopback listener.
async fn start_with(devnet: &TestDevnet, dir: &std::path::Path, server: &str) -> TestApp {
    let yaml = support::service_yaml(devnet, &dir.join("t.db")).replace(
        "server: { listen: \"127.0.0.1:0\" }",
        &format!("server: {{ listen: \"127.0.0.1:0\", {server} }}"),
    );
    support::start_app(support::parse_config(&yaml)).await
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect to the API")
}

/// Reads until the server closes the connection (bounded by [`WAIT`]); what it sent.
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        // A reset counts as closed too.
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for {WAIT:?}"
    );
    String::from_utf8_lossy(&got).into_owned()
}

/// `livechain_api_timeouts_total{kind}` as the service counts it.
async fn timeouts(app: &TestApp, kind: &str) -> f64 {
    let text = support::metrics_text(app).await;
    let prefix = format!("livechain_api_timeouts_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_and_a_listening_subscriber_is_not() {
    let devnet = support::devnet(1, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(&devnet, dir.path()).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let (mut stream, _) = tokio_tungstenite::connect_async(format!("{ws_base}/v1/stream?since=0"))
        .await
        .expect("a subscriber connects");
    let before = timeouts(&app, "header").await;

    // Slowloris: a header line every 300 ms, never the blank line that ends them.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow
            .write_all(format!("X-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        let mut probe = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await;
        if matches!(closed, Ok(Ok(0) | Err(_))) {
            break;
        }
    }
    assert!(
        started.elapsed() < WAIT,
        "a client trickling its headers was never closed"
    );

    // A connection that never sends a byte.
    let mut silent = connect(&app).await;
    assert_eq!(until_closed(&mut silent).await, "");

    // A keep-alive connection left idle after one answered request.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answered = until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    let closed = timeouts(&app, "header").await - before;
    assert!(closed >= 2.0, "{closed} header timeouts counted");

    // The subscriber sent nothing all along and still receives (a heartbeat or an event).
    let next = tokio::time::timeout(WAIT, stream.next()).await;
    assert!(
        matches!(next, Ok(Some(Ok(_)))),
        "the listening subscriber was cut: {next:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_gateway_body_that_never_completes_is_answered_408() {
    let devnet = support::devnet(1, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(&devnet, dir.path()).await;
    let mut tcp = connect(&app).await;
    tcp.write_all(
        b"POST /rpc/devnet HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"jsonrpc\":",
    )
    .await
    .expect("write");
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");
    assert!(timeouts(&app, "body").await >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn a_page_past_server_query_timeout_is_refused_422() {
    let devnet = support::devnet(1, 100, 5, 60).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_with(&devnet, dir.path(), "query_timeout: 1ns").await;
    support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= 60)
    })
    .await
    .expect("the history is stored");
    // No page of a thousand rows is read in a nanosecond.
    let (status, body) = support::get_json(&app.url("/v1/events?limit=1000")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "query_too_costly");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("server.query_timeout"), "{message}");
    assert!(timeouts(&app, "query").await >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_one_with_a_request_in_flight_is_not() {
    let devnet = support::devnet(1, 100, 1, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_with(&devnet, dir.path(), "header_timeout: 1s, body_timeout: 10s").await;
    let before = timeouts(&app, "idle").await;

    // A peer that speaks HTTP/2 (preface and settings), opens no stream and answers no ping.
    let mut silent = connect(&app).await;
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write the preface");
    until_closed(&mut silent).await;

    // A client whose request body takes longer than the idle time: answered, then closed once
    // idle.
    let tcp = connect(&app).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let parts = [
        r#"{"jsonrpc":"2.0","id":7,"#,
        r#""method":"eth_chainId","params":[]}"#,
    ];
    let body = futures_util::stream::unfold(0, move |i| async move {
        let part = parts.get(i)?;
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        Some((Ok::<_, std::io::Error>(*part), i + 1))
    });
    let request = axum::http::Request::post(format!("{}/rpc/{CHAIN}", app.base))
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .expect("a request");
    let answer = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("answered over the connection");
    assert_eq!(answer.status(), 200);
    let bytes = axum::body::to_bytes(axum::body::Body::new(answer.into_body()), 1 << 20)
        .await
        .expect("the answer's body");
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(answer["id"], 7, "{answer}");
    assert!(answer["result"].is_string(), "{answer}");
    // The client keeps its side open: only the server can end the connection.
    let ended = tokio::time::timeout(WAIT, conn).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection stayed open for {WAIT:?}"
    );
    drop(sender);

    let closed = timeouts(&app, "idle").await - before;
    assert!(closed >= 2.0, "{closed} idle timeouts counted");
    app.stop().await;
}
