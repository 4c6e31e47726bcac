//! What one provider's answer to one call means for the caller: keep it, or ask another
//! provider (and whether the provider is to blame).
//!
//! An error object is the caller's (passed through unchanged, nobody blamed) unless it says
//! the provider is limited, behind or failing: a rate limit, a range refusal, a block or state
//! it does not have, or an internal fault. What may be asked elsewhere is asked elsewhere; when
//! no provider does better, the last answer is passed through as the provider gave it.

use std::time::Duration;

use serde_json::value::RawValue;

use super::blocks::{self, Need};
use super::upstream::Answer;
use crate::breaker::Outcome;
use crate::config::ErrorClass;
use crate::provider::ErrorRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer stands (a result, or the caller's own error).
    Keep,
    /// The provider lacks the block or state asked for: another may have it.
    Missing,
    /// The answer is older than the caller has already seen (a tag answered by a provider
    /// behind).
    Behind,
    /// The provider refused the size of the request.
    Range,
    /// The provider asked to slow down.
    RateLimited(Option<Duration>),
    /// The provider failed (an internal error, an overload).
    Fault,
}

impl Verdict {
    /// Whether another provider should be asked.
    pub fn retries(self) -> bool {
        self != Verdict::Keep
    }

    /// The kind of provider error this counts as ([`crate::provider::ERROR_KINDS`]), if any.
    pub fn error_kind(self) -> Option<&'static str> {
        match self {
            Verdict::Keep => None,
            Verdict::Missing | Verdict::Behind => Some("missing"),
            Verdict::Range => Some("range"),
            Verdict::RateLimited(_) => Some("rate_limited"),
            Verdict::Fault => Some("fault"),
        }
    }

    /// The `reason` label of a retry.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Keep => "none",
            Verdict::Missing => "missing",
            Verdict::Behind => "behind",
            Verdict::Range => "range",
            Verdict::RateLimited(_) => "rate_limited",
            Verdict::Fault => "fault",
        }
    }
}

/// The verdict on `answer` to a call needing `need`, from a provider whose head is `head` and
/// whose error objects `rules` classify, for a caller who has seen `floor` (per tag).
pub fn of(
    answer: &Answer,
    need: &Need,
    head: Option<u64>,
    floor: &[u64; 3],
    rules: &ErrorRules,
) -> Verdict {
    match answer {
        Answer::Result(result) => of_result(result, need, head, floor),
        Answer::Error { code, message, .. } => of_error(rules.class(*code, message)),
    }
}

fn of_result(result: &RawValue, need: &Need, head: Option<u64>, floor: &[u64; 3]) -> Verdict {
    if let (Some(reports), Some(tag)) = (need.reports, need.tag)
        && let Some(height) = blocks::reported(reports, result)
        && height < floor[tag.slot()]
    {
        return Verdict::Behind;
    }
    // `null` for a height the provider is known not to have reached: not believed.
    if let (Some(number), Some(head)) = (need.number, head)
        && head < number
        && result.get() == "null"
    {
        return Verdict::Missing;
    }
    Verdict::Keep
}

/// An error object's verdict, by the class ingestion gives it too (`error_rules`, then the
/// built-in table): the caller's errors stand; the rest ask another provider.
fn of_error(class: ErrorClass) -> Verdict {
    match class {
        ErrorClass::Caller => Verdict::Keep,
        ErrorClass::Missing => Verdict::Missing,
        ErrorClass::Range => Verdict::Range,
        ErrorClass::RateLimit => Verdict::RateLimited(None),
        ErrorClass::Fault => Verdict::Fault,
    }
}

/// What a whole answer says of its provider (its breaker's record): at fault if any call
/// failed at its fault, slowed down if any was rate limited, else a success.
pub fn outcome(verdicts: &[Verdict]) -> Outcome {
    if verdicts.contains(&Verdict::Fault) {
        return Outcome::Failure;
    }
    verdicts
        .iter()
        .find_map(|v| match v {
            Verdict::RateLimited(retry_after) => Some(Outcome::RateLimited {
                retry_after: *retry_after,
            }),
            _ => None,
        })
        .unwrap_or(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_errors_stand_and_the_providers_move_on() {
        let rules = ErrorRules::default();
        let cases: &[(i64, &str, Verdict)] = &[
            (3, "execution reverted", Verdict::Keep),
            (-32000, "execution reverted", Verdict::Keep),
            (-32000, "nonce too low", Verdict::Keep),
            (-32603, "err: nonce has max value", Verdict::Keep),
            (-32000, "header not found", Verdict::Missing),
            (-32603, "internal error", Verdict::Fault),
            (
                -32005,
                "query returned more than 10000 results",
                Verdict::Range,
            ),
            (429, "Too Many Requests", Verdict::RateLimited(None)),
        ];
        for (code, message, want) in cases {
            assert_eq!(
                of_error(rules.class(*code, message)),
                *want,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn heights_below_what_the_caller_saw_are_behind() {
        let need = blocks::need(&super::super::request::Call {
            id: None,
            method: "eth_blockNumber".into(),
            params: None,
        });
        let answer = |s: &str| Answer::Result(RawValue::from_string(s.into()).expect("raw"));
        let floor = [10, 0, 0];
        let rules = ErrorRules::default();
        assert_eq!(
            of(&answer("\"0x9\""), &need, None, &floor, &rules),
            Verdict::Behind
        );
        assert_eq!(
            of(&answer("\"0xa\""), &need, None, &floor, &rules),
            Verdict::Keep
        );
        let at_20 = Need {
            number: Some(20),
            ..Need::default()
        };
        assert_eq!(
            of(&answer("null"), &at_20, Some(19), &floor, &rules),
            Verdict::Missing
        );
        assert_eq!(
            of(&answer("null"), &at_20, Some(20), &floor, &rules),
            Verdict::Keep
        );
        assert_eq!(
            of(&answer("null"), &at_20, None, &floor, &rules),
            Verdict::Keep
        );
    }
}
