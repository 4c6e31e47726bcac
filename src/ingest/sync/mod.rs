//! The range sync of one chain: from the checkpoint to the head over HTTP, in ranges.
//!
//! It is what makes the checkpoint true. At start it fills the gap a restart left; while the
//! live stream runs it trails it and re-reads each range (`eth_getBlockByNumber` for every
//! block and `eth_getLogs` for every filter, in one JSON-RPC batch so that one node answers all
//! of it, see [`fetch`]); copies the live stream already sent the writer cost an identity read.
//! Only a complete, consistent range moves the checkpoint, so a dropped socket, a silent
//! provider or a skipped notification cannot leave a hole behind it.
//!
//! How far it reads: while live heads arrive, up to the last one that has settled ([`heads`]),
//! so the re-read follows the live stream instead of racing it; without them (no socket, all
//! sockets down), up to the head polled over HTTP. A backfill keeps several ranges in flight,
//! each asking a different provider first, and hands them to the aggregator in order. Ranges
//! shorter than the limit wait [`schedule::LINGER`] for company, so a busy chain is read in
//! wide ranges.
//!
//! A provider that refuses a range (too many blocks or results) halves it; the limit learned is
//! kept for the chain's later ranges. Below that limit ranges are sized by bytes: dense blocks
//! make shorter ranges, so that an answer weighs about [`schedule::RANGE_BYTES`] and the ranges
//! in flight hold a bounded amount of memory. The aggregator takes a range on only once the
//! writer's queue is short, so a backfill faster than the disk waits in the node, not in memory.
//!
//! The loop ([`run`]) is a state machine over what it keeps between passes; which ranges to ask
//! for and when is [`schedule`]'s, where the sync stands and how a reorg moves it back is
//! [`rewind`]'s.
//!
//! Reorgs ([`reorg`]): every range hands on the canonical hash of each of its heights, which
//! the writer commits with the range (orphans at those heights become `removed`). A range that
//! does not extend the last block handed on, or a hint from the aggregator (a live head or a
//! `removed: true` log at a checkpointed height), is put to the other providers; once they
//! confirm it, the sync walks back to the common ancestor and re-reads from there. Deeper than
//! its window of hashes it re-backfills from the chain's start.

mod fetch;
mod heads;
pub mod reorg;
mod rewind;
mod run;
mod schedule;
pub mod stuck;

use std::time::Duration;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::ChainInput;
use super::filters::ChainFilters;
use super::providers::ProviderSet;
use crate::domain::{BlockRef, ChainName, ProviderIndex};
use crate::provider::{BlocksError, ProviderError};
use crate::telemetry::metrics as m;
pub use schedule::MAX_RANGE;
use stuck::Stuck;

/// How often the head is polled over HTTP when no subscription reports it; live heads older
/// than this mean the subscriptions have stopped.
const HEAD_POLL: Duration = Duration::from_secs(2);

pub struct RangeSync {
    pub chain: ChainName,
    pub providers: ProviderSet,
    /// The log filters, configured and dynamic.
    pub filters: ChainFilters,
    /// The last block of the chain fully processed, if any.
    pub checkpoint: Option<BlockRef>,
    /// Where a chain with no checkpoint starts: the lowest `from_block` of its subscriptions,
    /// else the head at first start.
    pub start_block: Option<u64>,
    pub best_head: watch::Receiver<u64>,
    pub output: mpsc::Sender<ChainInput>,
    pub progress: watch::Sender<SyncProgress>,
    /// Depth at which a block counts as final when the node has no `safe`/`finalized` tags.
    pub confirmations: u64,
    /// The canonical hashes stored at the heights up to the checkpoint (ascending).
    pub recent: Vec<(u64, alloy_primitives::B256)>,
    /// Heights the aggregator suspects were reorganised below the checkpoint.
    pub reorg_hints: mpsc::Receiver<u64>,
    /// The highest finalized height a range handed on has shown (never moves back).
    pub finalized: Option<u64>,
    /// Where each reorg walked back from is noted.
    pub reorgs: ReorgLog,
}

/// A reorg the range sync walked back from: how deep, to which common ancestor, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorgNote {
    /// Blocks replaced (for one deeper than the kept window: the window's size).
    pub depth: u64,
    /// The highest block both branches share (the chain's start for one too deep).
    pub ancestor: u64,
    /// Deeper than the kept window: the chain is read again from its start.
    pub too_deep: bool,
    /// Wall-clock milliseconds when it was found.
    pub at_ms: i64,
}

