//! The subscriptions of one WebSocket connection and the notifications they turn a block into.
//!
//! Owned by the connection's task, so subscribe, unsubscribe and delivery are ordered with no
//! lock: once `eth_unsubscribe` is answered, not one more notification of it is sent.
//! Notifications are spliced from text: a per-subscription prefix rendered once, the block's
//! shared JSON, and `}}` — one allocation and three copies per message, no serialization.

use std::sync::Arc;

use alloy_rpc_types_eth::Filter;

use super::block::BlockData;
use super::rpc_error::RpcError;
use super::state::Shared;

/// Where a request arrived: subscriptions need a connection to push to.
pub(crate) enum Session<'a> {
    Http,
    Ws(&'a mut SubTable),
}

/// Most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1_000;

/// What a subscription delivers.
#[derive(Debug)]
pub(crate) enum SubKind {
    NewHeads,
    /// Boxed: a filter is large, and the table holds many small entries.
    Logs(Box<Filter>),
}

#[derive(Debug)]
struct Subscription {
    id: String,
    /// `{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x…","result":`
    prefix: String,
    kind: SubKind,
    /// First block this subscription may see: the one after the head when it was made.
    from_block: u64,
}

/// The subscriptions of one connection. Keeps the provider's count in step: `+1` on add,
/// `-1` on remove, `-len` on drop (the connection closing, however it closes).
#[derive(Debug)]
pub(crate) struct SubTable {
    shared: Arc<Shared>,
    provider: usize,
    subs: Vec<Subscription>,
}

impl SubTable {
    pub(crate) fn new(shared: Arc<Shared>, provider: usize) -> Self {
        Self {
            shared,
            provider,
            subs: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Adds a subscription that starts at block `from_block`; returns its id.
    pub(crate) fn add(&mut self, kind: SubKind, from_block: u64) -> Result<String, RpcError> {
        if self.subs.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(RpcError::new(
                RpcError::SERVER_ERROR,
                format!(
                    "too many subscriptions on this connection (limit {MAX_SUBSCRIPTIONS_PER_CONNECTION})"
                ),
            ));
        }
        let id = self.shared.next_subscription_id(self.provider);
        let prefix = format!(
            r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"{id}","result":"#
        );
        tracing::debug!(provider = self.provider, subscription = %id, kind = kind.name(), "devnet: subscribed");
        self.subs.push(Subscription {
            id: id.clone(),
            prefix,
            kind,
            from_block,
        });
        self.shared.subscription_added(self.provider);
        Ok(id)
    }

    /// Removes a subscription; `false` if this connection has none with that id.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(at) = self.subs.iter().position(|s| s.id == id) else {
            return false;
        };
        self.subs.remove(at);
        self.shared.subscriptions_removed(self.provider, 1);
        true
    }

    /// The notifications `block` produces, in delivery order: every `newHeads` first, then
    /// each logs subscription's matching logs in log order. Lazy, so a connection with many
    /// subscriptions never holds more than the message being written.
    pub(crate) fn notifications<'a>(
        &'a self,
        block: &'a BlockData,
    ) -> impl Iterator<Item = String> + Send + 'a {
        let n = block.number();
        let json = block.json();
        let live = self.subs.iter().filter(move |s| s.from_block <= n);
        let heads = live
            .clone()
            .filter(|s| matches!(s.kind, SubKind::NewHeads))
            .map(move |s| splice(&s.prefix, &json.header));
        let logs = live
            .filter_map(|s| match &s.kind {
                SubKind::Logs(filter) => Some((&s.prefix, filter)),
                SubKind::NewHeads => None,
            })
            .flat_map(move |(prefix, filter)| {
                block
                    .logs
                    .iter()
                    .zip(json.logs.iter())
                    .filter(move |(log, _)| filter.matches(&log.inner))
                    .map(move |(_, text)| splice(prefix, text))
            });
        heads.chain(logs)
    }

    /// The id of one live subscription (the garbage fault names it in bogus notifications).
    pub(crate) fn first_id(&self) -> Option<String> {
        self.subs.first().map(|s| s.id.clone())
    }

    /// The first height any subscription may see (`None` without subscriptions).
    pub(crate) fn first_block(&self) -> Option<u64> {
        self.subs.iter().map(|s| s.from_block).min()
    }

    /// `removed: true` copies of the logs each logs subscription received from `orphaned`
    /// (blocks newest first), undoing in reverse order of delivery, as geth does.
    pub(crate) fn removed<'a>(
        &'a self,
        orphaned: &'a [Arc<BlockData>],
    ) -> impl Iterator<Item = String> + Send + 'a {
        orphaned.iter().flat_map(move |block| {
            let n = block.number();
            self.subs
                .iter()
                .filter(move |s| s.from_block <= n)
                .filter_map(|s| match &s.kind {
                    SubKind::Logs(filter) => Some((&s.prefix, filter)),
                    SubKind::NewHeads => None,
                })
                .flat_map(move |(prefix, filter)| {
                    let matching = block.logs.iter().enumerate().rev();
                    matching
                        .filter(move |(_, log)| filter.matches(&log.inner))
                        .map(move |(i, _)| splice(prefix, &block.removed_log_json(i)))
                })
        })
    }

    /// After a reorg orphaned heights `lowest..=highest`: every subscription that saw any of
    /// them sees the new branch from `lowest` on, even below where it started.
    pub(crate) fn rewind(&mut self, lowest: u64, highest: u64) {
        for sub in &mut self.subs {
            if sub.from_block <= highest {
                sub.from_block = sub.from_block.min(lowest);
            }
        }
    }
}

