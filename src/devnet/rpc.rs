//! JSON-RPC 2.0 framing: payload → requests (single or batch) → method calls → response text.
//!
//! Transport-agnostic: HTTP and WebSocket hand the same bytes here; injected per-request
//! faults are applied here too, after the envelope is checked. Every malformed input maps
//! to a JSON-RPC error object; nothing in this file can panic on input, and only a valid
//! notification (a request without `id`) goes unanswered, as the spec requires.

use serde_json::Value;

use super::methods::{self, Ctx};
pub(crate) use super::rpc_error::RpcError;
pub(crate) use super::subscriptions::Session;

/// Largest request payload accepted, HTTP body or WebSocket message.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most requests in one batch.
pub const MAX_BATCH_LEN: usize = 1_000;

/// Answers one payload. `None` when nothing must be sent back (only notifications).
pub(crate) async fn handle_payload(
    ctx: &Ctx,
    session: &mut Session<'_>,
    bytes: &[u8],
) -> Option<String> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Some(error_response(
            &Value::Null,
            &RpcError::invalid_request(format!(
                "request of {} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes",
                bytes.len()
            )),
        ));
    }
    let payload: Value = match serde_json::from_slice(bytes) {
        Ok(payload) => payload,
        Err(err) => {
            let error = RpcError::new(RpcError::PARSE_ERROR, format!("parse error: {err}"));
            return Some(error_response(&Value::Null, &error));
        }
    };
    match payload {
        Value::Array(requests) => {
            if requests.is_empty() {
                let error = RpcError::invalid_request("empty batch");
                return Some(error_response(&Value::Null, &error));
            }
            if requests.len() > MAX_BATCH_LEN {
                let error = RpcError::invalid_request(format!(
                    "batch of {} requests exceeds the limit of {MAX_BATCH_LEN}",
                    requests.len()
                ));
                return Some(error_response(&Value::Null, &error));
            }
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                if let Some(response) = handle_request(ctx, session, request).await {
                    responses.push(response);
                }
            }
            if responses.is_empty() {
                return None;
            }
            let mut out = String::with_capacity(responses.iter().map(|r| r.len() + 1).sum());
            out.push('[');
            out.push_str(&responses.join(","));
            out.push(']');
            Some(out)
        }
        request => handle_request(ctx, session, request).await,
    }
}

/// One request object of a payload.
async fn handle_request(ctx: &Ctx, session: &mut Session<'_>, request: Value) -> Option<String> {
    let Value::Object(mut request) = request else {
        let error = RpcError::invalid_request("a request must be a JSON object");
        return Some(error_response(&Value::Null, &error));
    };
    let id = request.remove("id");
    // An envelope error is answered even without an id: the sender cannot have meant a valid
    // notification, and silence would leave it guessing.
    let reply_id = match &id {
        None => Value::Null,
        Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => id.clone(),
        Some(_) => {
            let error = RpcError::invalid_request("id must be a string, a number or null");
            return Some(error_response(&Value::Null, &error));
        }
    };
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let error = RpcError::invalid_request("jsonrpc must be \"2.0\"");
        return Some(error_response(&reply_id, &error));
    }
    let method = match request.remove("method") {
        Some(Value::String(method)) => method,
        _ => {
            let error = RpcError::invalid_request("method must be a string");
            return Some(error_response(&reply_id, &error));
        }
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(params)) => Ok(params),
        Some(Value::Object(_)) => Err(RpcError::invalid_params(format!(
            "{method}: named parameters are not supported; pass a positional array"
        ))),
        Some(_) => {
            let error = RpcError::invalid_request("params must be an array or an object");
            return Some(error_response(&reply_id, &error));
        }
    };
    // Injected faults (rate limit, server error, error rate) answer in place of the method,
    // which then never runs: a refused `eth_subscribe` creates no subscription.
    let over_ws = matches!(session, Session::Ws(_));
    let injected = ctx
        .provider_state()
        .and_then(|p| p.faults.request_error(over_ws));
    let outcome = match (injected, params) {
        (Some(error), _) | (None, Err(error)) => Err(error),
        (None, Ok(params)) => methods::call(ctx, session, &method, params).await,
    };
    if let Err(error) = &outcome {
        tracing::debug!(
            provider = ctx.provider,
            method = %method,
            code = error.code,
            message = %error.message,
            "devnet: request failed"
        );
    }
    // A notification gets no answer, even an error (JSON-RPC 2.0 §4.1).
    id.is_some().then(|| response(&reply_id, outcome))
}

