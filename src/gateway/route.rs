//! Which provider answers a caller's calls, and what happens when one does not.
//!
//! The calls go together to one provider at a time (so a block and its logs asked in one batch
//! come from the same node), in the health ranking's order, those known to have reached the
//! height the calls need (or the caller's `latest`) first. A transport error, a timeout, a 5xx,
//! a malformed answer, or an answer judged behind, limited or failing passes the calls to the
//! next provider; when none does better, the last answer stands as its provider gave it.
//!
//! Writes (`methods::is_write`, and any batch holding one) are sent once: to the next provider
//! only when the first cannot have received them (its breaker refused, connecting failed, it
//! answered 429). After that, a lost answer is the caller's to resolve (`eth_getTransactionByHash`
//! tells whether the transaction arrived); resending blindly could send it twice.

use std::time::Instant;

use super::blocks::{self, Need, Reports};
use super::reply::{self, Reply};
use super::request::Call;
use super::upstream::{self, Answer};
use super::verdict::{self, Verdict};
use super::{Caller, Gateway, methods, quantity_json};
use crate::breaker::Outcome;
use crate::ingest::providers::ChainProvider;
use crate::provider::ProviderError;
use crate::telemetry::metrics as m;

/// The replies to a group of calls, in their order, and who gave them.
pub struct Served {
    pub replies: Vec<Reply>,
    pub provider: Option<String>,
}

/// One provider's answers and the verdict on each.
struct Answered {
    provider: String,
    answers: Vec<Answer>,
    verdicts: Vec<Verdict>,
}

enum Failure {
    /// A write reached (or may have reached) `provider`, whose answer was lost.
    MaybeSent {
        provider: String,
        error: ProviderError,
    },
    /// No provider answered; the last reason, if any was tried.
    Unavailable(Option<ProviderError>),
}

/// What the calls need, who to ask, and the replies.
pub async fn serve(gateway: &Gateway, calls: &[&Call], caller: Caller) -> Served {
    let needs: Vec<Need> = calls.iter().map(|c| blocks::need(c)).collect();
    let floor = gateway.inner.floors.get(caller);
    match attempts(gateway, calls, &needs, &floor).await {
        Ok(answered) => finish(gateway, calls, &needs, caller, &floor, answered),
        Err(failure) => failed(gateway, calls, failure),
    }
}

/// Asks providers in turn until one answers every call with a verdict that stands.
async fn attempts(
    gateway: &Gateway,
    calls: &[&Call],
    needs: &[Need],
    floor: &[u64; 3],
) -> Result<Answered, Failure> {
    let inner = &gateway.inner;
    let health = inner.providers.health();
    let write = calls.iter().any(|c| methods::is_write(&c.method));
    let timeout = gateway.timeout_of(calls);
    let label = match calls {
        [one] => methods::label(&one.method),
        _ => "batch",
    };
    let order = candidates(gateway, needs, floor);
    let first = order.first().map(|p| p.id.clone());
    let mut fallback: Option<Answered> = None;
    let mut last = None;
    for provider in order {
        let index = usize::from(provider.index);
        let permit = match health.acquire(index) {
            Ok(permit) => permit,
            Err(retry_in) => {
                last.get_or_insert(ProviderError::Transport(format!(
                    "breaker open or cooling down; retry in {} ms",
                    retry_in.as_millis()
                )));
                continue;
            }
        };
        let started = Instant::now();
        let result = upstream::send(provider, label, calls, timeout).await;
        let elapsed = Some(started.elapsed());
        match result {
            Err(error) => {
                health.record(index, permit, Outcome::of_error(&error), elapsed);
                if write && !never_sent(&error) {
                    return Err(Failure::MaybeSent {
                        provider: provider.id.clone(),
                        error,
                    });
                }
                gateway.retried(&provider.id, error_reason(&error));
                last = Some(error);
            }
            Ok(answers) => {
                let head = health.head(index);
                let verdicts: Vec<Verdict> = answers
                    .iter()
                    .zip(needs)
                    .map(|(answer, need)| {
                        verdict::of(answer, need, head, floor, provider.http.error_rules())
                    })
                    .collect();
                health.record(index, permit, verdict::outcome(&verdicts), elapsed);
                let answered = Answered {
                    provider: provider.id.clone(),
                    answers,
                    verdicts,
                };
                match answered.verdicts.iter().find(|v| v.retries()) {
                    Some(v) if !write => {
                        gateway.retried(&provider.id, v.reason());
                        fallback = Some(answered);
                    }
                    _ => {
                        gateway.failover(first.as_deref(), &answered.provider);
                        return Ok(answered);
                    }
                }
            }
        }
    }
    fallback.ok_or(Failure::Unavailable(last))
}

