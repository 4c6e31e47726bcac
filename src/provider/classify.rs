//! What a provider's JSON-RPC error object means: the configured `error_rules` first, then the
//! built-in table. One classification serves ingestion (breakers, retries, range splits) and
//! the gateway (pass the error back, or ask another provider).

use std::sync::Arc;

use super::ProviderError;
use crate::config::{ErrorClass, ErrorRule};

/// The configured rules; cheap to clone. Empty: the built-in table alone.
#[derive(Debug, Clone, Default)]
pub struct ErrorRules {
    rules: Arc<[ErrorRule]>,
}

impl ErrorRules {
    /// `rules` as configured (messages already in lower case).
    pub fn new(rules: &[ErrorRule]) -> ErrorRules {
        ErrorRules {
            rules: rules.into(),
        }
    }

    /// The class of an error object: the first rule that matches, else the built-in table.
    pub fn class(&self, code: i64, message: &str) -> ErrorClass {
        let lower = message.to_lowercase();
        self.rules
            .iter()
            .find(|rule| {
                rule.code.is_none_or(|c| c == code)
                    && rule.message.as_deref().is_none_or(|m| lower.contains(m))
            })
            .map_or_else(|| builtin(code, &lower), |rule| rule.class)
    }

    /// The error object as a [`ProviderError`] of its class.
    pub fn error(&self, code: i64, message: &str) -> ProviderError {
        error_of(self.class(code, message), code, message)
    }
}

pub(super) fn error_of(class: ErrorClass, code: i64, message: &str) -> ProviderError {
    match class {
        ErrorClass::RateLimit => ProviderError::RateLimited { retry_after: None },
        ErrorClass::Range => ProviderError::RangeTooLarge {
            message: message.to_owned(),
        },
        ErrorClass::Fault | ErrorClass::Missing | ErrorClass::Caller => ProviderError::Rpc {
            code,
            message: message.to_owned(),
            class,
        },
    }
}

/// Range and result-size refusals (told from rate limits by message: providers reuse -32005).
const RANGE_HINTS: &[&str] = &[
    "range",
    "more than",
    "too many results",
    "response size",
    "result size",
    "query returned",
    "too large",
];
const RATE_HINTS: &[&str] = &["rate limit", "too many requests", "capacity", "throttl"];
/// The provider does not have the block or state (yet, or any more).
const MISSING_HINTS: &[&str] = &[
    "header not found",
    "unknown block",
    "block not found",
    "missing trie node",
    "historical state",
];
/// The request's own fault, whatever code carries it (nodes put many under -32000).
const CALLER_HINTS: &[&str] = &[
    "execution reverted",
    "revert",
    "invalid argument",
    "invalid params",
    "nonce too low",
    "nonce too high",
    "nonce has max value",
    "insufficient funds",
    "already known",
    "underpriced",
    "intrinsic gas too low",
    "gas required exceeds",
    "exceeds block gas limit",
    "max fee per gas",
    "out of gas",
    "invalid sender",
    "does not exist/is not available",
];
/// The provider failing, whatever the code.
const FAULT_HINTS: &[&str] = &[
    "internal error",
    "internal server error",
    "timeout",
    "timed out",
    "overloaded",
    "service unavailable",
    "temporarily unavailable",
    "try again later",
    "upstream",
    "bad gateway",
];

/// The built-in table, on the message in lower case: hints first, then the code (-32603 and
/// the implementation-defined server range blame the server; the rest, the request).
fn builtin(code: i64, lower: &str) -> ErrorClass {
    let has = |hints: &[&str]| hints.iter().any(|h| lower.contains(h));
    if has(RANGE_HINTS) && !lower.contains("rate") {
        ErrorClass::Range
    } else if matches!(code, -32005 | -32029 | -32090 | 429) || has(RATE_HINTS) {
        ErrorClass::RateLimit
    } else if has(MISSING_HINTS) {
        ErrorClass::Missing
    } else if has(CALLER_HINTS) {
        ErrorClass::Caller
    } else if has(FAULT_HINTS) || code == -32603 || (-32099..=-32000).contains(&code) {
        ErrorClass::Fault
    } else {
        ErrorClass::Caller
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table() {
        use ErrorClass::*;
        let cases: &[(i64, &str, ErrorClass)] = &[
            (-32005, "query returned more than 10000 results", Range),
            (-32005, "query exceeds max block range 100", Range),
            (-32602, "block range is too wide", Range),
            (-32000, "Log response size exceeded", Range),
            (-32005, "limit exceeded", RateLimit),
            (-32016, "rate limit reached, slow down", RateLimit),
            (429, "Too Many Requests", RateLimit),
            (
                -32602,
                "invalid argument 0: hex string without 0x prefix",
                Caller,
            ),
            (3, "execution reverted", Caller),
            (-32000, "execution reverted", Caller),
            (-32000, "nonce too low", Caller),
            (-32015, "out of gas", Caller),
            (
                -38014,
                "err: insufficient funds for gas * price + value",
                Caller,
            ),
            (-32603, "err: nonce has max value", Caller),
            (
                -32601,
                "the method foo does not exist/is not available",
                Caller,
            ),
            (-32000, "header not found", Missing),
            (-32000, "missing trie node abc (path )", Missing),
            (-32603, "internal error", Fault),
            (-32000, "request timed out", Fault),
            (-32010, "something broke", Fault),
            (-38026, "too many blocks", Caller),
        ];
        let rules = ErrorRules::default();
        for (code, message, want) in cases {
            assert_eq!(rules.class(*code, message), *want, "{code} {message}");
        }
    }

    #[test]
    fn configured_rules_come_first_and_match_code_message_or_both() {
        let rules = ErrorRules::new(&[
            ErrorRule {
                code: Some(-32000),
                message: Some("header not found".into()),
                class: ErrorClass::Fault,
            },
            ErrorRule {
                code: Some(-39001),
                message: None,
                class: ErrorClass::RateLimit,
            },
            ErrorRule {
                code: None,
                message: Some("please retry".into()),
                class: ErrorClass::Missing,
            },
        ]);
        assert_eq!(rules.class(-32000, "Header not found"), ErrorClass::Fault);
        assert_eq!(
            rules.class(-32001, "header not found"),
            ErrorClass::Missing,
            "the code must match too"
        );
        assert_eq!(rules.class(-39001, "anything"), ErrorClass::RateLimit);
        assert_eq!(rules.class(7, "Please RETRY"), ErrorClass::Missing);
        assert!(matches!(
            rules.error(-39001, "x"),
            ProviderError::RateLimited { .. }
        ));
        assert!(!rules.error(-32001, "header not found").is_fault());
        assert!(rules.error(-32000, "header not found").is_fault());
    }
}
