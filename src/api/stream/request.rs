//! What a `/v1/stream` subscriber asks for: `since` and the `/v1/events` filters, from the
//! query string or a first `subscribe` message.

use serde_json::Value;

use super::super::ApiError;
use super::super::events::parse_query;
use crate::domain::{Cursor, EventFilter};

/// What a subscriber asked for.
pub(super) struct Request {
    pub filter: EventFilter,
    pub since: Option<Cursor>,
    /// Several messages per frame (a JSON array) when more than one is ready.
    pub batch: bool,
}

/// Splits `since` and `batch` off and reads the rest as `/v1/events` filters.
pub(super) fn parse_request(raw: &str) -> Result<Request, ApiError> {
    let mut since = None;
    let mut batch = false;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "since" => {
                since = Some(
                    value
                        .parse::<Cursor>()
                        .ok()
                        .filter(|c| *c >= 0)
                        .ok_or_else(|| {
                            ApiError::bad_request("since", "not a non-negative integer")
                        })?,
                );
            }
            "batch" => {
                batch = match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad_request("batch", "expected true or false")),
                };
            }
            "limit" | "order" | "after" => {
                return Err(ApiError::bad_request(
                    key.as_ref(),
                    "not a stream parameter",
                ));
            }
            _ => {
                rest.append_pair(&key, &value);
            }
        }
    }
    // `include_removed` is accepted and has no effect: retractions are always streamed.
    let q = parse_query(&rest.finish())?;
    Ok(Request {
        filter: q.filter,
        since,
        batch,
    })
}

/// A `subscribe` message: the same parameters as the query string, as JSON values (a list
/// for a repeatable one), under the same rules.
pub(super) fn parse_subscribe(text: &str) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request("message", format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("message", "expected a JSON object"))?;
    if object.get("type").and_then(Value::as_str) != Some("subscribe") {
        return Err(ApiError::bad_request("type", "expected \"subscribe\""));
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in object {
        if key == "type" {
            continue;
        }
        let values: Vec<&Value> = match value {
            // No value at all would filter on nothing, i.e. match everything: refused like an
            // empty `address=` in a URL.
            Value::Array(list) if list.is_empty() => {
                return Err(ApiError::bad_request(
                    key.as_str(),
                    "is an empty list: give at least one value or leave the field out",
                ));
            }
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(
                        key.as_str(),
                        "expected a string, number or boolean",
                    ));
                }
            };
            query.append_pair(key, &text);
        }
    }
    parse_request(&query.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Finality;

    #[test]
    fn requests_parse_from_urls_and_subscribe_messages() {
        let r = parse_request("since=42&chain=devnet&kind=log").unwrap();
        assert_eq!(r.since, Some(42));
        assert_eq!(r.filter.chain.as_deref(), Some("devnet"));
        assert!(!r.batch);
        assert!(parse_request("batch=true").unwrap().batch);
        assert!(
            parse_subscribe(r#"{"type":"subscribe","batch":true}"#)
                .unwrap()
                .batch
        );
        let m = parse_subscribe(r#"{"type":"subscribe","since":7,"address":["0x00000000000000000000000000000000000000aa"],"finality":"finalized"}"#).unwrap();
        assert_eq!(m.since, Some(7));
        assert_eq!(m.filter.addresses.len(), 1);
        assert_eq!(m.filter.finality, Some(Finality::Finalized));
        for (bad, field) in [
            ("since=-1", "since"),
            ("limit=5", "limit"),
            ("kind=tx", "kind"),
            ("batch=yes", "batch"),
        ] {
            match parse_request(bad) {
                Err(ApiError::BadRequest { field: f, .. }) => assert_eq!(f, field),
                _ => panic!("{bad} should be refused"),
            }
        }
        for (bad, field) in [
            ("nope", "message"),
            ("[]", "message"),
            (r#"{"type":"unsubscribe"}"#, "type"),
            (r#"{"type":"subscribe","chain":{"x":1}}"#, "chain"),
            // An empty list would select nothing, so it selects everything: refused like
            // `address=` in a URL.
            (r#"{"type":"subscribe","address":[]}"#, "address"),
            (r#"{"type":"subscribe","topic1":[]}"#, "topic1"),
            (r#"{"type":"subscribe","topic0":""}"#, "topic0"),
        ] {
            match parse_subscribe(bad) {
                Err(ApiError::BadRequest { field: f, .. }) => assert_eq!(f, field),
                _ => panic!("{bad} should be refused"),
            }
        }
    }
}
