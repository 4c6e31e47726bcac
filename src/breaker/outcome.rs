//! [`Outcome`]: what one request's result says about its provider, decided by the error's own
//! classification ([`ProviderError::is_fault`]), never by its message.

use std::time::Duration;

use crate::provider::ProviderError;

/// How a request ended, as far as its provider's breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered.
    Success,
    /// The provider is at fault (transport, timeout, 5xx, server-side JSON-RPC error, garbage).
    Failure,
    /// The provider asked us to slow down: a cool-down, never a failure.
    RateLimited { retry_after: Option<Duration> },
    /// The request's own fault (bad params, reverted call, range too large): says nothing about
    /// the provider, so it changes nothing but frees the permit's probe slot.
    Neutral,
}

impl Outcome {
    /// The outcome of a provider call's result.
    pub fn of<T>(result: &Result<T, ProviderError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => Outcome::of_error(error),
        }
    }

    /// The outcome of a failed provider call.
    pub fn of_error(error: &ProviderError) -> Outcome {
        match error {
            ProviderError::RateLimited { retry_after } => Outcome::RateLimited {
                retry_after: *retry_after,
            },
            error if error.is_fault() => Outcome::Failure,
            _ => Outcome::Neutral,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_error_kind_maps_to_its_outcome() {
        let secs = Duration::from_secs;
        let cases: Vec<(ProviderError, Outcome)> = vec![
            (ProviderError::Transport("reset".into()), Outcome::Failure),
            (ProviderError::Timeout(secs(5)), Outcome::Failure),
            (
                ProviderError::Malformed("not json".into()),
                Outcome::Failure,
            ),
            (ProviderError::Closed, Outcome::Failure),
            (ProviderError::Http(500), Outcome::Failure),
            (ProviderError::Http(503), Outcome::Failure),
            (ProviderError::Http(404), Outcome::Neutral),
            (ProviderError::Http(401), Outcome::Neutral),
            (
                ProviderError::RateLimited {
                    retry_after: Some(secs(3)),
                },
                Outcome::RateLimited {
                    retry_after: Some(secs(3)),
                },
            ),
            (
                ProviderError::RateLimited { retry_after: None },
                Outcome::RateLimited { retry_after: None },
            ),
            (
                ProviderError::from_rpc(-32005, "limit exceeded"),
                Outcome::RateLimited { retry_after: None },
            ),
            (
                ProviderError::RangeTooLarge {
                    message: "query returned more than 10000 results".into(),
                },
                Outcome::Neutral,
            ),
            (
                ProviderError::from_rpc(-32603, "internal error"),
                Outcome::Failure,
            ),
            // Behind or pruned: lag is judged by heads, not held against the breaker.
            (
                ProviderError::from_rpc(-32000, "header not found"),
                Outcome::Neutral,
            ),
            (
                ProviderError::from_rpc(-32010, "something broke"),
                Outcome::Failure,
            ),
            (
                ProviderError::from_rpc(-32602, "invalid params"),
                Outcome::Neutral,
            ),
            (
                ProviderError::from_rpc(3, "execution reverted"),
                Outcome::Neutral,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(Outcome::of_error(&error), want, "{error:?}");
            assert_eq!(Outcome::of::<()>(&Err(error.clone())), want, "{error:?}");
        }
    }

    #[test]
    fn ok_is_success_whatever_the_value() {
        assert_eq!(Outcome::of::<u64>(&Ok(7)), Outcome::Success);
        assert_eq!(Outcome::of(&Ok::<_, ProviderError>(())), Outcome::Success);
    }
}
