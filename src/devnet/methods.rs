//! The JSON-RPC methods the devnet serves, their parameter parsing and their answers.
//!
//! Results are returned as JSON text: blocks and logs come pre-serialized from
//! [`super::block::BlockJson`], so answering is mostly copying bytes.
//!
//! `eth_getBlockByNumber`/`ByHash` return transaction *hashes* whatever the "full transactions"
//! flag says: the devnet has no transaction bodies, and every client accepts hashes there.
//!
//! Log filters are alloy's `Filter`, with its matching rules (those of Anvil and reth): a
//! topic position that is `null` or `[]` matches anything, including a missing topic. Geth
//! additionally drops logs with fewer topics than the filter lists positions.

use std::borrow::Cow;
use std::sync::Arc;

use alloy_primitives::B256;
use alloy_rpc_types_eth::{BlockNumberOrTag, Filter, FilterBlockOption};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::block::BlockData;
use super::chain::Chain;
use super::rpc_error::RpcError;
use super::schedule::Finality;
use super::state::{ProviderState, Shared};
use super::subscriptions::Session;
use super::subscriptions::SubKind;

/// Widest `eth_getLogs` range served at all, faults or not: bounds the CPU one request can use.
pub const MAX_LOGS_BLOCK_RANGE: u64 = 50_000;
/// Most logs one `eth_getLogs` answers (bounds the response size).
pub const MAX_LOGS_RESULTS: usize = 50_000;
/// Ranges wider than this are scanned on the blocking pool, off the async workers.
const INLINE_LOGS_BLOCKS: u64 = 64;

/// What a method call can see: the devnet and which provider port it came through.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub provider: usize,
}

impl Ctx {
    pub(crate) fn chain(&self) -> &Chain {
        &self.shared.chain
    }

    pub(crate) fn provider_state(&self) -> Option<&ProviderState> {
        self.shared.providers.get(self.provider)
    }

    /// The head as this provider reports it: the chain's, minus a lag fault.
    pub(crate) fn head(&self) -> u64 {
        let lag = self.provider_state().map_or(0, |p| p.faults.lag_blocks());
        self.chain().head().saturating_sub(lag)
    }

    /// Canonical block `n`, if this provider has it (a lagging one has none above its head).
    fn block(&self, n: u64) -> Option<Arc<BlockData>> {
        if n > self.head() {
            return None;
        }
        self.chain().block(n)
    }

    fn block_by_hash(&self, hash: B256) -> Option<Arc<BlockData>> {
        let block = self.chain().block_by_hash(hash)?;
        (block.number() <= self.head()).then_some(block)
    }
}