/// The response object for `id`; `result` is already JSON text.
fn response(id: &Value, outcome: Result<String, RpcError>) -> String {
    match outcome {
        Ok(result) => {
            let id = id.to_string();
            let mut out = String::with_capacity(result.len() + id.len() + 32);
            out.push_str(r#"{"jsonrpc":"2.0","id":"#);
            out.push_str(&id);
            out.push_str(r#","result":"#);
            out.push_str(&result);
            out.push('}');
            out
        }
        Err(error) => error_response(id, &error),
    }
}

/// An error response; also used by the transports for errors found before parsing.
pub(crate) fn error_response(id: &Value, error: &RpcError) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": error.code, "message": error.message },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::devnet::block::ChainSpec;
    use crate::devnet::chain::Chain;
    use crate::devnet::state::{Mode, Shared};

    fn ctx() -> Ctx {
        let chain = Chain::plain(ChainSpec::new(1, 31337, 4), 10);
        Ctx {
            shared: Arc::new(Shared::new(chain, 1, Mode::Throughput, 1)),
            provider: 0,
        }
    }

    async fn answer(payload: &str) -> Option<Value> {
        let text = handle_payload(&ctx(), &mut Session::Http, payload.as_bytes()).await?;
        Some(serde_json::from_str(&text).expect("responses are JSON"))
    }

    async fn error_code(payload: &str) -> i64 {
        let response = answer(payload).await.expect("an error is answered");
        response["error"]["code"].as_i64().expect("an error object")
    }

    #[tokio::test]
    async fn envelope_errors_map_to_standard_codes() {
        let cases = [
            ("{not json", RpcError::PARSE_ERROR),
            ("[]", RpcError::INVALID_REQUEST),
            ("42", RpcError::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#,
                RpcError::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, RpcError::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"eth_chainId"}"#,
                RpcError::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":7}"#,
                RpcError::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_nope"}"#,
                RpcError::METHOD_NOT_FOUND,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":{"a":1}}"#,
                RpcError::INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#,
                RpcError::METHOD_NOT_FOUND,
            ),
        ];
        for (payload, code) in cases {
            assert_eq!(error_code(payload).await, code, "{payload}");
        }
        let oversized = format!("[{}]", " ".repeat(MAX_REQUEST_BYTES));
        assert_eq!(error_code(&oversized).await, RpcError::INVALID_REQUEST);
        let batch = format!("[{}]", vec!["1"; MAX_BATCH_LEN + 1].join(","));
        assert_eq!(error_code(&batch).await, RpcError::INVALID_REQUEST);
    }

    #[tokio::test]
    async fn ids_notifications_and_batches() {
        let one = answer(r#"{"jsonrpc":"2.0","id":"a","method":"eth_blockNumber"}"#).await;
        assert_eq!(
            one,
            Some(serde_json::json!({"jsonrpc":"2.0","id":"a","result":"0xa"}))
        );
        let none = answer(r#"{"jsonrpc":"2.0","method":"eth_blockNumber"}"#).await;
        assert_eq!(none, None, "notifications get no answer");
        let batch = answer(
            r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
                {"jsonrpc":"2.0","method":"eth_chainId"},
                {"jsonrpc":"2.0","id":2,"method":"nope"}, 5]"#,
        )
        .await
        .unwrap();
        let batch = batch.as_array().unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0]["result"], "0x7a69");
        assert_eq!(batch[1]["error"]["code"], RpcError::METHOD_NOT_FOUND);
        assert!(
            batch[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("nope")
        );
        assert_eq!(batch[2]["error"]["code"], RpcError::INVALID_REQUEST);
    }
}
