//! The range sync of one chain: from the checkpoint to the head over HTTP, in ranges.
//!
//! It is what makes the checkpoint true. At start it fills the gap a restart left; while the
//! live stream runs it trails the head and re-reads each range (`eth_getBlockByNumber` for every
//! block and `eth_getLogs` for every filter, in one JSON-RPC batch so that one node answers all
//! of it); copies the live stream already delivered cost a hot-set lookup. Only a complete,
//! consistent range moves the checkpoint, so a dropped socket, a silent provider or a skipped
//! notification cannot leave a hole behind it.
//!
//! A provider that refuses a range (too many blocks or results) halves it; the limit learned is
//! kept for the chain's later ranges.

use std::time::Duration;

use alloy_primitives::B256;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::filters::LogFilter;
use super::providers::{ProviderSet, backoff};
use super::{ChainInput, RangeData};
use crate::domain::{BlockRef, ChainName};
use crate::provider::{ProviderError, decode, jsonrpc};
use crate::telemetry::metrics as m;

/// Blocks per range at most (and at start, before any provider refused one).
pub const MAX_RANGE: u64 = 256;
/// How often the head is polled over HTTP when no subscription reports it.
const HEAD_POLL: Duration = Duration::from_secs(2);

pub struct RangeSync {
    pub chain: ChainName,
    pub providers: ProviderSet,
    pub filters: Vec<LogFilter>,
    /// The last block of the chain fully processed, if any.
    pub checkpoint: Option<BlockRef>,
    /// Where a chain with no checkpoint starts: the lowest `from_block` of its subscriptions,
    /// else the head at first start.
    pub start_block: Option<u64>,
    pub best_head: watch::Receiver<u64>,
    pub output: mpsc::Sender<ChainInput>,
    pub progress: watch::Sender<SyncProgress>,
}

/// What `/v1/chains` shows of the sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub checkpoint: Option<u64>,
    pub head: u64,
    /// Blocks per range the providers accept.
    pub range_limit: u64,
}

/// Why a range could not be used; it is fetched again (from another provider, if need be).
#[derive(Debug, thiserror::Error)]
enum RangeError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The answers did not fit together (a node behind, or a reorg between calls).
    #[error("inconsistent range: {0}")]
    Inconsistent(String),
}

