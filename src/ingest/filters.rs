//! What a chain subscribes to: the log filters of its configured subscriptions, and the dynamic
//! ones the gateway's `eth_subscribe` callers add while they listen (their wire shape is
//! [`LogFilter`]'s, in `provider`).
//!
//! The set is shared by the chain's listeners (which follow it with upstream subscriptions)
//! and its range sync (which reads it for every range it asks for). A dynamic filter is held
//! by [`Lease`]s, one per caller: callers asking for the same filter share it, and the last
//! lease dropped takes it out of the set.

use std::sync::{Arc, Mutex, PoisonError};

use alloy_rpc_types_eth::Filter;
use tokio::sync::watch;

use crate::config::{LogSubscription, Subscription};
pub use crate::provider::LogFilter;
use crate::telemetry::metrics as m;

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

/// A `logs` subscription's filter (alloy's, as callers send it) in the chain's terms, in one
/// canonical form (addresses and topics sorted, trailing wildcards dropped) so that the same
/// filter asked twice is one filter.
pub fn from_request(filter: &Filter) -> LogFilter {
    let mut address: Vec<_> = filter.address.iter().copied().collect();
    address.sort_unstable();
    let mut topics: Vec<Option<Vec<_>>> = filter
        .topics
        .iter()
        .map(|set| {
            let mut list: Vec<_> = set.iter().copied().collect();
            list.sort_unstable();
            (!list.is_empty()).then_some(list)
        })
        .collect();
    while topics.last().is_some_and(Option::is_none) {
        topics.pop();
    }
    LogFilter { address, topics }
}

/// The chain's filter set; cheap to clone.
#[derive(Clone)]
pub struct ChainFilters {
    inner: Arc<Inner>,
}

struct Inner {
    chain: String,
    configured: Vec<LogFilter>,
    /// At most this many dynamic filters at once.
    max_dynamic: usize,
    state: Mutex<State>,
    /// The current set (configured first), for the listeners to follow.
    current: watch::Sender<Arc<[LogFilter]>>,
}

#[derive(Default)]
struct State {
    /// Each dynamic filter and how many leases hold it.
    dynamic: Vec<(LogFilter, usize)>,
    /// The highest block the range sync has asked for so far: every block above it will be
    /// asked with the set current at that time.
    asked_to: Option<u64>,
}

/// Why a dynamic filter was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the chain already follows {0} dynamic log filters, its limit")]
pub struct TooMany(pub usize);

/// One caller's hold on a dynamic filter: the filter leaves the set when the last is dropped.
pub struct Lease {
    filters: ChainFilters,
    filter: LogFilter,
    /// The first block whose every matching log the chain stores (the range sync asks for
    /// every block from here on with the filter).
    pub start: u64,
}

impl ChainFilters {
    pub fn new(chain: &str, configured: Vec<LogFilter>, max_dynamic: usize) -> ChainFilters {
        let (current, _) = watch::channel(Arc::from(configured.clone()));
        metrics::gauge!(m::DYNAMIC_FILTERS, "chain" => chain.to_owned()).set(0.0);
        ChainFilters {
            inner: Arc::new(Inner {
                chain: chain.to_owned(),
                configured,
                max_dynamic,
                state: Mutex::new(State::default()),
                current,
            }),
        }
    }

    /// The filters followed now: the configured ones, then the dynamic ones.
    pub fn current(&self) -> Arc<[LogFilter]> {
        self.inner.current.borrow().clone()
    }

    /// Follows the set: the listeners subscribe upstream to what is added, unsubscribe what
    /// goes.
    pub fn watch(&self) -> watch::Receiver<Arc<[LogFilter]>> {
        self.inner.current.subscribe()
    }

    /// The set to ask a range ending at `to` with, recording that blocks up to `to` have been
    /// asked for (what a lease taken later counts from).
    pub fn for_range(&self, to: u64) -> Arc<[LogFilter]> {
        let mut state = self.lock();
        state.asked_to = Some(state.asked_to.map_or(to, |at| at.max(to)));
        // Read under the lock: a filter added after this read starts above `to`.
        self.current()
    }

    /// How many dynamic filters the chain follows now.
    pub fn dynamic(&self) -> usize {
        self.lock().dynamic.len()
    }

