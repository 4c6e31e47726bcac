//! What the gateway answers a caller: a provider's `result` or `error` passed through as raw
//! JSON under the caller's own id, or one of the errors a node gives.

use serde::Serialize;
use serde_json::value::RawValue;

/// JSON-RPC 2.0 error codes a node uses for what it refuses itself.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A server error (the implementation-defined range): no provider could answer.
pub const UNAVAILABLE: i64 = -32000;
/// EIP-1474's "limit exceeded".
pub const LIMIT_EXCEEDED: i64 = -32005;
/// EIP-1474's "transaction rejected": a write from a caller the access rules do not trust.
pub const TRANSACTION_REJECTED: i64 = -32003;

/// One answer, to one call.
#[derive(Debug, Clone)]
pub struct Reply {
    id: Option<Box<RawValue>>,
    body: Outcome,
}

#[derive(Debug, Clone)]
enum Outcome {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

impl Reply {
    /// A provider's `result`, as it sent it.
    pub fn result(id: Option<Box<RawValue>>, result: Box<RawValue>) -> Reply {
        Reply {
            id,
            body: Outcome::Result(result),
        }
    }

    /// A provider's `error` object, as it sent it.
    pub fn provider_error(id: Option<Box<RawValue>>, error: Box<RawValue>) -> Reply {
        Reply {
            id,
            body: Outcome::Error(error),
        }
    }

    /// An error of the gateway's own.
    pub fn error(
        id: Option<Box<RawValue>>,
        code: i64,
        message: &str,
        data: Option<&serde_json::Value>,
    ) -> Reply {
        let object = ErrorObject {
            code,
            message,
            data,
        };
        // Serialising a struct of a number and strings cannot fail; the fallback keeps the code.
        let error = serde_json::value::to_raw_value(&object).unwrap_or_else(|_| {
            RawValue::from_string(format!(r#"{{"code":{code},"message":"error"}}"#))
                .unwrap_or_else(|_| RawValue::NULL.to_owned())
        });
        Reply {
            id,
            body: Outcome::Error(error),
        }
    }

    /// The `result` when this answer is one.
    pub fn result_raw(&self) -> Option<&RawValue> {
        match &self.body {
            Outcome::Result(raw) => Some(raw),
            Outcome::Error(_) => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self.body, Outcome::Error(_))
    }

    /// The answer's JSON text, `id` as the caller sent it (`null` when it could not be read).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write(&mut out);
        out
    }

    pub fn write(&self, out: &mut String) {
        out.push_str(r#"{"jsonrpc":"2.0","id":"#);
        out.push_str(self.id.as_deref().map_or("null", RawValue::get));
        match &self.body {
            Outcome::Result(raw) => {
                out.push_str(r#","result":"#);
                out.push_str(raw.get());
            }
            Outcome::Error(raw) => {
                out.push_str(r#","error":"#);
                out.push_str(raw.get());
            }
        }
        out.push('}');
    }
}

/// The body of a batch's answers, in the order given.
pub fn batch_json(replies: &[Reply]) -> String {
    let mut out = String::with_capacity(64 * replies.len() + 2);
    out.push('[');
    for (i, reply) in replies.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        reply.write(&mut out);
    }
    out.push(']');
    out
}

pub fn parse_error(why: &str) -> Reply {
    Reply::error(None, PARSE_ERROR, &format!("parse error: {why}"), None)
}

pub fn invalid_request(id: Option<Box<RawValue>>, why: &str) -> Reply {
    Reply::error(id, INVALID_REQUEST, why, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_callers_id_and_the_providers_json_untouched() {
        let id = RawValue::from_string("\"x-1\"".into()).ok();
        let result = RawValue::from_string(r#"{"b":1, "a":[2]}"#.into()).expect("raw");
        assert_eq!(
            Reply::result(id.clone(), result).to_json(),
            r#"{"jsonrpc":"2.0","id":"x-1","result":{"b":1, "a":[2]}}"#
        );
        let error = RawValue::from_string(
            r#"{"code":3,"message":"execution reverted","data":"0x"}"#.into(),
        )
        .expect("raw");
        assert_eq!(
            Reply::provider_error(None, error).to_json(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":3,"message":"execution reverted","data":"0x"}}"#
        );
        let own = Reply::error(None, METHOD_NOT_FOUND, "the \"method\" is denied", None);
        let v: serde_json::Value = serde_json::from_str(&own.to_json()).expect("json");
        assert_eq!(v["error"]["message"], "the \"method\" is denied");
    }
}
