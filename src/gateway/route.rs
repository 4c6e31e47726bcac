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

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::blocks::{self, Need, Reports};
use super::reply::{self, Reply};
use super::request::Call;
use super::upstream::{self, Answer};
use super::verdict::{self, Verdict};
use super::{Caller, Gateway, methods, quantity_json};
use crate::breaker::{Outcome, Permit};
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
    Unavailable(Option<Judged>),
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

/// What the calls need of the attempts, fixed for all of them.
struct Plan<'a> {
    calls: &'a [&'a Call],
    needs: &'a [Need],
    floor: &'a [u64; 3],
    write: bool,
    timeout: Duration,
    label: &'static str,
}

impl<'a> Plan<'a> {
    fn of(
        gateway: &Gateway,
        calls: &'a [&'a Call],
        needs: &'a [Need],
        floor: &'a [u64; 3],
    ) -> Self {
        Plan {
            calls,
            needs,
            floor,
            write: calls.iter().any(|c| methods::is_write(&c.method)),
            timeout: gateway.timeout_of(calls),
            label: match calls {
                [one] => methods::label(&one.method),
                _ => "batch",
            },
        }
    }
}

/// What one attempt's end means for the loop.
enum Step {
    Done(Answered),
    Stop(Failure),
    Next,
}

/// Asks providers in turn until one answers every call with a verdict that stands. Reads are
/// hedged: an attempt still unanswered after its provider's hedge delay (a few times its p99,
/// 250 ms to 2 s) is joined by one to the next provider, the first answer that stands wins,
/// so a provider that hangs costs a read that delay rather than the timeout. Writes never are.
async fn attempts(
    gateway: &Gateway,
    calls: &[&Call],
    needs: &[Need],
    floor: &[u64; 3],
) -> Result<Answered, Failure> {
    let providers = &gateway.inner.providers;
    let plan = Plan::of(gateway, calls, needs, floor);
    let order = candidates(gateway, needs, floor, plan.label);
    let first = order.first().map(|p| p.id.clone());
    let mut candidates = order.into_iter();
    let (mut fallback, mut last) = (None, None);
    let mut permits: Vec<Option<(usize, Permit)>> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut hedge_at: Option<Instant> = None;
    // The provider of the latest attempt started: the slow one, when a hedge joins it.
    let mut started: Option<&str> = None;
    let outcome = loop {
        if in_flight.is_empty() || hedge_at.is_some_and(|at| Instant::now() >= at) {
            hedge_at = None;
            if let Some((provider, permit)) = next_permit(gateway, &mut candidates, &mut last) {
                if let Some(slow) = started.filter(|_| !in_flight.is_empty()) {
                    gateway.retried(slow, "hedged");
                }
                started = Some(&provider.id);
                let attempt = permits.len();
                permits.push(Some((usize::from(provider.index), permit)));
                if !plan.write {
                    hedge_at = Some(Instant::now() + providers.hedge_after(provider.index));
                }
                let plan = &plan;
                in_flight.push(async move {
                    let started = Instant::now();
                    let result =
                        upstream::send(provider, plan.label, plan.calls, plan.timeout).await;
                    (attempt, provider, started.elapsed(), result)
                });
            } else if in_flight.is_empty() {
                break fallback.ok_or(Failure::Unavailable(last));
            }
        }
        let sleep_until = hedge_at.unwrap_or_else(Instant::now);
        let (attempt, provider, elapsed, result) = tokio::select! {
            Some(done) = in_flight.next() => done,
            _ = tokio::time::sleep_until(sleep_until.into()), if hedge_at.is_some() => continue,
            else => continue,
        };
        let Some((index, permit)) = permits.get_mut(attempt).and_then(Option::take) else {
            continue;
        };
        match judge(
            gateway, &plan, provider, index, permit, elapsed, result, &mut last,
        ) {
            Step::Done(answered) => {
                gateway.failover(first.as_deref(), &answered.provider);
                break Ok(answered);
            }
            Step::Stop(failure) => break Err(failure),
            Step::Next => {
                fallback = take_fallback(fallback, &mut last);
                // The next provider at once, hedging or not.
                hedge_at = Some(Instant::now());
            }
        }
    };
    drop(in_flight);
    // Attempts still in flight were cancelled: they say nothing of their providers.
    for (index, permit) in permits.into_iter().flatten() {
        providers
            .health()
            .record(index, permit, Outcome::Neutral, None);
    }
    outcome
}