/// Calls `method`; the result is JSON text.
pub(crate) async fn call(
    ctx: &Ctx,
    session: &mut Session<'_>,
    method: &str,
    params: Vec<Value>,
) -> Result<String, RpcError> {
    let params = Params {
        method,
        items: params,
    };
    match method {
        "eth_chainId" => {
            params.at_most(0)?;
            Ok(quantity(ctx.chain().spec().chain_id()))
        }
        "net_version" => {
            params.at_most(0)?;
            Ok(format!("\"{}\"", ctx.chain().spec().chain_id()))
        }
        "web3_clientVersion" => {
            params.at_most(0)?;
            Ok(format!(
                "\"livechain-devnet/{}\"",
                env!("CARGO_PKG_VERSION")
            ))
        }
        "eth_blockNumber" => {
            params.at_most(0)?;
            Ok(quantity(ctx.head()))
        }
        "eth_getBlockByNumber" => {
            let tag: BlockNumberOrTag = params.required(0, "block number or tag")?;
            params.optional::<bool>(1, "full transactions flag")?;
            params.at_most(2)?;
            let n = resolve(tag, ctx.head(), ctx.chain().finality());
            Ok(block_json(ctx.block(n).as_deref()))
        }
        "eth_getBlockByHash" => {
            let hash: B256 = params.required(0, "block hash")?;
            params.optional::<bool>(1, "full transactions flag")?;
            params.at_most(2)?;
            Ok(block_json(ctx.block_by_hash(hash).as_deref()))
        }
        "eth_getLogs" => {
            let filter: Filter = params.required(0, "filter")?;
            params.at_most(1)?;
            get_logs(ctx, filter).await
        }
        "eth_subscribe" => {
            let Session::Ws(subs) = session else {
                return Err(not_on_http(method));
            };
            let kind = parse_subscription(&params)?;
            // A subscription sees blocks from the next one on, never one produced before it.
            subs.add(kind, ctx.head() + 1)
                .map(|id| Value::String(id).to_string())
        }
        "eth_unsubscribe" => {
            let Session::Ws(subs) = session else {
                return Err(not_on_http(method));
            };
            let id: String = params.required(0, "subscription id")?;
            params.at_most(1)?;
            Ok(subs.remove(&id).to_string())
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

fn not_on_http(method: &str) -> RpcError {
    RpcError::new(
        RpcError::METHOD_NOT_FOUND,
        format!("notifications not supported: {method} needs a WebSocket connection"),
    )
}

/// Positional parameters of one call, with errors that name the method and the parameter.
struct Params<'a> {
    method: &'a str,
    items: Vec<Value>,
}

impl Params<'_> {
    fn at_most(&self, n: usize) -> Result<(), RpcError> {
        if self.items.len() > n {
            return Err(RpcError::invalid_params(format!(
                "{} takes at most {n} parameter(s), got {}",
                self.method,
                self.items.len()
            )));
        }
        Ok(())
    }

    fn required<T: DeserializeOwned>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        self.optional(i, name)?.ok_or_else(|| {
            RpcError::invalid_params(format!("{}: missing parameter {i} ({name})", self.method))
        })
    }

    /// Parameter `i`, `None` if absent or `null`.
    fn optional<T: DeserializeOwned>(&self, i: usize, name: &str) -> Result<Option<T>, RpcError> {
        match self.items.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value).map(Some).map_err(|err| {
                RpcError::invalid_params(format!(
                    "{}: invalid parameter {i} ({name}): {err}",
                    self.method
                ))
            }),
        }
    }
}

/// `["newHeads"]` or `["logs", filter?]`.
fn parse_subscription(params: &Params<'_>) -> Result<SubKind, RpcError> {
    let kind: String = params.required(0, "subscription kind")?;
    match kind.as_str() {
        "newHeads" => {
            params.at_most(1)?;
            Ok(SubKind::NewHeads)
        }
        "logs" => {
            let filter: Option<Filter> = params.optional(1, "logs filter")?;
            params.at_most(2)?;
            Ok(SubKind::Logs(Box::new(filter.unwrap_or_default())))
        }
        other => Err(RpcError::invalid_params(format!(
            "eth_subscribe: unsupported subscription kind {other:?}; the devnet serves newHeads and logs"
        ))),
    }
}

/// A tag or number as a height, given the head and the tags' depths.
pub(crate) fn resolve(tag: BlockNumberOrTag, head: u64, finality: Finality) -> u64 {
    match tag {
        BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => head,
        BlockNumberOrTag::Safe => finality.safe_head(head),
        BlockNumberOrTag::Finalized => finality.finalized_head(head),
        BlockNumberOrTag::Earliest => 0,
        BlockNumberOrTag::Number(n) => n,
    }
}

fn quantity(n: u64) -> String {
    format!("\"0x{n:x}\"")
}

fn block_json(block: Option<&BlockData>) -> String {
    block.map_or_else(|| "null".to_owned(), |b| b.json().block.to_string())
}

