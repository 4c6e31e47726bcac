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
//! shorter than the limit wait [`LINGER`] for company, so a busy chain is read in wide ranges.
//!
//! A provider that refuses a range (too many blocks or results) halves it; the limit learned is
//! kept for the chain's later ranges.
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
mod schedule;
pub mod stuck;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dedupe::ProviderIndex;
use super::filters::LogFilter;
use super::providers::{ProviderSet, backoff};
use super::{ChainInput, RangeData};
use crate::breaker::startup_backoff;
use crate::domain::{BlockRef, ChainName};
use crate::provider::{BlocksError, ProviderError};
use crate::telemetry::metrics as m;
use fetch::Fetcher;
use heads::HeadClock;
use reorg::{Ancestor, Recent};
pub use schedule::MAX_RANGE;
use schedule::{Ask, Hints, Schedule};
use stuck::{Change, Stuck, StuckWatch};

/// How often the head is polled over HTTP when no subscription reports it; live heads older
/// than this mean the subscriptions have stopped.
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
    /// Depth at which a block counts as final when the node has no `safe`/`finalized` tags.
    pub confirmations: u64,
    /// The canonical hashes stored at the heights up to the checkpoint (ascending).
    pub recent: Vec<(u64, alloy_primitives::B256)>,
    /// Heights the aggregator suspects were reorganised below the checkpoint.
    pub reorg_hints: mpsc::Receiver<u64>,
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

/// What to do about a suspected reorg.
enum Rewind {
    /// Re-read from the block after this common ancestor.
    To(u64, alloy_primitives::B256),
    /// No common ancestor in the window: re-read from this height, unlinked.
    Rebackfill(u64),
    /// Not confirmed (or nothing to do): carry on.
    No,
}

/// The head over HTTP, as last polled.
#[derive(Default)]
struct Polled {
    head: Option<u64>,
    at: Option<Instant>,
}