/// The chain's latest reorgs, oldest first, shared with the API; bounded.
#[derive(Debug, Clone, Default)]
pub struct ReorgLog(Arc<Mutex<VecDeque<ReorgNote>>>);

/// Reorgs a [`ReorgLog`] keeps.
const REORG_LOG: usize = 32;

impl ReorgLog {
    pub fn push(&self, note: ReorgNote) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == REORG_LOG {
            log.pop_front();
        }
        log.push_back(note);
    }

    pub fn recent(&self) -> Vec<ReorgNote> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().copied().collect()
    }
}

/// What `/v1/chains` shows of the sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub checkpoint: Option<u64>,
    pub head: u64,
    /// Blocks per range the providers accept.
    pub range_limit: u64,
    /// Why the chain cannot advance, when every provider is far below its checkpoint.
    pub stuck: Option<Stuck>,
    /// The blocks (`from`, `to`) whose fetch failed on its last try, on every provider tried:
    /// a hole `/v1/coverage` reports until a range is stored again.
    pub failing: Option<(u64, u64)>,
    /// The highest block known final (the `finalized` tag, or `confirmations` deep), as the
    /// last range handed on read it.
    pub finalized: Option<u64>,
}

/// Why a range could not be used; it is fetched again (from another provider, if need be).
#[derive(Debug, thiserror::Error)]
enum RangeError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The answers did not fit together (a node behind, or a reorg between calls).
    #[error("inconsistent range: {0}")]
    Inconsistent(String),
    /// The fetch task ended without an answer.
    #[error("range fetch task failed: {0}")]
    Task(String),
    /// The range's first block does not extend the last block handed on: a reorg below the
    /// checkpoint, or a provider on another branch.
    #[error("the chain of provider {provider} does not extend the checkpoint")]
    Fork { provider: ProviderIndex },
}

/// A range fetch that failed, and the provider whose answer failed it (if one answered).
#[derive(Debug)]
pub(super) struct Failed {
    error: RangeError,
    provider: Option<ProviderIndex>,
}

impl From<BlocksError> for RangeError {
    fn from(error: BlocksError) -> RangeError {
        match error {
            BlocksError::Provider(error) => RangeError::Provider(error),
            other => RangeError::Inconsistent(other.to_string()),
        }
    }
}

impl From<RangeError> for Failed {
    fn from(error: RangeError) -> Failed {
        Failed {
            error,
            provider: None,
        }
    }
}

impl RangeSync {
    /// Reads ranges until `shutdown`, or until the aggregator is gone.
    pub async fn run(self, shutdown: CancellationToken) {
        run::Run::new(self, shutdown).run().await
    }

    /// Publishes the progress (`/v1/chains`) and the lag gauge.
    fn report(
        &self,
        checkpoint: Option<u64>,
        head: u64,
        span: u64,
        stuck: Option<Stuck>,
        failing: Option<(u64, u64)>,
    ) {
        let progress = SyncProgress {
            checkpoint,
            head,
            range_limit: span,
            stuck,
            failing,
            finalized: self.finalized,
        };
        if *self.progress.borrow() == progress {
            return;
        }
        self.progress.send_replace(progress);
        // Negative while the providers are below the checkpoint: never a quiet 0.
        let lag = head as f64 - checkpoint.unwrap_or(0) as f64;
        metrics::gauge!(m::CHAIN_LAG, "chain" => self.chain.to_string()).set(lag);
    }
}

/// The highest block `confirmations` deep below `head`, at most `last` (nothing past the range
/// is stored yet); `None` while the chain is shorter than that.
fn by_confirmations(head: u64, confirmations: u64, last: u64) -> Option<u64> {
    head.checked_sub(confirmations).map(|n| n.min(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tags_blocks_settle_confirmations_deep_and_never_past_the_range() {
        assert_eq!(by_confirmations(100, 12, 100), Some(88));
        assert_eq!(
            by_confirmations(100, 12, 80),
            Some(80),
            "clamped to the range"
        );
        assert_eq!(
            by_confirmations(10, 12, 10),
            None,
            "chain shorter than the depth"
        );
        assert_eq!(by_confirmations(12, 12, 12), Some(0));
        assert_eq!(by_confirmations(50, 0, 50), Some(50));
    }
}