async fn get_logs(ctx: &Ctx, filter: Filter) -> Result<String, RpcError> {
    let (from, to) = match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let block = ctx.block_by_hash(hash).ok_or_else(|| {
                RpcError::new(RpcError::SERVER_ERROR, format!("unknown block {hash}"))
            })?;
            let mut out = String::from("[");
            push_matching(&mut out, &mut 0, &block, &filter)?;
            out.push(']');
            return Ok(out);
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let (from_block, to_block) =
                (from_block.unwrap_or_default(), to_block.unwrap_or_default());
            // Like geth, only two explicit numbers in the wrong order are an error; a range
            // that is empty because a tag resolved low (a poller at `fromBlock = head + 1`,
            // `toBlock = latest`) is simply empty.
            if let (Some(from), Some(to)) = (from_block.as_number(), to_block.as_number())
                && from > to
            {
                return Err(RpcError::invalid_params(format!(
                    "eth_getLogs: invalid block range: fromBlock {from:#x} is after toBlock {to:#x}"
                )));
            }
            let (head, finality) = (ctx.head(), ctx.chain().finality());
            (
                resolve(from_block, head, finality),
                resolve(to_block, head, finality),
            )
        }
    };
    if from > to {
        return Ok("[]".to_owned());
    }
    let span = to - from + 1;
    let limit = ctx
        .provider_state()
        .and_then(|p| p.faults.max_logs_range())
        .map_or(MAX_LOGS_BLOCK_RANGE, |l| l.min(MAX_LOGS_BLOCK_RANGE));
    if span > limit {
        return Err(RpcError::new(
            RpcError::LIMIT_EXCEEDED,
            format!("query exceeds max block range {limit}"),
        ));
    }
    // Blocks above the head do not exist yet: the range is served up to the head.
    let to = to.min(ctx.head());
    let omits = ctx.provider_state().is_some_and(|p| p.faults.omits_logs());
    if from > to || omits {
        return Ok("[]".to_owned());
    }
    if to - from < INLINE_LOGS_BLOCKS {
        return collect_logs(ctx.chain(), &filter, from, to);
    }
    let shared = Arc::clone(&ctx.shared);
    tokio::task::spawn_blocking(move || collect_logs(&shared.chain, &filter, from, to))
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "devnet: eth_getLogs task failed");
            RpcError::new(RpcError::INTERNAL_ERROR, "internal error")
        })?
}

/// The matching logs of blocks `from..=to` as a JSON array.
fn collect_logs(chain: &Chain, filter: &Filter, from: u64, to: u64) -> Result<String, RpcError> {
    let mut out = String::from("[");
    let mut count = 0;
    for n in from..=to {
        // `None` only if a reorg rewound the head below `n` meanwhile: serve what exists.
        let Some(block) = chain.block(n) else { break };
        push_matching(&mut out, &mut count, &block, filter)?;
    }
    out.push(']');
    Ok(out)
}

