//! The JSON-RPC methods Livechain calls, typed: a [`Request`] is built from alloy's types (a
//! block number or tag, a [`LogFilter`] and a range) and its answer is read back into domain
//! values by the `read_*` functions here, so no other module spells a method name or a
//! parameter list. The raw `call` of each client stays for calls passed through unread.

use std::ops::RangeInclusive;

use alloy_primitives::U64;
use alloy_rpc_types_eth::BlockNumberOrTag;
use serde::Serialize;
use serde_json::value::RawValue;

use super::ProviderError;
use super::decode::{self, Head};
use super::filter::LogFilter;
use super::jsonrpc;

/// The methods Livechain calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    BlockNumber,
    ChainId,
    BlockByNumber,
    GetLogs,
    Subscribe,
    Unsubscribe,
}

impl Method {
    /// The method's name on the wire (also the `method` label of the request metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::BlockNumber => "eth_blockNumber",
            Method::ChainId => "eth_chainId",
            Method::BlockByNumber => "eth_getBlockByNumber",
            Method::GetLogs => "eth_getLogs",
            Method::Subscribe => "eth_subscribe",
            Method::Unsubscribe => "eth_unsubscribe",
        }
    }
}

/// The block tags that say how far a chain is settled, in the order they are read with a range.
pub const FINALITY_TAGS: [BlockNumberOrTag; 2] =
    [BlockNumberOrTag::Safe, BlockNumberOrTag::Finalized];

/// One call: its method and its parameters, already JSON.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    params: Box<RawValue>,
}

impl Request {
    fn new(method: Method, params: &impl Serialize) -> Result<Request, ProviderError> {
        Ok(Request {
            method,
            params: jsonrpc::params(params)?,
        })
    }

    /// `eth_blockNumber`: the node's head (read with [`read_block_number`]).
    pub fn block_number() -> Result<Request, ProviderError> {
        Request::new(Method::BlockNumber, &[(); 0])
    }

    /// `eth_chainId` (read with [`read_chain_id`]).
    pub fn chain_id() -> Result<Request, ProviderError> {
        Request::new(Method::ChainId, &[(); 0])
    }

    /// `eth_getBlockByNumber` at a height or a tag, transaction hashes only (read with
    /// [`read_block`]).
    pub fn block(at: impl Into<BlockNumberOrTag>) -> Result<Request, ProviderError> {
        Request::new(Method::BlockByNumber, &(at.into(), false))
    }

    /// One [`Request::block`] per height of `range`, lowest first (read with [`read_blocks`]).
    pub fn blocks(range: RangeInclusive<u64>) -> Result<Vec<Request>, ProviderError> {
        range.map(Request::block).collect()
    }

    /// `eth_getLogs` of `filter` over `from..=to` (read with [`read_logs`]).
    pub fn logs(filter: &LogFilter, from: u64, to: u64) -> Result<Request, ProviderError> {
        Request::new(Method::GetLogs, &[filter.range_wire(from, to)])
    }

    /// `eth_subscribe` to new heads.
    pub(super) fn subscribe_heads() -> Result<Request, ProviderError> {
        Request::new(Method::Subscribe, &["newHeads"])
    }

    /// `eth_subscribe` to the logs `filter` matches.
    pub(super) fn subscribe_logs(filter: &LogFilter) -> Result<Request, ProviderError> {
        Request::new(Method::Subscribe, &("logs", filter.wire()))
    }

    /// `eth_unsubscribe` of the subscription `id`.
    pub(super) fn unsubscribe(id: &str) -> Result<Request, ProviderError> {
        Request::new(Method::Unsubscribe, &[id])
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn params(&self) -> &RawValue {
        &self.params
    }

    pub(super) fn into_parts(self) -> (Method, Box<RawValue>) {
        (self.method, self.params)
    }
}

/// The answer to [`Request::block_number`].
pub fn read_block_number(raw: &RawValue) -> Result<u64, ProviderError> {
    let n: U64 = jsonrpc::decode(raw, "eth_blockNumber result")?;
    Ok(n.to::<u64>())
}

/// The answer to [`Request::chain_id`].
pub fn read_chain_id(raw: &RawValue) -> Result<u64, ProviderError> {
    let id: U64 = jsonrpc::decode(raw, "eth_chainId result")?;
    Ok(id.to::<u64>())
}

/// The answer to [`Request::block`]: `None` when the node has no such block (yet).
pub fn read_block(raw: &RawValue) -> Result<Option<Head>, ProviderError> {
    if raw.get() == "null" {
        return Ok(None);
    }
    decode::head(raw).map(Some)
}

/// The answer to [`Request::logs`], each log still raw: it is read lazily, its identity first
/// (see [`decode::log_key`]).
pub fn read_logs(raw: &RawValue) -> Result<Vec<Box<RawValue>>, ProviderError> {
    jsonrpc::decode(raw, "eth_getLogs result")
}

/// Why the answers to [`Request::blocks`] are not those blocks.
#[derive(Debug, thiserror::Error)]
pub enum BlocksError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The node has no block at this height (yet): it is behind.
    #[error("provider has no block {0} yet")]
    Missing(u64),
    /// The node answered with another block than the one asked for.
    #[error("asked for block {asked}, got {got}")]
    Wrong { asked: u64, got: u64 },
}