impl Drop for SubTable {
    fn drop(&mut self) {
        self.shared
            .subscriptions_removed(self.provider, self.subs.len());
    }
}

impl SubKind {
    fn name(&self) -> &'static str {
        match self {
            SubKind::NewHeads => "newHeads",
            SubKind::Logs(_) => "logs",
        }
    }
}

fn splice(prefix: &str, result: &str) -> String {
    let mut message = String::with_capacity(prefix.len() + result.len() + 2);
    message.push_str(prefix);
    message.push_str(result);
    message.push_str("}}");
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::block::ChainSpec;
    use crate::devnet::chain::Chain;
    use crate::devnet::state::Mode;
    use alloy_rpc_types_eth::Log;

    fn shared() -> Arc<Shared> {
        let chain = Chain::plain(ChainSpec::new(1, 31337, 20), 0);
        Arc::new(Shared::new(chain, 2, Mode::Throughput, 1))
    }

    #[test]
    fn notifications_are_standard_and_filtered() {
        let shared = shared();
        let block = shared.chain.advance().tip;
        let mut table = SubTable::new(Arc::clone(&shared), 1);
        let address = block.logs[0].address();
        let logs_filter: Filter =
            serde_json::from_value(serde_json::json!({"address": address})).unwrap();
        let logs_id = table.add(SubKind::Logs(Box::new(logs_filter)), 1).unwrap();
        let heads_id = table.add(SubKind::NewHeads, 1).unwrap();
        assert_ne!(logs_id, heads_id);
        assert_eq!(shared.providers[1].active_subscriptions(), 2);

        let out: Vec<String> = table.notifications(&block).collect();
        let expected_logs = block.logs.iter().filter(|l| l.address() == address).count();
        assert_eq!(out.len(), 1 + expected_logs);
        let first: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(first["method"], "eth_subscription");
        assert_eq!(first["params"]["subscription"], heads_id.as_str());
        assert_eq!(first["params"]["result"]["number"], "0x1");
        for (message, log) in out[1..]
            .iter()
            .zip(block.logs.iter().filter(|l| l.address() == address))
        {
            let value: serde_json::Value = serde_json::from_str(message).unwrap();
            let parsed: alloy_rpc_types_eth::Log =
                serde_json::from_value(value["params"]["result"].clone()).unwrap();
            assert_eq!(&parsed, log);
        }
    }

    #[test]
    fn from_block_and_counts_follow_the_table() {
        let shared = shared();
        let block = shared.chain.advance().tip;
        let mut table = SubTable::new(Arc::clone(&shared), 0);
        let id = table.add(SubKind::NewHeads, 2).unwrap();
        assert_eq!(
            table.notifications(&block).count(),
            0,
            "block 1 predates a subscription made at head 1"
        );
        assert!(!table.remove("0xnope"));
        assert!(table.remove(&id));
        assert_eq!(shared.total_subscriptions(), 0);
        table.add(SubKind::NewHeads, 0).unwrap();
        table.add(SubKind::NewHeads, 0).unwrap();
        assert_eq!(shared.providers[0].active_subscriptions(), 2);
        drop(table);
        assert_eq!(shared.providers[0].active_subscriptions(), 0);
        assert_eq!(shared.total_subscriptions(), 0);
    }

    #[test]
    fn removed_copies_follow_what_each_subscription_saw() {
        let shared = shared();
        let one = shared.chain.advance().tip;
        let two = shared.chain.advance().tip;
        let mut table = SubTable::new(Arc::clone(&shared), 0);
        table.add(SubKind::Logs(Box::default()), 1).unwrap();
        table.add(SubKind::Logs(Box::default()), 2).unwrap();
        table.add(SubKind::NewHeads, 1).unwrap();
        assert_eq!(table.first_block(), Some(1));
        let orphaned = [Arc::clone(&two), Arc::clone(&one)];
        let removed: Vec<Log> = table
            .removed(&orphaned)
            .map(|m| {
                let value: serde_json::Value = serde_json::from_str(&m).unwrap();
                serde_json::from_value(value["params"]["result"].clone()).unwrap()
            })
            .collect();
        // Block 2 for both logs subscriptions, then block 1 for the first only; newest first.
        assert_eq!(removed.len(), 20 * 3);
        assert!(removed.iter().all(|l| l.removed));
        assert_eq!(removed[0].block_number, Some(2));
        assert_eq!(removed[0].log_index, Some(19));
        assert_eq!(removed[59].block_number, Some(1));
        assert_eq!(removed[59].log_index, Some(0));
        table.rewind(1, 2);
        let regrown = table.notifications(&one).count();
        assert_eq!(regrown, 1 + 2 * 20, "every subscription now sees height 1");
    }
}
