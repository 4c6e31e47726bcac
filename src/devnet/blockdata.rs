//! One generated block as served: the alloy values, and their JSON rendered once on first use
//! and shared by every provider, connection and subscription.

use std::sync::OnceLock;

use alloy_primitives::B256;
use alloy_rpc_types_eth::{Block, BlockTransactions, Header, Log};

/// One generated block: the alloy values and, computed once on first use, their JSON.
#[derive(Debug)]
pub(crate) struct BlockData {
    /// Which version of its height this is (see `super::schedule`).
    pub branch: u32,
    pub header: Header,
    pub tx_hashes: Vec<B256>,
    pub logs: Vec<Log>,
    json: OnceLock<BlockJson>,
}

/// The serialized forms every consumer needs, made once per block and shared by all providers,
/// connections and subscriptions (a notification is then a prefix, these bytes and `}}`).
#[derive(Debug)]
pub(crate) struct BlockJson {
    /// The `newHeads` payload: the header without transactions.
    pub header: Box<str>,
    /// The `eth_getBlockByNumber`/`ByHash` result: header, `uncles`, `transactions` (hashes).
    pub block: Box<str>,
    /// One entry per log, in log order.
    pub logs: Vec<Box<str>>,
}

impl BlockData {
    pub(crate) fn new(branch: u32, header: Header, tx_hashes: Vec<B256>, logs: Vec<Log>) -> Self {
        Self {
            branch,
            header,
            tx_hashes,
            logs,
            json: OnceLock::new(),
        }
    }

    pub(crate) fn number(&self) -> u64 {
        self.header.inner.number
    }

    pub(crate) fn hash(&self) -> B256 {
        self.header.hash
    }

    /// The block as `alloy_rpc_types_eth::Block` with transaction hashes.
    pub(crate) fn to_block(&self) -> Block {
        Block {
            header: self.header.clone(),
            uncles: Vec::new(),
            transactions: BlockTransactions::Hashes(self.tx_hashes.clone()),
            withdrawals: None,
        }
    }

    /// Log `i`'s JSON: the shared rendering if the block has one, else rendered alone (a
    /// selective `eth_getLogs` over old blocks should not render every log it skips).
    pub(crate) fn log_json(&self, i: usize) -> std::borrow::Cow<'_, str> {
        match self.json.get() {
            Some(json) => json.logs.get(i).map_or("null".into(), |s| (&**s).into()),
            None => self
                .logs
                .get(i)
                .map_or("null".into(), |l| String::from(to_json(l)).into()),
        }
    }

    /// Log `i` with `removed: true`: what a geth-like node sends once a reorg orphaned it.
    pub(crate) fn removed_log_json(&self, i: usize) -> String {
        // alloy always writes `removed`, once per log (data and topics are hex, never quoted
        // keys), so one textual swap is exact.
        self.log_json(i)
            .replacen(r#""removed":false"#, r#""removed":true"#, 1)
    }

    /// The block's JSON, serialized on first use.
    pub(crate) fn json(&self) -> &BlockJson {
        self.json.get_or_init(|| BlockJson {
            header: to_json(&self.header),
            block: to_json(&self.to_block()),
            logs: self.logs.iter().map(to_json).collect(),
        })
    }
}

/// Serializes a value whose `Serialize` cannot fail (alloy types: no maps with non-string keys,
/// no fallible custom impls). Should that ever change, the result is JSON `null` plus an error
/// log, never a panic.
fn to_json<T: serde::Serialize>(value: &T) -> Box<str> {
    match serde_json::to_string(value) {
        Ok(json) => json.into_boxed_str(),
        Err(err) => {
            tracing::error!(error = %err, "devnet: cannot serialize a generated value");
            "null".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::block::{ChainSpec, Version};

    #[test]
    fn json_round_trips_through_alloy_types() {
        let block = ChainSpec::new(1, 31337, 5).generate(&Version::plain(9, 0, 0, 5));
        let json = block.json();
        let header: Header = serde_json::from_str(&json.header).unwrap();
        assert_eq!(header, block.header);
        let full: Block = serde_json::from_str(&json.block).unwrap();
        assert_eq!(
            full.transactions.hashes().collect::<Vec<_>>(),
            block.tx_hashes
        );
        for (text, log) in json.logs.iter().zip(&block.logs) {
            assert_eq!(&serde_json::from_str::<Log>(text).unwrap(), log);
        }
    }

    #[test]
    fn removed_logs_differ_only_in_the_flag() {
        let block = ChainSpec::new(1, 31337, 3).generate(&Version::plain(4, 0, 0, 3));
        for (i, log) in block.logs.iter().enumerate() {
            let removed: Log = serde_json::from_str(&block.removed_log_json(i)).unwrap();
            assert!(removed.removed);
            assert_eq!(
                Log {
                    removed: false,
                    ..removed
                },
                *log
            );
        }
    }
}