impl RangeSync {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let fetcher = Fetcher {
            providers: self.providers.clone(),
            filters: self.filters.clone().into(),
        };
        // Fetch tasks stop with this loop, however it ends.
        let tasks = shutdown.child_token();
        let _stop_tasks = tasks.clone().drop_guard();
        let mut delays = backoff();
        let mut startup_delays = startup_backoff();
        // `next`: the first block not yet handed on.
        let (mut next, mut parent) = match self.checkpoint {
            Some(cp) => (cp.number + 1, Some(cp.hash)),
            None => (u64::MAX, None), // decided once the head is known
        };
        let mut schedule: Schedule<Result<RangeData, Failed>> = Schedule::new(
            self.checkpoint.map(|cp| cp.number + 1),
            self.providers.all().len(),
        );
        let mut hints = Hints::default();
        let mut clock = HeadClock::default();
        let mut polled = Polled::default();
        let mut heads_open = true;
        let mut hints_open = true;
        // Whether the chain's nodes answer the `safe`/`finalized` tags.
        let mut tags_seen = false;
        let mut stuck = StuckWatch::default();
        let mut recent = Recent::from_stored(&std::mem::take(&mut self.recent));
        if let Some(cp) = self.checkpoint
            && recent.hash_at(cp.number) != Some(cp.hash)
        {
            recent.push(cp.number, cp.hash);
        }
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = Instant::now();
            // Every pass reads the head: `changed()` below marks a new value seen before this does.
            let head = *self.best_head.borrow_and_update();
            if head > 0 {
                clock.observe(head, now.into_std());
            }
            if let Some(at) = hints.due(now) {
                let rewind = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    rewind = self.check_hint(&recent, at, next) => rewind,
                };
                if !matches!(rewind, Rewind::No) {
                    self.apply(rewind, &mut recent, &mut next, &mut parent);
                    schedule.restart(next);
                    delays = backoff();
                }
            }
            let live = clock.is_live(now.into_std(), HEAD_POLL);
            let mut target = clock.settled(now.into_std());
            if !live {
                let behind = polled
                    .head
                    .is_none_or(|h| schedule.scheduled().is_none_or(|s| s > h));
                let due = polled.at.is_none_or(|at| now >= at + HEAD_POLL);
                if behind && due {
                    match self.providers.block_number().await {
                        Ok(head) => {
                            polled = Polled {
                                head: Some(head),
                                at: Some(now),
                            }
                        }
                        Err(err) => {
                            tracing::warn!(chain = %self.chain, error = %err, "cannot read the head");
                            // While no provider has answered since start, retry on the short
                            // start-up curve: one that comes up late is asked within seconds.
                            // A head streamed meanwhile ends the wait: no need to poll then.
                            let delay = if self.providers.health().any_answered() {
                                delays.next()
                            } else {
                                startup_delays.next()
                            };
                            let sleep = tokio::time::sleep(delay.unwrap_or(HEAD_POLL));
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = sleep => {}
                                changed = self.best_head.changed(), if heads_open => {
                                    heads_open = changed.is_ok();
                                }
                            }
                            continue;
                        }
                    }
                }
                target = target.max(polled.head);
            }
            let best = clock.latest().max(polled.head.unwrap_or(0));
            let checkpoint = next.checked_sub(1).filter(|_| next != u64::MAX);
            let verdict = tokio::select! {
                _ = shutdown.cancelled() => return,
                verdict = self.stuck(&mut stuck, &recent, best, checkpoint, now.into_std()) => verdict,
            };
            let mut wake = now + HEAD_POLL;
            if let Some(target) = target {
                if next == u64::MAX {
                    next = self.start_block.unwrap_or(target).min(target);
                    schedule.restart(next);
                    tracing::info!(chain = %self.chain, from = next, head = target, "no checkpoint: starting here");
                }
                self.report(next, best, schedule.span(), verdict);
                let linger = schedule.ask_all(target, now, live, |ask| {
                    let (fetcher, stop) = (fetcher.clone(), tasks.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => Err(Failed::from(RangeError::Task("stopped".into()))),
                            range = fetcher.fetch(ask.from, ask.to, ask.turn, ask.avoid) => range,
                        }
                    })
                });
                if let Some(linger) = linger {
                    wake = wake.min(linger);
                }
            }
            if let Some(settle) = clock.next_settle() {
                wake = wake.min(Instant::from_std(settle));
            }
            if let Some(hint) = hints.wake() {
                wake = wake.min(hint);
            }

            // Biased: shutdown first; then answers, in the order they must be handed on.
            let answer = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                answer = async { schedule.front()?.await.ok() }, if !schedule.is_empty() => answer,
                hint = self.reorg_hints.recv(), if hints_open => {
                    match hint {
                        Some(at) => hints.add(at),
                        None => hints_open = false,
                    }
                    continue;
                }
                changed = self.best_head.changed(), if schedule.is_empty() && heads_open => {
                    // An error means the aggregator is gone: the loop ends at its next send.
                    heads_open = changed.is_ok();
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => continue,
            };
            let Some(ask) = schedule.pop() else {
                continue;
            };
            let Ask { from, to, .. } = ask;
            let answer =
                answer.unwrap_or_else(|| Err(Failed::from(RangeError::Task("panicked".into()))));
            let range = answer.and_then(|range| match parent {
                Some(hash) if range.heads.first().map(|h| h.block.parent_hash) != Some(hash) => {
                    Err(Failed {
                        error: RangeError::Fork {
                            provider: range.provider,
                        },
                        provider: Some(range.provider),
                    })
                }
                _ => Ok(range),
            });
            match range {
                Ok(mut range) => {
                    let last = range.last;
                    for (n, hash) in (range.first..).zip(&range.hashes) {
                        recent.push(n, *hash);
                    }
                    if range.safe.is_some() || range.finalized.is_some() {
                        tags_seen = true;
                    } else if !tags_seen {
                        // No tags: final once `confirmations` deep below the best head known.
                        // Never once a node of the chain has shown tags: a fixed depth may be
                        // shallower than the chain's finality, and finality never moves back.
                        let head = clock
                            .latest()
                            .max(polled.head.unwrap_or(0))
                            .max(last.number);
                        let settled = by_confirmations(head, self.confirmations, last.number);
                        (range.safe, range.finalized) = (settled, settled);
                    }
                    metrics::counter!(m::BACKFILL_BLOCKS, "chain" => self.chain.to_string())
                        .increment(to - from + 1);
                    let sent = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        sent = self.output.send(ChainInput::Range(range)) => sent,
                    };
                    if sent.is_err() {
                        return;
                    }
                    next = last.number + 1;
                    parent = Some(last.hash);
                    delays = backoff();
                    schedule.handed_on();
                    let head = clock.latest().max(polled.head.unwrap_or(0));
                    self.report(next, head, schedule.span(), stuck.current());
                    if head.saturating_sub(to) > schedule.span() {
                        tracing::debug!(chain = %self.chain, at = last.number, head, "backfilling");
                    }
                }
                Err(Failed {
                    error: err,
                    provider: failed_by,
                }) => {
                    // Everything after this range is asked for again once it is settled.
                    schedule.failed(&ask, failed_by, next);
                    match err {
                        RangeError::Fork { provider } => {
                            let rewind = tokio::select! {
                                _ = shutdown.cancelled() => return,
                                rewind = self.on_fork(&recent, from.saturating_sub(1), provider) => rewind,
                            };
                            if matches!(rewind, Rewind::No) {
                                let delay = delays.next().unwrap_or(HEAD_POLL);
                                if wait(&shutdown, delay).await {
                                    return;
                                }
                            } else {
                                self.apply(rewind, &mut recent, &mut next, &mut parent);
                                schedule.restart(next);
                                delays = backoff();
                            }
                        }
                        RangeError::Provider(err) if err.is_range_error() && to > from => {
                            schedule.refused(&ask);
                            tracing::info!(chain = %self.chain, span = schedule.span(), error = %err, "provider refused the range; halving it");
                        }
                        err => {
                            let delay = delays.next().unwrap_or(HEAD_POLL);
                            tracing::warn!(chain = %self.chain, from, to, error = %err, retry_in_ms = delay.as_millis() as u64, "range fetch failed; retrying");
                            if wait(&shutdown, delay).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `provider`'s range does not extend `top`, the last height handed on: a reorg once the
    /// other providers confirm it.
    async fn on_fork(&self, recent: &Recent, top: u64, provider: ProviderIndex) -> Rewind {
        let Some(ours) = recent.hash_at(top) else {
            // Nothing kept to compare with: the walk finds no ancestor and re-backfills.
            return self.rewind(recent, top, Some(provider)).await;
        };
        let votes = reorg::poll_height(&self.providers, top, ours, Some(provider)).await;
        if votes.confirm(true) {
            return self.rewind(recent, top, Some(provider)).await;
        }
        metrics::counter!(m::REORGS_UNCONFIRMED, "chain" => self.chain.to_string()).increment(1);
        tracing::warn!(chain = %self.chain, provider = %self.providers.id(provider), at = top, kept = votes.kept, moved = votes.moved + 1, "a provider's chain leaves the checkpoint but the others keep it: lagging, not a reorg");
        Rewind::No
    }

    /// A hint that height `at` was reorganised: the providers vote on the block handed on there
    /// (`next` is the first height not handed on yet).
    async fn check_hint(&self, recent: &Recent, at: u64, next: u64) -> Rewind {
        let Some(top) = next.checked_sub(1).filter(|top| at <= *top) else {
            return Rewind::No; // above what was handed on: the next range covers it
        };
        let Some(ours) = recent.hash_at(at) else {
            return Rewind::No;
        };
        let votes = reorg::poll_height(&self.providers, at, ours, None).await;
        if !votes.confirm(false) {
            if votes.moved > 0 {
                metrics::counter!(m::REORGS_UNCONFIRMED, "chain" => self.chain.to_string())
                    .increment(1);
            }
            return Rewind::No;
        }
        self.rewind(recent, top, votes.mover).await
    }

    /// A confirmed fork below `top` (the last height handed on): walks back from `from`'s chain
    /// to the common ancestor. A failed walk is `No`: the next range or hint tries again.
    async fn rewind(&self, recent: &Recent, top: u64, from: Option<ProviderIndex>) -> Rewind {
        let start = from
            .and_then(|p| self.providers.all().iter().position(|c| c.index == p))
            .unwrap_or(0);
        let provider = from.map_or("any", |p| self.providers.id(p));
        match reorg::find_ancestor(&self.providers, start, recent, top).await {
            Ok(Ancestor::At(n, _)) if n >= top => Rewind::No, // it moved again meanwhile
            Ok(Ancestor::At(n, hash)) => {
                let depth = top - n;
                metrics::counter!(m::REORGS, "chain" => self.chain.to_string(), "depth" => reorg::depth_bucket(depth)).increment(1);
                tracing::warn!(chain = %self.chain, provider, depth, ancestor = n, "reorg below the checkpoint: re-reading from the common ancestor");
                Rewind::To(n, hash)
            }
            Ok(Ancestor::TooDeep) => {
                let from = self.start_block.or(recent.lowest()).unwrap_or(0);
                metrics::counter!(m::REORGS_TOO_DEEP, "chain" => self.chain.to_string())
                    .increment(1);
                tracing::error!(chain = %self.chain, provider, at = top, window = reorg::WINDOW, from, "reorg deeper than the kept window: re-backfilling");
                Rewind::Rebackfill(from)
            }
            Err(err) => {
                tracing::warn!(chain = %self.chain, provider, error = %err, "walking back to the common ancestor failed; retrying");
                Rewind::No
            }
        }
    }

    fn apply(
        &self,
        rewind: Rewind,
        recent: &mut Recent,
        next: &mut u64,
        parent: &mut Option<alloy_primitives::B256>,
    ) {
        match rewind {
            Rewind::To(n, hash) => {
                recent.truncate_after(n);
                *next = n + 1;
                *parent = Some(hash);
            }
            Rewind::Rebackfill(from) => {
                recent.clear();
                *next = from;
                *parent = None;
            }
            Rewind::No => {}
        }
    }

    fn report(&self, next: u64, head: u64, span: u64, stuck: Option<Stuck>) {
        let checkpoint = next.checked_sub(1);
        let progress = SyncProgress {
            checkpoint,
            head,
            range_limit: span,
            stuck,
        };
        if *self.progress.borrow() == progress {
            return;
        }
        self.progress.send_replace(progress);
        // Negative while the providers are below the checkpoint: never a quiet 0.
        let lag = head as f64 - checkpoint.unwrap_or(0) as f64;
        metrics::gauge!(m::CHAIN_LAG, "chain" => self.chain.to_string()).set(lag);
    }

    /// Whether every provider is far below the checkpoint (see [`stuck`]), logged when it
    /// starts, every minute while it lasts, and when it ends.
    async fn stuck(
        &self,
        watch: &mut StuckWatch,
        recent: &Recent,
        head: u64,
        checkpoint: Option<u64>,
        now: std::time::Instant,
    ) -> Option<Stuck> {
        let mut verdict = Stuck::check(head, checkpoint);
        if let Some(Stuck::Behind { head, checkpoint }) = verdict {
            let other = if watch.compare_due(verdict, now) {
                self.serves_another_chain(recent, head).await
            } else {
                matches!(watch.current(), Some(Stuck::OtherChain { .. }))
            };
            if other {
                verdict = Some(Stuck::OtherChain { head, checkpoint });
            }
        }
        match watch.observe(verdict, now) {
            Some(Change::Report(stuck)) => {
                tracing::warn!(chain = %self.chain, head = stuck.head(), checkpoint = stuck.checkpoint(), "{}", stuck.reason(&self.chain));
            }
            Some(Change::Cleared) => {
                tracing::info!(chain = %self.chain, head, "a provider is back at the checkpoint; the chain advances again");
            }
            None => {}
        }
        verdict
    }

    /// Whether most providers answering have another block at `head` than the one handed on
    /// there; false when nothing kept there to compare with.
    async fn serves_another_chain(&self, recent: &Recent, head: u64) -> bool {
        let Some(ours) = recent.hash_at(head) else {
            return false;
        };
        let votes = reorg::poll_height(&self.providers, head, ours, None).await;
        votes.moved > votes.kept
    }
}

/// The highest block `confirmations` deep below `head`, at most `last` (nothing past the range
/// is stored yet); `None` while the chain is shorter than that.
fn by_confirmations(head: u64, confirmations: u64, last: u64) -> Option<u64> {
    head.checked_sub(confirmations).map(|n| n.min(last))
}

/// Sleeps `delay` unless shut down first; true when shut down.
async fn wait(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
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