fn push_matching(
    out: &mut String,
    count: &mut usize,
    block: &BlockData,
    filter: &Filter,
) -> Result<(), RpcError> {
    for (i, log) in block.logs.iter().enumerate() {
        if !filter.matches(&log.inner) {
            continue;
        }
        *count += 1;
        if *count > MAX_LOGS_RESULTS {
            return Err(RpcError::new(
                RpcError::LIMIT_EXCEEDED,
                format!("query returned more than {MAX_LOGS_RESULTS} results"),
            ));
        }
        if *count > 1 {
            out.push(',');
        }
        let json: Cow<'_, str> = block.log_json(i);
        out.push_str(&json);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(method: &str, items: Value) -> Params<'_> {
        let Value::Array(items) = items else {
            panic!("test params must be an array")
        };
        Params { method, items }
    }

    #[test]
    fn tags_resolve_against_the_head() {
        let tags = Finality::for_reorg_depth(0);
        assert_eq!(resolve(BlockNumberOrTag::Latest, 100, tags), 100);
        assert_eq!(resolve(BlockNumberOrTag::Pending, 100, tags), 100);
        assert_eq!(resolve(BlockNumberOrTag::Safe, 100, tags), 84);
        assert_eq!(resolve(BlockNumberOrTag::Finalized, 100, tags), 68);
        assert_eq!(resolve(BlockNumberOrTag::Finalized, 3, tags), 0);
        assert_eq!(resolve(BlockNumberOrTag::Earliest, 100, tags), 0);
        assert_eq!(resolve(BlockNumberOrTag::Number(7), 100, tags), 7);
        let deep = Finality::for_reorg_depth(40);
        assert_eq!(resolve(BlockNumberOrTag::Safe, 100, deep), 60);
        assert_eq!(resolve(BlockNumberOrTag::Finalized, 100, deep), 44);
    }

    #[test]
    fn param_errors_name_method_and_parameter() {
        let p = params("eth_getBlockByNumber", serde_json::json!(["0xzz"]));
        let err = p.required::<BlockNumberOrTag>(0, "block number or tag");
        let err = err.unwrap_err();
        assert_eq!(err.code, RpcError::INVALID_PARAMS);
        assert!(
            err.message.contains("eth_getBlockByNumber"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("block number or tag"),
            "{}",
            err.message
        );

        let p = params("eth_getBlockByHash", serde_json::json!([]));
        let err = p.required::<B256>(0, "block hash").unwrap_err();
        assert!(
            err.message.contains("missing parameter 0"),
            "{}",
            err.message
        );

        let p = params("eth_chainId", serde_json::json!([1]));
        assert!(p.at_most(0).unwrap_err().message.contains("at most 0"));

        let p = params("eth_getBlockByNumber", serde_json::json!(["latest", null]));
        assert_eq!(p.optional::<bool>(1, "flag").unwrap(), None);
    }

    #[test]
    fn subscription_kinds_parse() {
        let p = params("eth_subscribe", serde_json::json!(["newHeads"]));
        assert!(matches!(parse_subscription(&p), Ok(SubKind::NewHeads)));
        let p = params(
            "eth_subscribe",
            serde_json::json!(["logs", {"topics": [null]}]),
        );
        assert!(matches!(parse_subscription(&p), Ok(SubKind::Logs(_))));
        let p = params(
            "eth_subscribe",
            serde_json::json!(["newPendingTransactions"]),
        );
        let err = parse_subscription(&p).unwrap_err();
        assert!(
            err.message.contains("newPendingTransactions"),
            "{}",
            err.message
        );
        let p = params("eth_subscribe", serde_json::json!(["logs", {"topics": 5}]));
        assert_eq!(
            parse_subscription(&p).unwrap_err().code,
            RpcError::INVALID_PARAMS
        );
    }

    #[test]
    fn filters_match_address_and_topic_positions() {
        use alloy_primitives::{Address, LogData};
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let (t0, t1, t2) = (
            B256::repeat_byte(10),
            B256::repeat_byte(11),
            B256::repeat_byte(12),
        );
        let log = alloy_primitives::Log {
            address: a,
            data: LogData::new_unchecked(vec![t0, t1], Default::default()),
        };
        let cases = [
            (serde_json::json!({}), true),
            (serde_json::json!({"address": a}), true),
            (serde_json::json!({"address": [b, a]}), true),
            (serde_json::json!({"address": b}), false),
            (serde_json::json!({"topics": [t0]}), true),
            (serde_json::json!({"topics": [null, t1]}), true),
            (serde_json::json!({"topics": [null, [t2, t1]]}), true),
            (serde_json::json!({"topics": [null, t2]}), false),
            (serde_json::json!({"topics": [null, null, t2]}), false),
            (serde_json::json!({"topics": [[t1, t2]]}), false),
        ];
        for (filter, expected) in cases {
            let parsed: Filter = serde_json::from_value(filter.clone()).unwrap();
            assert_eq!(parsed.matches(&log), expected, "{filter}");
        }
    }
}
