//! Sending a caller's calls to one provider and reading its answers back, matched by id.
//!
//! The calls are renumbered `0..n` upstream (the caller's ids may clash with each other or be
//! anything JSON allows); each answer is put back in its call's place by that number, never by
//! position. Results and error objects are kept as the provider sent them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::request::Call;
use crate::ingest::providers::ChainProvider;
use crate::provider::{ErrorRules, ProviderError};

/// One call's answer from a provider.
#[derive(Debug, Clone)]
pub enum Answer {
    Result(Box<RawValue>),
    Error {
        raw: Box<RawValue>,
        code: i64,
        message: String,
    },
}

#[derive(Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    id: usize,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// Most single calls sent at once to a provider that refuses batches.
const UNBATCHED_CONCURRENCY: usize = 8;

/// Sends `calls` to `provider` (one object for one call, a batch otherwise) within `timeout`;
/// one answer per call in their order. A provider that refuses batches gets them one by one.
pub async fn send(
    provider: &ChainProvider,
    label: &str,
    calls: &[&Call],
    timeout: Duration,
) -> Result<Vec<Answer>, ProviderError> {
    if calls.len() == 1 || !provider.batches.load(Ordering::Relaxed) {
        return one_by_one(provider, label, calls, timeout).await;
    }
    let body = serde_json::to_string(&calls.iter().enumerate().map(outgoing).collect::<Vec<_>>())
        .map_err(|e| ProviderError::Malformed(format!("cannot encode the batch: {e}")))?;
    let text = provider.http.forward("batch", body, timeout).await?;
    match read_from(provider, &text, calls.len()) {
        Err(err) if refuses_batch(&text) => {
            tracing::warn!(provider = %provider.id, error = %err, "provider refuses JSON-RPC batches; the gateway sends its calls one by one");
            provider.batches.store(false, Ordering::Relaxed);
            one_by_one(provider, label, calls, timeout).await
        }
        answer => answer,
    }
}

async fn one_by_one(
    provider: &ChainProvider,
    label: &str,
    calls: &[&Call],
    timeout: Duration,
) -> Result<Vec<Answer>, ProviderError> {
    let mut answers = Vec::with_capacity(calls.len());
    for chunk in calls.chunks(UNBATCHED_CONCURRENCY) {
        let pending = chunk.iter().map(|call| async move {
            let body = serde_json::to_string(&outgoing((0, call)))
                .map_err(|e| ProviderError::Malformed(format!("cannot encode the call: {e}")))?;
            let label = if calls.len() == 1 { label } else { "batch" };
            let text = provider.http.forward(label, body, timeout).await?;
            let mut one = read_from(provider, &text, 1)?;
            one.pop()
                .ok_or_else(|| ProviderError::Malformed("no answer".into()))
        });
        for answer in futures_util::future::join_all(pending).await {
            answers.push(answer?);
        }
    }
    Ok(answers)
}

fn outgoing<'a>((id, call): (usize, &&'a Call)) -> Outgoing<'a> {
    Outgoing {
        jsonrpc: "2.0",
        id,
        method: &call.method,
        params: call.params.as_deref(),
    }
}

/// [`read`] with `provider`'s rules, an answer that does not read counted against it.
fn read_from(provider: &ChainProvider, text: &str, n: usize) -> Result<Vec<Answer>, ProviderError> {
    let answers = read(text, n, provider.http.error_rules());
    if let Err(error) = &answers {
        provider.http.errors().record(error);
    }
    answers
}

/// The answers of a response to `n` calls numbered `0..n`, in that order.
fn read(text: &str, n: usize, rules: &ErrorRules) -> Result<Vec<Answer>, ProviderError> {
    let malformed = |e: serde_json::Error| ProviderError::Malformed(e.to_string());
    let trimmed = text.trim_start();
    let frames: Vec<Incoming> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(malformed)?
    } else {
        vec![serde_json::from_str(trimmed).map_err(malformed)?]
    };
    let mut out: Vec<Option<Answer>> = (0..n).map(|_| None).collect();
    for frame in frames {
        let slot = frame
            .id
            .as_deref()
            .and_then(|id| id.get().parse::<usize>().ok())
            .filter(|&i| i < n);
        let Some(slot) = slot else {
            if let (true, Some(error)) = (n > 1, frame.error) {
                return Err(whole_batch_error(&error, rules));
            }
            continue;
        };
        out[slot] = Some(answer(frame)?);
    }
    out.into_iter()
        .map(|a| {
            a.ok_or_else(|| ProviderError::Malformed("an answer is missing its call's id".into()))
        })
        .collect()
}

fn answer(frame: Incoming) -> Result<Answer, ProviderError> {
    match (frame.error, frame.result) {
        (Some(raw), _) => {
            let fields: ErrorFields = serde_json::from_str(raw.get()).map_err(|e| {
                ProviderError::Malformed(format!("an error object that does not parse: {e}"))
            })?;
            Ok(Answer::Error {
                raw,
                code: fields.code,
                message: fields.message,
            })
        }
        (None, Some(result)) => Ok(Answer::Result(result)),
        (None, None) => Err(ProviderError::Malformed(
            "an answer with neither result nor error".into(),
        )),
    }
}

/// One error object answering a whole batch (a provider without batches, or at its limit).
fn whole_batch_error(error: &RawValue, rules: &ErrorRules) -> ProviderError {
    match serde_json::from_str::<ErrorFields>(error.get()) {
        Ok(fields) => rules.error(fields.code, &fields.message),
        Err(e) => ProviderError::Malformed(e.to_string()),
    }
}

/// Whether a response to a batch is a refusal of batches as such: one error object.
fn refuses_batch(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with('{')
        && serde_json::from_str::<Incoming>(trimmed).is_ok_and(|f| f.error.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_by_id_not_position() {
        let text = r#"[{"jsonrpc":"2.0","id":2,"result":"c"},
            {"jsonrpc":"2.0","id":0,"error":{"code":3,"message":"execution reverted","data":"0x"}},
            {"jsonrpc":"2.0","id":1,"result":null}]"#;
        let answers = read(text, 3, &ErrorRules::default()).expect("answers");
        assert!(matches!(&answers[0], Answer::Error { code: 3, raw, .. }
            if raw.get() == r#"{"code":3,"message":"execution reverted","data":"0x"}"#));
        assert!(matches!(&answers[1], Answer::Result(r) if r.get() == "null"));
        assert!(matches!(&answers[2], Answer::Result(r) if r.get() == r#""c""#));
    }

    #[test]
    fn a_short_or_broken_answer_is_the_providers_fault() {
        let missing = r#"[{"jsonrpc":"2.0","id":0,"result":"a"}]"#;
        assert!(matches!(
            read(missing, 2, &ErrorRules::default()),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            read("<html>", 1, &ErrorRules::default()),
            Err(ProviderError::Malformed(_))
        ));
        let neither = r#"{"jsonrpc":"2.0","id":0}"#;
        assert!(matches!(
            read(neither, 1, &ErrorRules::default()),
            Err(ProviderError::Malformed(_))
        ));
        let whole = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batches not supported"}}"#;
        assert!(read(whole, 2, &ErrorRules::default()).is_err());
        assert!(refuses_batch(whole));
    }
}
