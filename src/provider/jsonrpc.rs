//! JSON-RPC 2.0 framing: requests out, responses and subscription notifications in.
//!
//! Incoming frames are parsed lazily: the envelope is read, the `result` stays raw JSON
//! ([`RawValue`]) until someone needs it, so duplicates can be dropped before the full parse.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::ProviderError;

/// Serialises one request. Parameters are already JSON so callers choose their own types.
pub fn request(id: u64, method: &str, params: &RawValue) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// Serialises a batch of requests with consecutive ids starting at `first_id`.
pub fn batch<'a>(
    first_id: u64,
    calls: impl IntoIterator<Item = (&'a str, &'a RawValue)>,
) -> String {
    let mut out = String::from("[");
    for (i, (method, params)) in calls.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&request(first_id + i as u64, method, params));
    }
    out.push(']');
    out
}

/// The error object of a JSON-RPC response.
#[derive(Debug, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// One incoming frame: a response (has `id`) or a notification (has `method`).
#[derive(Debug, Deserialize)]
pub struct Incoming {
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub result: Option<Box<RawValue>>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
    #[serde(default)]
    pub params: Option<NotificationParams>,
    #[serde(default, rename = "jsonrpc")]
    _jsonrpc: Option<IgnoredAny>,
}

/// `params` of an `eth_subscription` notification.
#[derive(Debug, Deserialize)]
pub struct NotificationParams {
    pub subscription: String,
    pub result: Box<RawValue>,
}

impl Incoming {
    /// The numeric id of a response, if it has one we could have sent.
    pub fn numeric_id(&self) -> Option<u64> {
        self.id.as_ref().and_then(serde_json::Value::as_u64)
    }

    /// The response's outcome: its raw result, or its error classified.
    pub fn into_outcome(self) -> Result<Box<RawValue>, ProviderError> {
        if let Some(err) = self.error {
            return Err(ProviderError::from_rpc(err.code, &err.message));
        }
        self.result
            .ok_or_else(|| ProviderError::Malformed("response has neither result nor error".into()))
    }
}

/// Parses one frame, which may be a single message or a batch.
pub fn parse_frame(text: &str) -> Result<Vec<Incoming>, ProviderError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| ProviderError::Malformed(e.to_string()))
    } else {
        serde_json::from_str(trimmed)
            .map(|one| vec![one])
            .map_err(|e| ProviderError::Malformed(e.to_string()))
    }
}

/// Deserialises a raw result into `T`, naming what failed.
pub fn decode<T: for<'de> Deserialize<'de>>(
    raw: &RawValue,
    what: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(raw.get()).map_err(|e| ProviderError::Malformed(format!("{what}: {e}")))
}

/// Turns any serialisable parameters into raw JSON.
pub fn params<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, ProviderError> {
    serde_json::value::to_raw_value(value).map_err(|e| ProviderError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_notifications_and_batches() {
        let frames = parse_frame(r#"{"jsonrpc":"2.0","id":7,"result":"0x1"}"#).unwrap();
        assert_eq!(frames[0].numeric_id(), Some(7));
        let note = parse_frame(
            r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"number":"0x1"}}}"#,
        )
        .unwrap();
        let params = note[0].params.as_ref().unwrap();
        assert_eq!(params.subscription, "0xab");
        assert_eq!(params.result.get(), r#"{"number":"0x1"}"#);
        let batch = parse_frame(
            r#"[{"id":1,"result":1},{"id":2,"error":{"code":-32601,"message":"nope"}}]"#,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        let mut it = batch.into_iter();
        assert!(it.next().unwrap().into_outcome().is_ok());
        assert!(matches!(
            it.next().unwrap().into_outcome(),
            Err(ProviderError::Rpc { code: -32601, .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for text in ["", "nul", "{", "[1,2", "\u{0}", "{\"id\":[}"] {
            assert!(
                matches!(parse_frame(text), Err(ProviderError::Malformed(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn request_framing_is_valid_json() {
        let p = params(&("latest", false)).unwrap();
        let one: serde_json::Value =
            serde_json::from_str(&request(3, "eth_getBlockByNumber", &p)).unwrap();
        assert_eq!(one["params"][0], "latest");
        let b: serde_json::Value =
            serde_json::from_str(&batch(10, [("eth_chainId", &*p), ("eth_blockNumber", &*p)]))
                .unwrap();
        assert_eq!(b[1]["id"], 11);
    }
}