/// The providers in the order to ask them: the ranking's, those known to have reached what the
/// calls need first (the others are asked only when those fail).
fn candidates<'a>(
    gateway: &'a Gateway,
    needs: &[Need],
    floor: &[u64; 3],
) -> Vec<&'a ChainProvider> {
    let providers = &gateway.inner.providers;
    let ranked = providers.ranked();
    let number = needs.iter().filter_map(|n| n.number).max();
    let latest = needs
        .iter()
        .any(|n| n.tag == Some(blocks::Tag::Latest))
        .then_some(floor[blocks::Tag::Latest.slot()]);
    let Some(needed) = number.max(latest).filter(|&h| h > 0) else {
        return ranked;
    };
    let health = providers.health();
    let (mut ready, behind): (Vec<_>, Vec<_>) = ranked.into_iter().partition(|p| {
        health
            .head(usize::from(p.index))
            .is_some_and(|h| h >= needed)
    });
    ready.extend(behind);
    ready
}

/// Whether `error` proves the request never reached the provider.
fn never_sent(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Connect(_) | ProviderError::RateLimited { .. } | ProviderError::Http(429)
    )
}

fn error_reason(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Timeout(_) => "timeout",
        ProviderError::Malformed(_) => "malformed",
        ProviderError::Http(_) => "http_status",
        _ => "transport",
    }
}

/// The replies of an answer that stands; floors raised by what the caller is told.
fn finish(
    gateway: &Gateway,
    calls: &[&Call],
    needs: &[Need],
    caller: Caller,
    floor: &[u64; 3],
    answered: Answered,
) -> Served {
    let mut replies = Vec::with_capacity(calls.len());
    for (((call, need), answer), verdict) in calls
        .iter()
        .zip(needs)
        .zip(answered.answers)
        .zip(answered.verdicts)
    {
        let id = call.id.clone();
        let (reply, outcome) = match answer {
            // Every provider is behind what this caller saw: tell it what it saw, not less.
            Answer::Result(_)
                if verdict == Verdict::Behind && need.reports == Some(Reports::Quantity) =>
            {
                let floor = need.tag.map_or(0, |t| floor[t.slot()]);
                match quantity_json(floor) {
                    Some(raw) => (Reply::result(id, raw), "ok"),
                    None => (
                        Reply::error(id, reply::INTERNAL_ERROR, "cannot encode a height", None),
                        "provider_error",
                    ),
                }
            }
            Answer::Result(result) => {
                if let (Some(reports), Some(tag)) = (need.reports, need.tag)
                    && let Some(height) = blocks::reported(reports, &result)
                {
                    gateway.inner.floors.raise(caller, tag, height);
                }
                let outcome = if verdict.retries() {
                    "provider_error"
                } else {
                    "ok"
                };
                (Reply::result(id, result), outcome)
            }
            Answer::Error { raw, .. } => {
                let outcome = if verdict.retries() {
                    "provider_error"
                } else {
                    "caller_error"
                };
                (Reply::provider_error(id, raw), outcome)
            }
        };
        gateway.count(methods::label(&call.method), &answered.provider, outcome);
        replies.push(reply);
    }
    Served {
        replies,
        provider: Some(answered.provider),
    }
}

/// The replies when no answer came: every call gets the same error.
fn failed(gateway: &Gateway, calls: &[&Call], failure: Failure) -> Served {
    let chain = &gateway.inner.chain;
    let (message, data, outcome) = match &failure {
        Failure::MaybeSent { provider, error } => (
            format!(
                "the request was sent to provider {provider} of chain {chain}, whose answer was lost ({error}); \
                 a write is not sent twice: check whether it arrived (eth_getTransactionByHash) before sending it again"
            ),
            serde_json::json!({ "provider": provider, "retried": false }),
            "maybe_sent",
        ),
        Failure::Unavailable(last) => (
            match last {
                Some(error) => {
                    format!("no provider of chain {chain} could answer; the last said: {error}")
                }
                None => format!("chain {chain} has no provider to ask"),
            },
            serde_json::json!({ "chain": chain }),
            "unavailable",
        ),
    };
    let replies = calls
        .iter()
        .map(|call| {
            gateway.count(methods::label(&call.method), "none", outcome);
            Reply::error(call.id.clone(), reply::UNAVAILABLE, &message, Some(&data))
        })
        .collect();
    Served {
        replies,
        provider: None,
    }
}

impl Gateway {
    /// Counts a call passed on to the next provider, and why.
    fn retried(&self, provider: &str, reason: &'static str) {
        metrics::counter!(m::GATEWAY_RETRIES, "chain" => self.inner.chain.clone(), "provider" => provider.to_owned(), "reason" => reason)
            .increment(1);
    }

    /// Counts an answer from another provider than the first asked.
    fn failover(&self, first: Option<&str>, served: &str) {
        if let Some(first) = first.filter(|f| *f != served) {
            metrics::counter!(m::GATEWAY_FAILOVERS, "chain" => self.inner.chain.clone(), "from" => first.to_owned(), "provider" => served.to_owned())
                .increment(1);
        }
    }
}
