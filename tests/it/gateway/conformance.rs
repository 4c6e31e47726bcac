//! Transparency: the Ethereum execution-apis test suite's recorded exchanges
//! (`tests/fixtures/execution-apis`: 236 requests and the reference node's answers) replayed through the gateway to an upstream that answers each
//! recorded request with its recorded answer. Every answer comes back unchanged, errors
//! included, single and batched; the upstream answers batches in reverse order, so answers
//! matched by position would be caught.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use livechain::config::GatewayConfig;
use livechain::gateway::Caller;
use serde_json::{Value, json};

use super::gateway_over;

/// One recorded request and the answer the reference node gave.
struct Exchange {
    file: String,
    request: String,
    response: Value,
}

/// The recorded exchanges, kept in the repository (`tests/fixtures/execution-apis`).
fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/execution-apis/tests")
}

/// Every exchange of the suite, in file order.
fn recorded() -> Vec<Exchange> {
    let dir = suite_dir();
    let mut files = Vec::new();
    for method in std::fs::read_dir(&dir).expect("suite dir") {
        let method = method.expect("entry").path();
        if method.is_dir() {
            for file in std::fs::read_dir(&method).expect("method dir") {
                files.push(file.expect("entry").path());
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "io"))
    {
        let text = std::fs::read_to_string(path).expect("an .io file");
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        let mut request = None;
        for line in text.lines() {
            if let Some(r) = line.strip_prefix(">> ") {
                request = Some(r.to_owned());
            } else if let Some(r) = line.strip_prefix("<< ") {
                let response: Value = serde_json::from_str(r).expect("a recorded answer");
                out.push(Exchange {
                    file: name.clone(),
                    request: request.take().expect("an answer follows a request"),
                    response,
                });
            }
        }
    }
    out
}

/// What identifies a request to the upstream: its method and params, ids aside.
fn key(request: &Value) -> String {
    format!(
        "{} {}",
        request["method"],
        request.get("params").unwrap_or(&Value::Null)
    )
}

/// The recorded answers by request, without the requests recorded twice with different
/// answers (a state-changing method recorded at different moments).
fn answers(exchanges: &[Exchange]) -> HashMap<String, Value> {
    let mut by_key: HashMap<String, Option<Value>> = HashMap::new();
    for e in exchanges {
        let request: Value = serde_json::from_str(&e.request).expect("a recorded request");
        let mut answer = e.response.clone();
        answer.as_object_mut().map(|o| o.remove("id"));
        by_key
            .entry(key(&request))
            .and_modify(|seen| {
                if seen.as_ref() != Some(&answer) {
                    *seen = None;
                }
            })
            .or_insert(Some(answer));
    }
    by_key
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// The upstream: each recorded request answered with its recorded answer under the request's
/// id; a batch answered in reverse order.
async fn upstream(answers: Arc<HashMap<String, Value>>) -> SocketAddr {
    async fn serve(State(answers): State<Arc<HashMap<String, Value>>>, body: String) -> String {
        let answer = |request: &Value| {
            let mut out = answers.get(&key(request)).cloned().unwrap_or_else(
                || json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "not recorded"}}),
            );
            out["id"] = request["id"].clone();
            out
        };
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(batch)) => {
                Value::Array(batch.iter().rev().map(answer).collect()).to_string()
            }
            Ok(one) => answer(&one).to_string(),
            Err(_) => json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}).to_string(),
        }
    }
    let app = Router::new().route("/", post(serve)).with_state(answers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn every_recorded_answer_comes_back_unchanged_single_and_batched() {
    let exchanges = recorded();
    assert!(exchanges.len() >= 200, "only {} exchanges", exchanges.len());
    let answers = Arc::new(answers(&exchanges));
    let addr = upstream(answers.clone()).await;
    // Two provider entries on the one upstream, as an operator would configure two nodes.
    let url = format!("http://{addr}/");
    let gateway = gateway_over(&[url.clone(), url], GatewayConfig::default());
    let usable: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| {
            let request: Value = serde_json::from_str(&e.request).expect("request");
            answers.contains_key(&key(&request))
        })
        .collect();
    assert!(
        usable.len() + 10 >= exchanges.len(),
        "{} of {} exchanges are ambiguous",
        exchanges.len() - usable.len(),
        exchanges.len()
    );

    // One by one, each with its recorded id.
    let mut wrong = Vec::new();
    for (i, e) in usable.iter().enumerate() {
        let answer = gateway
            .handle(e.request.as_bytes(), Caller::Session(i as u64), true)
            .await;
        let got: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        if got != e.response {
            wrong.push(format!(
                "{}:\n  want {}\n  got  {}",
                e.file, e.response, got
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers changed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // In batches of 16, with ids of every kind, matched by id.
    for (b, chunk) in usable.chunks(16).enumerate() {
        let mut batch = Vec::new();
        let mut want = HashMap::new();
        for (i, e) in chunk.iter().enumerate() {
            let id = match i % 3 {
                0 => json!(format!("b{b}-{i}")),
                1 => json!(1000 * b + i),
                _ => json!(format!("{i}")),
            };
            let mut request: Value = serde_json::from_str(&e.request).expect("request");
            request["id"] = id.clone();
            batch.push(request);
            let mut response = e.response.clone();
            response["id"] = id.clone();
            want.insert(id.to_string(), (e.file.clone(), response));
        }
        let body = Value::Array(batch).to_string();
        let answer = gateway
            .handle(body.as_bytes(), Caller::Session(9999), true)
            .await;
        let got: Vec<Value> = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("batch {b}: {e}: {}", answer.body));
        assert_eq!(got.len(), chunk.len(), "batch {b}: one answer per request");
        for answer in got {
            let (file, response) = want
                .remove(&answer["id"].to_string())
                .unwrap_or_else(|| panic!("batch {b}: an answer with an id not asked: {answer}"));
            assert_eq!(answer, response, "batch {b}: {file}");
        }
    }
}
