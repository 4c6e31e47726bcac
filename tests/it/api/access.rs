//! The access rules over real sockets: `server.trust_loopback: false` makes this test's own
//! loopback calls count as a remote caller's (as behind a proxy on the host), so the token and
//! `server.public` decide what each call gets.

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, TestApp};

const TOKEN: &str = "test-token-0123456789abcdef";

/// The service with `server` settings `extra` (a YAML flow mapping's entries).
async fn start(devnet: &support::TestDevnet, dir: &std::path::Path, extra: &str) -> TestApp {
    let yaml = support::service_yaml(devnet, &dir.join("s.db")).replace(
        "server: { listen: \"127.0.0.1:0\" }",
        &format!("server: {{ listen: \"127.0.0.1:0\", trust_loopback: false, {extra} }}"),
    );
    support::start_app(support::parse_config(&yaml)).await
}

/// Status, error code (if the body is an error) and the `WWW-Authenticate` header of a call.
async fn call(
    method: reqwest::Method,
    url: &str,
    auth: Option<(&str, String)>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, challenge)
}

fn bearer(token: &str) -> Option<(&'static str, String)> {
    Some((AUTHORIZATION.as_str(), format!("Bearer {token}")))
}

#[tokio::test]
async fn the_token_opens_every_route_and_only_it() {
    let devnet = support::devnet(2, 50, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(&devnet, dir.path(), &format!("auth_token: \"{TOKEN}\"")).await;
    let url = |path: &str| app.url(path);
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Probes and the page's own files are open; everything else asks for the token.
    for path in ["/health", "/", "/ui/status.js"] {
        assert_eq!(
            call(get.clone(), &url(path), None, None).await.0,
            200,
            "{path}"
        );
    }
    for path in [
        "/v1/events",
        "/v1/chains",
        "/metrics",
        "/openapi.json",
        "/v1/processes",
    ] {
        let (status, body, challenge) = call(get.clone(), &url(path), None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{path}");
    }
    let pause = url("/v1/providers/devnet/p1/pause");
    assert_eq!(call(post.clone(), &pause, None, None).await.0, 401);

    // A wrong token is refused; the right one as a header or as the page's cookie opens all.
    let (status, body, _) = call(
        get.clone(),
        &url("/v1/events"),
        bearer("x".repeat(20).as_str()),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    assert_eq!(
        call(get.clone(), &url("/v1/events"), bearer(TOKEN), None)
            .await
            .0,
        200
    );
    let cookie = Some((
        COOKIE.as_str(),
        format!("theme=dark; livechain_token={TOKEN}"),
    ));
    assert_eq!(
        call(get.clone(), &url("/v1/processes"), cookie, None)
            .await
            .0,
        200
    );
    let (status, body, _) = call(post.clone(), &pause, bearer(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let resume = url("/v1/providers/devnet/p1/resume");
    assert_eq!(
        call(post.clone(), &resume, bearer(TOKEN), None).await.0,
        200
    );

    // The live tail from a browser: the cookie rides on the WebSocket handshake.
    let ws = app.base.replacen("http://", "ws://", 1) + "/v1/stream?since=0";
    assert!(
        tokio_tungstenite::connect_async(ws.as_str()).await.is_err(),
        "refused without it"
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws.as_str())
            .expect("a request");
    let value = format!("livechain_token={TOKEN}")
        .parse()
        .expect("a header value");
    request.headers_mut().insert(COOKIE, value);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded with the cookie");
    let _ = socket.close(None).await;

    // Refusals are counted by reason.
    let (_, _, _) = call(get.clone(), &url("/metrics"), bearer(TOKEN), None).await;
    let metrics = reqwest::Client::new()
        .get(url("/metrics"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("livechain_api_refused_total{reason=\"unauthorized\"}"),
        "refusals counted"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_public_service_serves_reads_to_anyone_and_writes_only_with_the_token() {
    let devnet = support::devnet(2, 50, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!("public: true, auth_token: \"{TOKEN}\", max_stream_sessions_per_client: 2");
    let app = start(&devnet, dir.path(), &extra).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    assert_eq!(
        call(get.clone(), &app.url("/v1/events"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(get.clone(), &app.url("/v1/chains"), None, None)
            .await
            .0,
        200
    );
    // Admin routes stay closed.
    let (status, _, _) = call(get.clone(), &app.url("/v1/processes"), None, None).await;
    assert_eq!(status, 401);
    let pause = app.url("/v1/chains/devnet/pause");
    assert_eq!(call(post.clone(), &pause, None, None).await.0, 401);

    // The gateway: reads for anyone, a write refused unless the token comes with it (and then
    // sent on: whatever the provider makes of it, it is not the gateway's refusal).
    let rpc = app.url("/rpc/devnet");
    let read = json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]});
    let (status, body, _) = call(post.clone(), &rpc, None, Some(read)).await;
    assert_eq!(status, 200);
    assert!(body["result"].is_string(), "{body}");
    let write = json!([
        {"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]},
        {"jsonrpc":"2.0","id":8,"method":"eth_sendRawTransaction","params":["0x02"]}
    ]);
    let (_, body, _) = call(post.clone(), &rpc, None, Some(write.clone())).await;
    assert!(
        body[0]["result"].is_string(),
        "the read in the batch is answered: {body}"
    );
    assert_eq!(body[1]["error"]["code"], -32003, "{body}");
    assert!(
        body[1]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server.auth_token"),
        "{body}"
    );
    let (_, body, _) = call(post.clone(), &rpc, bearer(TOKEN), Some(write)).await;
    assert_ne!(
        body[1]["error"]["code"], -32003,
        "sent on with the token: {body}"
    );

    // One client holds two streams at most; a third is refused with a 429 until one closes.
    let stream = app.base.replacen("http://", "ws://", 1) + "/v1/stream?kind=block";
    let (mut first, _) = tokio_tungstenite::connect_async(stream.as_str())
        .await
        .expect("first");
    let (_second, _) = tokio_tungstenite::connect_async(stream.as_str())
        .await
        .expect("second");
    match tokio_tungstenite::connect_async(stream.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429)
        }
        other => panic!("a third stream was not refused with 429: {other:?}"),
    }
    let _ = first.close(None).await;
    drop(first);
    let reopened = support::wait_for(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || async { tokio_tungstenite::connect_async(stream.as_str()).await.ok() },
    )
    .await;
    assert!(reopened.is_some(), "a closed stream gives its share back");

    // Over the gateway's WebSocket too.
    let ws = app.base.replacen("http://", "ws://", 1) + "/rpc/devnet";
    let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str())
        .await
        .expect("upgraded");
    let frame = json!({"jsonrpc":"2.0","id":9,"method":"eth_sendRawTransaction","params":["0x02"]});
    socket.send(frame.to_string().into()).await.expect("sent");
    let answer = match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await
    {
        Ok(Some(Ok(Message::Text(text)))) => {
            serde_json::from_str(text.as_str()).unwrap_or(Value::Null)
        }
        other => panic!("no answer: {other:?}"),
    };
    assert_eq!(answer["error"]["code"], -32003, "{answer}");
    app.stop().await;
}