    /// Holds `filter` in the set until the lease is dropped: added if new (unless the chain is
    /// at its limit), shared if another caller holds it already.
    pub fn lease(&self, filter: LogFilter) -> Result<Lease, TooMany> {
        let mut state = self.lock();
        match state.dynamic.iter().position(|(f, _)| *f == filter) {
            Some(at) => state.dynamic[at].1 += 1,
            None if state.dynamic.len() >= self.inner.max_dynamic => {
                return Err(TooMany(self.inner.max_dynamic));
            }
            None => {
                state.dynamic.push((filter.clone(), 1));
                self.publish(&state);
            }
        }
        let start = state.asked_to.map_or(0, |at| at + 1);
        Ok(Lease {
            filters: self.clone(),
            filter,
            start,
        })
    }

    fn release(&self, filter: &LogFilter) {
        let mut state = self.lock();
        let Some(at) = state.dynamic.iter().position(|(f, _)| f == filter) else {
            return;
        };
        state.dynamic[at].1 -= 1;
        if state.dynamic[at].1 == 0 {
            state.dynamic.remove(at);
            self.publish(&state);
        }
    }

    /// Makes the set current: the configured filters, then each dynamic one not among them.
    fn publish(&self, state: &State) {
        let mut set = self.inner.configured.clone();
        for (filter, _) in &state.dynamic {
            if !set.contains(filter) {
                set.push(filter.clone());
            }
        }
        self.inner.current.send_replace(Arc::from(set));
        metrics::gauge!(m::DYNAMIC_FILTERS, "chain" => self.inner.chain.clone())
            .set(state.dynamic.len() as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ChainFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainFilters")
            .field("current", &self.current())
            .finish()
    }
}

impl Lease {
    pub fn filter(&self) -> &LogFilter {
        &self.filter
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.filters.release(&self.filter);
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, B256};

    use super::*;

    fn by_address(byte: u8) -> LogFilter {
        LogFilter {
            address: vec![Address::repeat_byte(byte)],
            topics: vec![],
        }
    }

    #[test]
    fn leases_share_a_filter_and_the_last_one_removes_it() {
        let filters = ChainFilters::new("test", vec![by_address(1)], 8);
        let mut watch = filters.watch();
        let a = filters.lease(by_address(2)).expect("room");
        assert!(watch.has_changed().expect("open"));
        assert_eq!(
            &watch.borrow_and_update()[..],
            &[by_address(1), by_address(2)]
        );
        let b = filters.lease(by_address(2)).expect("room");
        assert!(
            !watch.has_changed().expect("open"),
            "shared, not added twice"
        );
        assert_eq!(filters.dynamic(), 1);
        drop(a);
        assert_eq!(filters.current().len(), 2, "still held by b");
        drop(b);
        assert_eq!(&*filters.current(), &[by_address(1)]);
        assert_eq!(filters.dynamic(), 0);
    }

    #[test]
    fn a_lease_starts_above_every_block_asked_without_it() {
        let filters = ChainFilters::new("test", vec![], 8);
        assert_eq!(filters.lease(by_address(1)).expect("room").start, 0);
        assert!(filters.for_range(120).is_empty());
        filters.for_range(90); // a range asked again after a rewind
        let lease = filters.lease(by_address(2)).expect("room");
        assert_eq!(lease.start, 121);
        assert_eq!(&*filters.for_range(130), &[by_address(2)]);
    }

    #[test]
    fn the_limit_counts_distinct_filters() {
        let filters = ChainFilters::new("test", vec![], 1);
        let _a = filters.lease(by_address(1)).expect("room");
        let _again = filters.lease(by_address(1)).expect("shared: no new filter");
        assert_eq!(filters.lease(by_address(2)).err(), Some(TooMany(1)));
    }

    #[test]
    fn a_configured_filter_asked_again_is_not_doubled() {
        let filters = ChainFilters::new("test", vec![by_address(1)], 8);
        let _lease = filters.lease(by_address(1)).expect("room");
        assert_eq!(&*filters.current(), &[by_address(1)]);
    }

    #[test]
    fn request_filters_take_one_canonical_form() {
        let (a, b) = (Address::repeat_byte(2), Address::repeat_byte(1));
        let topic = B256::repeat_byte(9);
        let one = Filter::new().address(vec![a, b]).event_signature(topic);
        let two = Filter::new().address(vec![b, a]).event_signature(topic);
        assert_eq!(from_request(&one), from_request(&two));
        assert_eq!(
            from_request(&one),
            LogFilter {
                address: vec![b, a],
                topics: vec![Some(vec![topic])],
            }
        );
        let wildcard_first = Filter::new().topic1(topic);
        assert_eq!(
            from_request(&wildcard_first).topics,
            vec![None, Some(vec![topic])]
        );
    }
}