impl RangeSync {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut span = MAX_RANGE;
        let mut delays = backoff();
        let (mut next, mut parent) = match self.checkpoint {
            Some(cp) => (cp.number + 1, Some(cp.hash)),
            None => (u64::MAX, None), // decided once the head is known
        };
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let head = match self.head(next).await {
                Ok(head) => head,
                Err(err) => {
                    tracing::warn!(chain = %self.chain, error = %err, "cannot read the head");
                    if wait(&shutdown, delays.next().unwrap_or(HEAD_POLL)).await {
                        return;
                    }
                    continue;
                }
            };
            if next == u64::MAX {
                next = self.start_block.unwrap_or(head).min(head);
                tracing::info!(chain = %self.chain, from = next, head, "no checkpoint: starting here");
            }
            self.report(next, head, span);
            if next > head {
                // Caught up: wait for a new head (or poll, if no subscription reports one).
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.best_head.changed() => {}
                    _ = tokio::time::sleep(HEAD_POLL) => {}
                }
                continue;
            }
            let to = head.min(next.saturating_add(span - 1));
            match self.fetch(next, to, parent).await {
                Ok(range) => {
                    let last = range.last;
                    metrics::counter!(m::BACKFILL_BLOCKS, "chain" => self.chain.to_string())
                        .increment(to - next + 1);
                    if self.output.send(ChainInput::Range(range)).await.is_err() {
                        return;
                    }
                    next = last.number + 1;
                    parent = Some(last.hash);
                    delays = backoff();
                    if head - to > span {
                        tracing::info!(chain = %self.chain, at = last.number, head, "backfilling");
                    }
                }
                Err(RangeError::Provider(err)) if err.is_range_error() && span > 1 => {
                    span = (span / 2).max(1);
                    tracing::info!(chain = %self.chain, span, error = %err, "provider refused the range; halving it");
                }
                Err(err) => {
                    let delay = delays.next().unwrap_or(HEAD_POLL);
                    tracing::warn!(chain = %self.chain, from = next, to, error = %err, retry_in_ms = delay.as_millis() as u64, "range fetch failed; retrying");
                    if wait(&shutdown, delay).await {
                        return;
                    }
                }
            }
        }
    }

    fn report(&self, next: u64, head: u64, span: u64) {
        let checkpoint = next.checked_sub(1);
        self.progress.send_replace(SyncProgress {
            checkpoint,
            head,
            range_limit: span,
        });
        metrics::gauge!(m::CHAIN_LAG, "chain" => self.chain.to_string())
            .set(head.saturating_sub(checkpoint.unwrap_or(0)) as f64);
    }

    /// The best head: what the subscriptions reported when that shows work to do, else a poll
    /// over HTTP — so a chain whose sockets are all down still advances.
    async fn head(&mut self, next: u64) -> Result<u64, ProviderError> {
        let seen = *self.best_head.borrow_and_update();
        if seen >= next && next != u64::MAX {
            return Ok(seen);
        }
        let (_, raw) = self
            .providers
            .call("eth_blockNumber", &jsonrpc::params(&json!([]))?)
            .await?;
        let polled: alloy_primitives::U64 = jsonrpc::decode(&raw, "eth_blockNumber")?;
        Ok(seen.max(polled.to::<u64>()))
    }

    /// Fetches `from..=to` in one batch and checks it fits together.
    async fn fetch(
        &self,
        from: u64,
        to: u64,
        parent: Option<B256>,
    ) -> Result<RangeData, RangeError> {
        let mut params: Vec<Box<RawValue>> = Vec::new();
        for filter in &self.filters {
            params.push(jsonrpc::params(&json!([filter.range_json(from, to)]))?);
        }
        for n in from..=to {
            params.push(jsonrpc::params(&json!([format!("{n:#x}"), false]))?);
        }
        let calls: Vec<(&str, &RawValue)> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let method = if i < self.filters.len() {
                    "eth_getLogs"
                } else {
                    "eth_getBlockByNumber"
                };
                (method, &**p)
            })
            .collect();
        let (provider, answers) = self.providers.batch(&calls).await?;
        let mut answers = answers.into_iter();
        let mut logs = Vec::new();
        for _ in &self.filters {
            let raw = answers
                .next()
                .ok_or(ProviderError::Malformed("short batch".into()))??;
            let list: Vec<Box<RawValue>> = jsonrpc::decode(&raw, "eth_getLogs result")?;
            for item in list {
                let key = decode::log_key(&item)?;
                logs.push((key, item));
            }
        }
        let mut heads = Vec::with_capacity((to - from + 1) as usize);
        for n in from..=to {
            let raw = answers
                .next()
                .ok_or(ProviderError::Malformed("short batch".into()))??;
            if raw.get() == "null" {
                return Err(RangeError::Inconsistent(format!(
                    "provider has no block {n} yet"
                )));
            }
            let head = decode::head(&raw)?;
            if head.block.number != n {
                return Err(RangeError::Inconsistent(format!(
                    "asked for block {n}, got {}",
                    head.block.number
                )));
            }
            heads.push(head);
        }
        // Continuity: every parent hash links, starting from the checkpoint.
        let mut expected = parent;
        for head in &heads {
            if let Some(hash) = expected
                && head.block.parent_hash != hash
            {
                return Err(RangeError::Inconsistent(format!(
                    "block {} does not extend the stored chain (reorg below the checkpoint)",
                    head.block.number
                )));
            }
            expected = Some(head.block.hash);
        }
        // Every log belongs to the block this answer names at its height.
        for (key, _) in &logs {
            let index = key
                .block_number
                .checked_sub(from)
                .and_then(|i| usize::try_from(i).ok());
            match index.and_then(|i| heads.get(i)) {
                Some(head) if head.block.hash == key.block_hash => {}
                _ => {
                    return Err(RangeError::Inconsistent(format!(
                        "a log of block {} names another block hash",
                        key.block_number
                    )));
                }
            }
        }
        let last = heads
            .last()
            .map(|h| h.block)
            .ok_or(RangeError::Inconsistent("empty range".into()))?;
        Ok(RangeData {
            provider,
            heads,
            logs,
            last,
        })
    }
}

/// Sleeps `delay` unless shut down first; true when shut down.
async fn wait(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
