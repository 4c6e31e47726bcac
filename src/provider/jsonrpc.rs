//! JSON-RPC 2.0 framing: requests out, responses and subscription notifications in.
//!
//! Incoming frames are parsed lazily: the envelope is read, the `result` stays raw JSON
//! ([`RawValue`]) until someone needs it, so duplicates can be dropped before the full parse.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::Deserializer;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::{ErrorRules, ProviderError};

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

/// One incoming message, a response (has `id`) or a notification (has `method`), borrowed
/// from the frame's text: reading one allocates nothing (an escaped `method` or subscription
/// id aside), and whoever keeps a result copies just that.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    /// Present even when it is `null` (an unknown block, say): absent is another thing.
    #[serde(default, borrow, deserialize_with = "present")]
    pub result: Option<&'a RawValue>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
    #[serde(default, borrow)]
    pub params: Option<NotificationParams<'a>>,
    #[serde(default, rename = "jsonrpc")]
    _jsonrpc: Option<IgnoredAny>,
}

/// `params` of an `eth_subscription` notification.
#[derive(Debug, Deserialize)]
pub struct NotificationParams<'a> {
    #[serde(borrow)]
    pub subscription: Cow<'a, str>,
    #[serde(borrow)]
    pub result: &'a RawValue,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Incoming<'_> {
    /// The numeric id of a response, if it has one we could have sent.
    pub fn numeric_id(&self) -> Option<u64> {
        self.id.and_then(|id| id.get().parse().ok())
    }

    /// Whether this is a subscription notification.
    pub fn is_notification(&self) -> bool {
        self.method.as_deref() == Some("eth_subscription")
    }

    /// The response's outcome: its raw result (copied), or its error classified by `rules`.
    pub fn into_outcome(self, rules: &ErrorRules) -> Result<Box<RawValue>, ProviderError> {
        if let Some(err) = self.error {
            return Err(rules.error(err.code, &err.message));
        }
        self.result
            .map(RawValue::to_owned)
            .ok_or_else(|| ProviderError::Malformed("response has neither result nor error".into()))
    }
}

/// Reads one frame, a single message or a batch, handing each message to `each` in order.
/// Nothing is handed on when the frame does not parse.
pub fn each_message<'a>(
    text: &'a str,
    mut each: impl FnMut(Incoming<'a>),
) -> Result<(), ProviderError> {
    let trimmed = text.trim_start();
    let malformed = |e: serde_json::Error| ProviderError::Malformed(e.to_string());
    if trimmed.starts_with('[') {
        let batch: Vec<Incoming<'a>> = serde_json::from_str(trimmed).map_err(malformed)?;
        batch.into_iter().for_each(each);
    } else {
        each(serde_json::from_str(trimmed).map_err(malformed)?);
    }
    Ok(())
}

/// Parses one frame, which may be a single message or a batch.
pub fn parse_frame(text: &str) -> Result<Vec<Incoming<'_>>, ProviderError> {
    let mut messages = Vec::new();
    each_message(text, |m| messages.push(m))?;
    Ok(messages)
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
        assert!(
            it.next()
                .unwrap()
                .into_outcome(&ErrorRules::default())
                .is_ok()
        );
        assert!(matches!(
            it.next().unwrap().into_outcome(&ErrorRules::default()),
            Err(ProviderError::Rpc { code: -32601, .. })
        ));
    }

    #[test]
    fn a_null_result_is_a_result_and_a_missing_one_is_not() {
        let null = parse_frame(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap();
        let raw = null
            .into_iter()
            .next()
            .unwrap()
            .into_outcome(&ErrorRules::default())
            .unwrap();
        assert_eq!(raw.get(), "null");
        let missing = parse_frame(r#"{"jsonrpc":"2.0","id":2}"#).unwrap();
        assert!(matches!(
            missing
                .into_iter()
                .next()
                .unwrap()
                .into_outcome(&ErrorRules::default()),
            Err(ProviderError::Malformed(_))
        ));
    }

    #[test]
    fn a_notification_borrows_from_its_frame() {
        let text = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"number":"0x1"}}}"#;
        let mut seen = Vec::new();
        each_message(text, |m| {
            assert!(m.is_notification());
            let params = m.params.unwrap();
            assert!(matches!(params.subscription, Cow::Borrowed("0xab")));
            seen.push(params.result.get());
        })
        .unwrap();
        assert_eq!(seen, [r#"{"number":"0x1"}"#]);
        // An escaped id cannot be borrowed, and is still read.
        let escaped =
            r#"{"method":"eth_subscription","params":{"subscription":"0x\u0061b","result":1}}"#;
        each_message(escaped, |m| {
            assert_eq!(m.params.unwrap().subscription, "0xab");
        })
        .unwrap();
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
