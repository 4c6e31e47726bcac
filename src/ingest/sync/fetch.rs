//! One range over HTTP: `eth_getLogs` for every filter, `eth_getBlockByNumber` for every
//! block and for the `safe` and `finalized` tags, in one JSON-RPC batch so that one node answers
//! all of it, checked to fit together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;

use super::reorg;
use super::schedule::Ask;
use super::{Failed, RangeError};
use crate::domain::BlockRef;
use crate::domain::ProviderIndex;
use crate::ingest::RangeData;
use crate::ingest::filters::{ChainFilters, LogFilter};
use crate::ingest::providers::ProviderSet;
use crate::provider::decode::{Head, LogKey};
use crate::provider::{FINALITY_TAGS, ProviderError, Request, decode, methods};

/// How long the cross-check of a range's last block may take; past it the range stands.
const CROSS_CHECK: Duration = Duration::from_millis(500);

/// What a range fetch needs; cheap to clone into a task per range.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub providers: ProviderSet,
    pub filters: ChainFilters,
}

impl Fetcher {
    /// Fetches `ask`'s range, asking its turn's provider first (its `avoid` last), and checks
    /// that the answer is one chain: each block at its height, each parent hash linking inside
    /// the range, each log naming the block the answer gives at its height. Linking the range
    /// to the blocks before it is the caller's check. A failure names the provider whose
    /// answer it was, if one answered.
    /// `filters` is the chain's set as it was when the range was asked for.
    pub async fn fetch(&self, ask: Ask, filters: Arc<[LogFilter]>) -> Result<RangeData, Failed> {
        let mut answered = None;
        self.fetch_from(ask, &filters, &mut answered)
            .await
            .map_err(|error| Failed {
                error,
                provider: answered,
            })
    }

    async fn fetch_from(
        &self,
        ask: Ask,
        filters: &[LogFilter],
        answered: &mut Option<ProviderIndex>,
    ) -> Result<RangeData, RangeError> {
        let Ask {
            from,
            to,
            turn,
            avoid,
        } = ask;
        let (calls, with_tags) = self.requests(filters, from, to, turn)?;
        let blocks = to - from + 1;
        let (provider, answers) = self
            .providers
            .batch_from(turn, avoid, blocks, &calls)
            .await?;
        *answered = Some(provider);
        let bytes = answers
            .iter()
            .map(|a| a.as_ref().map_or(0, |raw| raw.get().len() as u64))
            .sum();
        let mut answers = answers.into_iter();
        let logs = read_logs(filters.len(), &mut answers)?;
        let heads = methods::read_blocks(from, to, &mut answers)?;
        one_chain(from, &heads, &logs)?;
        if filters.iter().any(LogFilter::takes_everything) {
            bloom_agrees(&heads, &logs, from)?;
        }
        let last = heads
            .last()
            .map(|h| h.block)
            .ok_or(RangeError::Inconsistent("empty range".into()))?;
        let (safe, finalized) = if with_tags {
            read_tags(&mut answers, last.number)
        } else {
            (None, None)
        };
        self.cross_check(provider, last).await?;
        let hashes = heads.iter().map(|h| h.block.hash).collect();
        Ok(RangeData {
            provider,
            heads,
            logs,
            last,
            first: from,
            hashes,
            safe,
            finalized,
            bytes,
        })
    }

    /// The batch for `from..=to`: `eth_getLogs` for every filter, then every block, then the
    /// finality tags (unless the provider asked first sends calls one by one: a node without
    /// the tags would then fail the whole range with its error, so the range goes without
    /// them); and whether the tags are in it.
    fn requests(
        &self,
        filters: &[LogFilter],
        from: u64,
        to: u64,
        turn: usize,
    ) -> Result<(Vec<Request>, bool), ProviderError> {
        let mut calls = Vec::with_capacity(filters.len() + (to - from) as usize + 3);
        for filter in filters {
            calls.push(Request::logs(filter, from, to)?);
        }
        calls.extend(Request::blocks(from..=to)?);
        let all = self.providers.all();
        let batches = all
            .get(turn % all.len().max(1))
            .is_some_and(|p| p.batches.load(Ordering::Relaxed));
        if batches {
            for tag in FINALITY_TAGS {
                calls.push(Request::block(tag)?);
            }
        }
        Ok((calls, batches))
    }

