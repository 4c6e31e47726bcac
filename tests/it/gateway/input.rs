//! Bad input at `/rpc/{chain}` through the running service: each refusal is the JSON-RPC error
//! a node gives, and the service carries on serving.

use serde_json::{Value, json};

use super::post;
use crate::support::{self, parse_config, start_app};

#[tokio::test]
async fn bad_bodies_get_a_nodes_errors_and_the_service_carries_on() {
    let devnet = support::devnet(2, 200, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "{}gateway:\n  deny_methods: [eth_sendRawTransaction]\n  provider_header: true\n",
        support::service_yaml(&devnet, &dir.path().join("gw.db"))
    );
    let app = start_app(parse_config(&yaml)).await;
    let rpc = app.url("/rpc/devnet");
    let code = |text: &str| -> i64 {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error code: {text}"))
    };

    let (status, body) = post(&rpc, "{\"jsonrpc\":").await;
    assert_eq!((status, code(&body)), (200, -32700), "invalid JSON: {body}");
    let (status, body) = post(&rpc, "[]").await;
    assert_eq!((status, code(&body)), (200, -32600), "empty batch: {body}");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"});
    let huge = Value::Array(vec![call.clone(); 10_000]).to_string();
    let (status, body) = post(&rpc, huge).await;
    assert_eq!(
        (status, code(&body)),
        (200, -32600),
        "10,000 requests: {body}"
    );
    assert!(body.contains("gateway.max_batch"), "{body}");
    let (status, body) = post(&rpc, vec![b' '; 100 << 20]).await;
    assert_eq!((status, code(&body)), (413, -32600), "100 MB: {body}");
    assert!(body.contains("gateway.max_body_bytes"), "{body}");
    let (status, body) = post(&app.url("/rpc/nochain"), call.to_string()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("devnet"), "names the chains served: {body}");
    let denied = json!({"jsonrpc": "2.0", "id": "w", "method": "eth_sendRawTransaction", "params": ["0x00"]});
    let (status, body) = post(&rpc, denied.to_string()).await;
    assert_eq!((status, code(&body)), (200, -32601), "{body}");
    assert!(body.contains("gateway.deny_methods"), "{body}");
    let (_, body) = post(&rpc, r#"{"jsonrpc":"1.0","id":3,"method":"eth_chainId"}"#).await;
    assert_eq!(code(&body), -32600, "not 2.0: {body}");

    // Ids of every kind come back as sent; a notification gets nothing; chain by id works.
    let batch = r#"[{"jsonrpc":"2.0","id":"s","method":"eth_chainId"},
        {"jsonrpc":"2.0","id":null,"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":12345678901234567890,"method":"eth_chainId"},
        {"jsonrpc":"2.0","method":"eth_chainId"}]"#;
    let chain_id = devnet.config().chain_id;
    let response = reqwest::Client::new()
        .post(app.url(&format!("/rpc/{chain_id}")))
        .body(batch)
        .send()
        .await
        .expect("batch");
    let provider = response.headers().get("x-livechain-provider").cloned();
    let answers: Vec<Value> = response.json().await.expect("json");
    let ids: Vec<String> = answers.iter().map(|a| a["id"].to_string()).collect();
    assert_eq!(
        ids,
        ["\"s\"", "null", "12345678901234567890"],
        "{answers:?}"
    );
    let hex = format!("0x{chain_id:x}");
    assert!(
        answers.iter().all(|a| a["result"] == hex.as_str()),
        "{answers:?}"
    );
    assert!(
        provider.is_some_and(|p| p == "p0" || p == "p1"),
        "the provider header names p0 or p1"
    );
    let (status, body) = post(&rpc, r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#).await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "a notification is answered with nothing"
    );

    let (status, _) = support::get_json(&app.url("/health")).await;
    assert_eq!(status, 200, "the service carries on");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_gateway_says_so() {
    let devnet = support::devnet(1, 200, 1, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "{}gateway: {{ enabled: false }}\n",
        support::service_yaml(&devnet, &dir.path().join("off.db"))
    );
    let app = start_app(parse_config(&yaml)).await;
    let (status, body) = post(
        &app.url("/rpc/devnet"),
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("gateway.enabled"), "{body}");
    app.stop().await;
}