/// Keeps the latest answer passed over (left in `last` by [`judge`]) as the fallback.
fn take_fallback(fallback: Option<Answered>, last: &mut Option<Judged>) -> Option<Answered> {
    match last.take() {
        Some(Judged::Answered(answered)) => Some(answered),
        Some(Judged::Error(error)) => {
            *last = Some(Judged::Error(error));
            fallback
        }
        None => fallback,
    }
}

/// The last thing an attempt left: an answer passed over, or an error.
enum Judged {
    Answered(Answered),
    Error(ProviderError),
}

/// Records one attempt's end on its provider and decides what it means.
#[allow(clippy::too_many_arguments)]
fn judge(
    gateway: &Gateway,
    plan: &Plan<'_>,
    provider: &ChainProvider,
    index: usize,
    permit: Permit,
    elapsed: Duration,
    result: Result<Vec<Answer>, ProviderError>,
    last: &mut Option<Judged>,
) -> Step {
    let health = gateway.inner.providers.health();
    match result {
        Err(error) => {
            health.record(index, permit, Outcome::of_error(&error), Some(elapsed));
            if plan.write && !never_sent(&error) {
                return Step::Stop(Failure::MaybeSent {
                    provider: provider.id.clone(),
                    error,
                });
            }
            gateway.retried(&provider.id, error_reason(&error));
            *last = Some(Judged::Error(error));
            Step::Next
        }
        Ok(answers) => {
            gateway.inner.latency.record(index, plan.label, elapsed);
            let head = health.head(index);
            let rules = provider.http.error_rules();
            let verdicts: Vec<Verdict> = answers
                .iter()
                .zip(plan.needs)
                .map(|(answer, need)| verdict::of(answer, need, head, plan.floor, rules))
                .collect();
            health.record(index, permit, verdict::outcome(&verdicts), Some(elapsed));
            for kind in verdicts.iter().filter_map(|v| v.error_kind()) {
                provider.http.errors().count(kind);
            }
            let answered = Answered {
                provider: provider.id.clone(),
                answers,
                verdicts,
            };
            match answered.verdicts.iter().find(|v| v.retries()) {
                Some(v) if !plan.write => {
                    gateway.retried(&provider.id, v.reason());
                    *last = Some(Judged::Answered(answered));
                    Step::Next
                }
                _ => Step::Done(answered),
            }
        }
    }
}

/// The next candidate whose breaker grants a permit; a refusal is remembered as the reason if
/// nothing better comes.
fn next_permit<'a>(
    gateway: &Gateway,
    candidates: &mut impl Iterator<Item = &'a ChainProvider>,
    last: &mut Option<Judged>,
) -> Option<(&'a ChainProvider, Permit)> {
    let health = gateway.inner.providers.health();
    for provider in candidates.by_ref() {
        match health.acquire(usize::from(provider.index)) {
            Ok(permit) => return Some((provider, permit)),
            Err(retry_in) => {
                last.get_or_insert(Judged::Error(ProviderError::Transport(format!(
                    "breaker open or cooling down; retry in {} ms",
                    retry_in.as_millis()
                ))));
            }
        }
    }
    None
}

/// The providers in the order to ask them: the ranking's, those known to have reached what the
/// calls need first (the others are asked only when those fail).
fn candidates<'a>(
    gateway: &'a Gateway,
    needs: &[Need],
    floor: &[u64; 3],
    label: &'static str,
) -> Vec<&'a ChainProvider> {
    let providers = &gateway.inner.providers;
    let ranked = providers.ranked_by(|i| gateway.inner.latency.get(i, label));
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
                Some(Judged::Error(error)) => {
                    format!("no provider of chain {chain} could answer; the last said: {error}")
                }
                Some(Judged::Answered(_)) | None => {
                    format!("chain {chain} has no provider to ask")
                }
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