    /// Whether the node that answered a range is on the other providers' chain: one of them is
    /// asked for the range's last block. A range that extends the checkpoint is otherwise taken
    /// on one node's word, and a node alone on a stale branch (ponder#2221) would have its
    /// branch stored, then retracted once the others' chain is read. When they disagree, every
    /// other provider votes; a range most of them contradict is refused (and asked elsewhere).
    /// A provider that does not answer in [`CROSS_CHECK`], or has no block there yet, leaves
    /// the range standing. The read goes straight to its HTTP client, not through its breaker:
    /// it is bounded by [`CROSS_CHECK`], and recording its answers (often "no such block yet"
    /// from a provider that lags) as request outcomes kept the health tracker from recycling a
    /// lagging provider's stream (`tests/it/health/lag.rs`).
    async fn cross_check(&self, provider: ProviderIndex, last: BlockRef) -> Result<(), RangeError> {
        let all = self.providers.all();
        let Some(at) = all.iter().position(|p| p.index == provider) else {
            return Ok(());
        };
        let Some(other) = all
            .get((at + 1) % all.len())
            .filter(|o| o.index != provider)
        else {
            return Ok(()); // a single provider
        };
        let answer = tokio::time::timeout(CROSS_CHECK, other.http.block(last.number)).await;
        match answer {
            Ok(Ok(Some(head)))
                if head.block.number == last.number && head.block.hash != last.hash => {}
            _ => return Ok(()), // the same block, none yet, or no answer
        }
        let votes = tokio::time::timeout(
            CROSS_CHECK,
            reorg::poll_height(&self.providers, last.number, last.hash, Some(provider)),
        )
        .await
        .unwrap_or_default();
        // `kept`: others with the range's block; the answering node counts for it too.
        if votes.moved > votes.kept + 1 {
            return Err(RangeError::Inconsistent(format!(
                "provider {} is on a minority branch at block {} ({} of the others disagree)",
                self.providers.id(provider),
                last.number,
                votes.moved
            )));
        }
        Ok(())
    }
}

/// The logs of the batch's first `filters` answers, each with its identity read.
fn read_logs(
    filters: usize,
    answers: &mut impl Iterator<Item = Result<Box<RawValue>, ProviderError>>,
) -> Result<Vec<(LogKey, Box<RawValue>)>, ProviderError> {
    let mut logs = Vec::new();
    for _ in 0..filters {
        let raw = answers
            .next()
            .ok_or(ProviderError::Malformed("short batch".into()))??;
        for item in methods::read_logs(&raw)? {
            let key = decode::log_key(&item)?;
            logs.push((key, item));
        }
    }
    Ok(logs)
}

/// Whether the range's blocks (from `from` on) link up and each log names the block at its
/// height.
fn one_chain(
    from: u64,
    heads: &[Head],
    logs: &[(LogKey, Box<RawValue>)],
) -> Result<(), RangeError> {
    for pair in heads.windows(2) {
        if pair[1].block.parent_hash != pair[0].block.hash {
            return Err(RangeError::Inconsistent(format!(
                "block {} does not extend block {} (a reorg between calls)",
                pair[1].block.number, pair[0].block.number
            )));
        }
    }
    for (key, _) in logs {
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
    Ok(())
}

/// The `safe` and `finalized` heights, clamped to `last` (nothing past the range is stored
/// yet). A node without the tags answers them with an error or null: `None`, and the range
/// sync falls back to `confirmations`.
fn read_tags(
    answers: &mut impl Iterator<Item = Result<Box<RawValue>, ProviderError>>,
    last: u64,
) -> (Option<u64>, Option<u64>) {
    let mut tag = || {
        let raw = answers.next()?.ok()?;
        let head = methods::read_block(&raw).ok()??;
        Some(head.block.number.min(last))
    };
    (tag(), tag())
}

/// With a filter that takes every log, a block whose logs bloom is not empty must come with at
/// least one log: a node that has the block but not yet its logs (one behind a load balancer)
/// answers `eth_getLogs` with `[]`, and such a range would be checkpointed without them.
fn bloom_agrees(
    heads: &[Head],
    logs: &[(LogKey, Box<RawValue>)],
    from: u64,
) -> Result<(), RangeError> {
    let mut has_logs = vec![false; heads.len()];
    for (key, _) in logs {
        if let Some(slot) = key
            .block_number
            .checked_sub(from)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| has_logs.get_mut(i))
        {
            *slot = true;
        }
    }
    match heads
        .iter()
        .zip(&has_logs)
        .find(|(head, has)| !**has && !head.logs_bloom.is_zero())
    {
        Some((head, _)) => Err(RangeError::Inconsistent(format!(
            "block {} has a non-empty logs bloom but the provider returned none of its logs",
            head.block.number
        ))),
        None => Ok(()),
    }
}
