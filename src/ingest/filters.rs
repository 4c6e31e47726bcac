//! What a chain subscribes to: the log filters of its subscriptions (their wire shape is
//! [`LogFilter`]'s, in `provider`).

use crate::config::{LogSubscription, Subscription};
pub use crate::provider::LogFilter;

fn from_config(sub: &LogSubscription) -> LogFilter {
    LogFilter {
        address: sub.address.clone(),
        topics: sub.topics.clone(),
    }
}

/// The log filters of a chain's subscriptions and the lowest `from_block` any of them names.
pub fn log_filters(subscriptions: &[Subscription]) -> (Vec<LogFilter>, Option<u64>) {
    let mut filters = Vec::new();
    let mut from_block: Option<u64> = None;
    for sub in subscriptions {
        if let Subscription::Logs(logs) = sub {
            filters.push(from_config(logs));
            if let Some(n) = logs.from_block {
                from_block = Some(from_block.map_or(n, |m| m.min(n)));
            }
        }
    }
    // Two identical filters would fetch every log twice.
    filters.dedup();
    (filters, from_block)
}
