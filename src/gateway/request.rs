//! What a caller sent to `/rpc/{chain}`: one JSON-RPC request or a batch. Ids and params stay
//! raw JSON: they go upstream and back exactly as they came.

use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::value::RawValue;

use super::reply::{self, Reply};

/// One request of the caller's.
#[derive(Debug, Clone)]
pub struct Call {
    /// The caller's id as sent (`None`: a notification, which gets no answer).
    pub id: Option<Box<RawValue>>,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// One entry of what the caller sent: a call, or the error a node answers in its place.
#[derive(Debug)]
pub enum Entry {
    Call(Call),
    Invalid(Reply),
}

/// A whole body: a single request (answered with one object) or a batch (with an array).
#[derive(Debug)]
pub enum Body {
    Single(Entry),
    Batch(Vec<Entry>),
}

/// A request object as nodes read it; anything else in it is ignored.
#[derive(Deserialize)]
struct Wire {
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<Box<RawValue>>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

/// `Some` even for `"id": null` (a call whose id is null); absent is a notification.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Reads a body. A body that is not JSON, an empty batch or one longer than `max_batch` is
/// refused as a whole, with the error a node gives; an entry that is not a request object is
/// answered in its place by `invalid request`.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Body, Reply> {
    let text = std::str::from_utf8(body).map_err(|_| reply::parse_error("body is not UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Box<RawValue>> =
            serde_json::from_str(trimmed).map_err(|e| reply::parse_error(&e.to_string()))?;
        if items.is_empty() {
            return Err(reply::invalid_request(None, "empty batch"));
        }
        if items.len() > max_batch {
            return Err(reply::invalid_request(
                None,
                &format!(
                    "batch too large: {} requests, the limit is {max_batch} (gateway.max_batch)",
                    items.len()
                ),
            ));
        }
        Ok(Body::Batch(items.iter().map(|item| entry(item)).collect()))
    } else {
        let item: Box<RawValue> =
            serde_json::from_str(trimmed).map_err(|e| reply::parse_error(&e.to_string()))?;
        Ok(Body::Single(entry(&item)))
    }
}

/// One request object, checked as a node checks it: `"jsonrpc": "2.0"`, a string `method`,
/// `params` an array or object when present, `id` a string, number or null when present.
fn entry(item: &RawValue) -> Entry {
    let Ok(wire) = serde_json::from_str::<Wire>(item.get()) else {
        return Entry::Invalid(reply::invalid_request(None, "invalid request"));
    };
    let id = wire.id;
    let invalid = |why: &str| Entry::Invalid(reply::invalid_request(id.clone(), why));
    if let Some(raw) = &id {
        let first = raw.get().as_bytes().first().copied().unwrap_or(b'n');
        if matches!(first, b'{' | b'[' | b't' | b'f') {
            return invalid("invalid request: id must be a string, a number or null");
        }
    }
    if wire.jsonrpc.as_deref().map(RawValue::get) != Some("\"2.0\"") {
        return invalid("invalid request: \"jsonrpc\" must be \"2.0\"");
    }
    let method = match wire
        .method
        .as_deref()
        .map(|m| serde_json::from_str::<String>(m.get()))
    {
        Some(Ok(method)) if !method.is_empty() => method,
        _ => return invalid("invalid request: \"method\" must be a non-empty string"),
    };
    if let Some(params) = &wire.params {
        let first = params.get().as_bytes().first().copied();
        if !matches!(first, Some(b'[' | b'{')) && params.get() != "null" {
            return invalid("invalid request: \"params\" must be an array or an object");
        }
    }
    Entry::Call(Call {
        id,
        method,
        params: wire.params.filter(|p| p.get() != "null"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Entry {
        match parse(text.as_bytes(), 10) {
            Ok(Body::Single(entry)) => entry,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn error_of(reply: &Reply) -> (i64, String) {
        let v: serde_json::Value = serde_json::from_str(&reply.to_json()).expect("json");
        (
            v["error"]["code"].as_i64().unwrap_or_default(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    #[test]
    fn ids_are_kept_exactly() {
        for id in [
            "1",
            "\"abc\"",
            "null",
            "1.5e3",
            "-7",
            "\"\"",
            "18446744073709551616",
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_chainId"}}"#);
            match single(&text) {
                Entry::Call(call) => assert_eq!(call.id.as_deref().map(RawValue::get), Some(id)),
                Entry::Invalid(r) => panic!("{id}: {r:?}"),
            }
        }
        match single(r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#) {
            Entry::Call(call) => assert!(call.id.is_none(), "a notification"),
            Entry::Invalid(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn what_a_node_refuses_is_refused_with_its_code() {
        let cases: &[(&str, i64)] = &[
            ("{", -32700),
            ("", -32700),
            ("[]", -32600),
            ("[1,2,3,4,5,6,7,8,9,10,11]", -32600),
        ];
        for (text, code) in cases {
            match parse(text.as_bytes(), 10) {
                Err(reply) => assert_eq!(error_of(&reply).0, *code, "{text}"),
                Ok(body) => panic!("{text}: {body:?}"),
            }
        }
        let entries = [
            r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#,
            r#"{"id":1,"method":"eth_chainId"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":""}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"eth_chainId"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":3}"#,
            r#"7"#,
        ];
        for text in entries {
            match single(text) {
                Entry::Invalid(reply) => assert_eq!(error_of(&reply).0, -32600, "{text}"),
                Entry::Call(call) => panic!("{text}: {call:?}"),
            }
        }
    }

    #[test]
    fn a_batch_keeps_its_entries_in_order() {
        let text = r#"[{"jsonrpc":"2.0","id":"a","method":"eth_blockNumber"}, 5,
            {"jsonrpc":"2.0","id":2,"method":"eth_getBalance","params":["0x00","latest"]}]"#;
        let Ok(Body::Batch(entries)) = parse(text.as_bytes(), 10) else {
            panic!("not a batch");
        };
        assert_eq!(entries.len(), 3);
        assert!(matches!(&entries[0], Entry::Call(c) if c.method == "eth_blockNumber"));
        assert!(matches!(&entries[1], Entry::Invalid(_)));
        assert!(matches!(&entries[2], Entry::Call(c)
            if c.params.as_deref().map(RawValue::get) == Some(r#"["0x00","latest"]"#)));
    }
}