/// Takes the answers to [`Request::blocks`]`(from..=to)` off `answers`, in order, and checks
/// that each is the block at its height. The first failed answer, missing block or wrong
/// block fails them all.
pub fn read_blocks(
    from: u64,
    to: u64,
    answers: &mut impl Iterator<Item = Result<Box<RawValue>, ProviderError>>,
) -> Result<Vec<Head>, BlocksError> {
    let mut heads =
        Vec::with_capacity(usize::try_from(to.saturating_sub(from)).map_or(0, |n| n + 1));
    for n in from..=to {
        let raw = answers
            .next()
            .ok_or(ProviderError::Malformed("short batch".into()))??;
        let head = read_block(&raw)?.ok_or(BlocksError::Missing(n))?;
        if head.block.number != n {
            return Err(BlocksError::Wrong {
                asked: n,
                got: head.block.number,
            });
        }
        heads.push(head);
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn raw(text: &str) -> Result<Box<RawValue>, ProviderError> {
        RawValue::from_string(text.to_owned()).map_err(|e| ProviderError::Malformed(e.to_string()))
    }

    fn head(n: u64) -> String {
        format!(
            r#"{{"number":"{n:#x}","hash":"0x{:064x}","parentHash":"0x{:064x}","timestamp":"0x1"}}"#,
            n + 1,
            n
        )
    }

    fn params(request: &Request) -> Value {
        serde_json::from_str(request.params().get()).expect("params are JSON")
    }

    #[test]
    fn requests_are_the_methods_and_params_nodes_take() {
        let block = Request::block(26).expect("request");
        assert_eq!(block.method().as_str(), "eth_getBlockByNumber");
        assert_eq!(params(&block), json!(["0x1a", false]));
        let safe = Request::block(FINALITY_TAGS[0]).expect("request");
        assert_eq!(params(&safe), json!(["safe", false]));
        let number = Request::block_number().expect("request");
        assert_eq!(
            (number.method().as_str(), params(&number)),
            ("eth_blockNumber", json!([]))
        );
        assert_eq!(
            Request::chain_id().expect("request").method().as_str(),
            "eth_chainId"
        );
        let filter = LogFilter {
            address: vec![],
            topics: vec![None],
        };
        let logs = Request::logs(&filter, 0, 255).expect("request");
        assert_eq!(logs.method().as_str(), "eth_getLogs");
        assert_eq!(
            params(&logs),
            json!([{"fromBlock": "0x0", "toBlock": "0xff", "topics": [null]}])
        );
        let sub = Request::subscribe_logs(&filter).expect("request");
        assert_eq!(params(&sub), json!(["logs", {"topics": [null]}]));
        assert_eq!(
            params(&Request::subscribe_heads().expect("request")),
            json!(["newHeads"])
        );
        let blocks = Request::blocks(3..=5).expect("requests");
        assert_eq!(
            blocks.iter().map(params).collect::<Vec<_>>()[2],
            json!(["0x5", false])
        );
    }

    #[test]
    fn blocks_are_read_in_order_and_checked() {
        let answers = || (7..=9).map(|n| raw(&head(n)));
        let heads = read_blocks(7, 9, &mut answers()).expect("three blocks");
        assert_eq!(
            heads.iter().map(|h| h.block.number).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        let mut rest = answers().chain([raw("\"after\"")]);
        read_blocks(7, 9, &mut rest).expect("three blocks");
        assert!(rest.next().is_some(), "only the blocks' answers are taken");

        let null = [raw(&head(7)), raw("null")];
        assert!(matches!(
            read_blocks(7, 8, &mut null.into_iter()),
            Err(BlocksError::Missing(8))
        ));
        let wrong = [raw(&head(7)), raw(&head(9))];
        assert!(matches!(
            read_blocks(7, 8, &mut wrong.into_iter()),
            Err(BlocksError::Wrong { asked: 8, got: 9 })
        ));
        let short = [raw(&head(7))];
        assert!(matches!(
            read_blocks(7, 8, &mut short.into_iter()),
            Err(BlocksError::Provider(ProviderError::Malformed(_)))
        ));
        let failed = [raw(&head(7)), Err(ProviderError::Http(502))];
        assert!(matches!(
            read_blocks(7, 8, &mut failed.into_iter()),
            Err(BlocksError::Provider(ProviderError::Http(502)))
        ));
    }

    #[test]
    fn answers_are_read_into_values() {
        let raw = |text: &str| raw(text).expect("raw");
        assert_eq!(read_block_number(&raw("\"0x10\"")).ok(), Some(16));
        assert_eq!(read_chain_id(&raw("\"0x7a69\"")).ok(), Some(31337));
        assert!(
            read_block_number(&raw("\"latest\"")).is_err(),
            "not a quantity"
        );
        assert_eq!(read_block(&raw("null")).ok(), Some(None));
        assert_eq!(
            read_block(&raw(&head(2)))
                .ok()
                .flatten()
                .map(|h| h.block.number),
            Some(2)
        );
        assert_eq!(read_logs(&raw("[{}, 1]")).map(|l| l.len()).ok(), Some(2));
        assert!(read_logs(&raw("null")).is_err());
    }
}
