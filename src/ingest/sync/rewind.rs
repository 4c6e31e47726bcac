//! Where the range sync stands ([`Position`]: the next height to hand on, the hash it must
//! extend, the canonical hashes handed on) and how a suspected reorg moves it back
//! ([`Rewind`]): a range that leaves the checkpoint or a hint is put to the providers' vote,
//! and once confirmed the sync walks back to the common ancestor (see [`super::reorg`]).

use alloy_primitives::B256;

use super::reorg::{self, Ancestor, Recent};
use super::{Failed, RangeError, RangeSync};
use crate::domain::BlockRef;
use crate::domain::ProviderIndex;
use crate::ingest::RangeData;
use crate::telemetry::metrics as m;

/// What to do about a suspected reorg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rewind {
    /// Re-read from the block after this common ancestor.
    To(u64, B256),
    /// No common ancestor in the window: re-read from this height, unlinked.
    Rebackfill(u64),
    /// Not confirmed (or nothing to do): carry on.
    No,
}

/// What has been handed on to the aggregator.
#[derive(Debug)]
pub(super) struct Position {
    /// The first height not handed on yet; `None` until a chain without a checkpoint knows
    /// where to start.
    next: Option<u64>,
    /// The hash of the last block handed on: the next range must extend it.
    parent: Option<B256>,
    recent: Recent,
}

impl Position {
    /// From the stored checkpoint and the canonical hashes stored up to it (ascending).
    pub fn new(checkpoint: Option<BlockRef>, stored: &[(u64, B256)]) -> Position {
        let mut recent = Recent::from_stored(stored);
        if let Some(cp) = checkpoint
            && recent.hash_at(cp.number) != Some(cp.hash)
        {
            recent.push(cp.number, cp.hash);
        }
        Position {
            next: checkpoint.map(|cp| cp.number + 1),
            parent: checkpoint.map(|cp| cp.hash),
            recent,
        }
    }

    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// The last height handed on.
    pub fn checkpoint(&self) -> Option<u64> {
        self.next?.checked_sub(1)
    }

    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// A chain without a checkpoint starts at `n`.
    pub fn start_at(&mut self, n: u64) {
        self.next = Some(n);
    }

    /// `range` if it extends the last block handed on; a fork of its provider's otherwise.
    pub fn extends(&self, range: RangeData) -> Result<RangeData, Failed> {
        match self.parent {
            Some(hash) if range.heads.first().map(|h| h.block.parent_hash) != Some(hash) => {
                Err(Failed {
                    error: RangeError::Fork {
                        provider: range.provider,
                    },
                    provider: Some(range.provider),
                })
            }
            _ => Ok(range),
        }
    }

    /// `range` is handed on: its hashes are kept and the next range must extend it.
    pub fn hand_on(&mut self, range: &RangeData) {
        for (n, hash) in (range.first..).zip(&range.hashes) {
            self.recent.push(n, *hash);
        }
        self.next = Some(range.last.number + 1);
        self.parent = Some(range.last.hash);
    }

    /// Moves back as `rewind` says; the first height to read again, if it moved.
    pub fn apply(&mut self, rewind: Rewind) -> Option<u64> {
        match rewind {
            Rewind::To(n, hash) => {
                self.recent.truncate_after(n);
                self.next = Some(n + 1);
                self.parent = Some(hash);
            }
            Rewind::Rebackfill(from) => {
                self.recent.clear();
                self.next = Some(from);
                self.parent = None;
            }
            Rewind::No => return None,
        }
        self.next
    }
}

impl RangeSync {
    /// `provider`'s range does not extend `top`, the last height handed on: a reorg once the
    /// other providers confirm it.
    pub(super) async fn on_fork(
        &self,
        recent: &Recent,
        top: u64,
        provider: ProviderIndex,
    ) -> Rewind {
        let Some(ours) = recent.hash_at(top) else {
            // Nothing kept to compare with: the walk finds no ancestor and re-backfills.
            return self.walk_back(recent, top, Some(provider)).await;
        };
        let votes = reorg::poll_height(&self.providers, top, ours, Some(provider)).await;
        if votes.confirm(true) {
            return self.walk_back(recent, top, Some(provider)).await;
        }
        metrics::counter!(m::REORGS_UNCONFIRMED, "chain" => self.chain.to_string()).increment(1);
        tracing::warn!(chain = %self.chain, provider = %self.providers.id(provider), at = top, kept = votes.kept, moved = votes.moved + 1, "a provider's chain leaves the checkpoint but the others keep it: lagging, not a reorg");
        Rewind::No
    }

    /// A hint that height `at` was reorganised: the providers vote on the block handed on
    /// there.
    pub(super) async fn check_hint(&self, position: &Position, at: u64) -> Rewind {
        let Some(top) = position.checkpoint().filter(|top| at <= *top) else {
            return Rewind::No; // above what was handed on: the next range covers it
        };
        let Some(ours) = position.recent.hash_at(at) else {
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
        self.walk_back(&position.recent, top, votes.mover).await
    }

    /// Whether most providers answering have another block at `head` than the one handed on
    /// there; false when nothing kept there to compare with.
    pub(super) async fn serves_another_chain(&self, recent: &Recent, head: u64) -> bool {
        let Some(ours) = recent.hash_at(head) else {
            return false;
        };
        let votes = reorg::poll_height(&self.providers, head, ours, None).await;
        votes.moved > votes.kept
    }

    fn note_reorg(&self, depth: u64, ancestor: u64, too_deep: bool) {
        use crate::breaker::Clock;
        self.reorgs.push(super::ReorgNote {
            depth,
            ancestor,
            too_deep,
            at_ms: crate::breaker::SystemClock.wall_ms(),
        });
    }

    /// A confirmed fork below `top` (the last height handed on): walks back from `from`'s chain
    /// to the common ancestor. A failed walk is `No`: the next range or hint tries again.
    async fn walk_back(&self, recent: &Recent, top: u64, from: Option<ProviderIndex>) -> Rewind {
        let start = from
            .and_then(|p| self.providers.all().iter().position(|c| c.index == p))
            .unwrap_or(0);
        let provider = from.map_or("any", |p| self.providers.id(p));
        match reorg::find_ancestor(&self.providers, start, recent, top).await {
            Ok(Ancestor::At(n, _)) if n >= top => Rewind::No, // it moved again meanwhile
            Ok(Ancestor::At(n, hash)) => {
                let depth = top - n;
                metrics::counter!(m::REORGS, "chain" => self.chain.to_string(), "depth" => reorg::depth_bucket(depth)).increment(1);
                self.note_reorg(depth, n, false);
                tracing::warn!(chain = %self.chain, provider, depth, ancestor = n, "reorg below the checkpoint: re-reading from the common ancestor");
                Rewind::To(n, hash)
            }
            Ok(Ancestor::TooDeep) => {
                let from = self.start_block.or(recent.lowest()).unwrap_or(0);
                metrics::counter!(m::REORGS_TOO_DEEP, "chain" => self.chain.to_string())
                    .increment(1);
                self.note_reorg(reorg::WINDOW as u64, from, true);
                tracing::error!(chain = %self.chain, provider, at = top, window = reorg::WINDOW, from, "reorg deeper than the kept window: re-backfilling");
                Rewind::Rebackfill(from)
            }
            Err(err) => {
                tracing::warn!(chain = %self.chain, provider, error = %err, "walking back to the common ancestor failed; retrying");
                Rewind::No
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::decode::Head;

    fn h(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    fn range(first: u64, parent: B256, hashes: &[B256]) -> RangeData {
        let mut parent_hash = parent;
        let heads: Vec<Head> = (first..)
            .zip(hashes)
            .map(|(number, hash)| {
                let block = BlockRef {
                    number,
                    hash: *hash,
                    parent_hash,
                };
                parent_hash = *hash;
                Head {
                    block,
                    timestamp: 0,
                    logs_bloom: Default::default(),
                }
            })
            .collect();
        RangeData {
            provider: 1,
            last: heads.last().map(|h| h.block).expect("a block"),
            heads,
            logs: Vec::new(),
            first,
            hashes: hashes.to_vec(),
            safe: None,
            finalized: None,
            bytes: 0,
        }
    }

    #[test]
    fn ranges_must_extend_what_was_handed_on_and_rewinds_move_back() {
        let checkpoint = BlockRef {
            number: 9,
            hash: h(9),
            parent_hash: h(8),
        };
        let mut position = Position::new(Some(checkpoint), &[(8, h(8))]);
        assert_eq!(
            (position.next(), position.checkpoint()),
            (Some(10), Some(9))
        );
        assert_eq!(
            position.recent().hash_at(9),
            Some(h(9)),
            "the checkpoint is kept"
        );

        let fork = position.extends(range(10, h(99), &[h(10)]));
        assert!(matches!(
            fork,
            Err(Failed {
                error: RangeError::Fork { provider: 1 },
                provider: Some(1)
            })
        ));
        let ok = position
            .extends(range(10, h(9), &[h(10), h(11)]))
            .expect("extends");
        position.hand_on(&ok);
        assert_eq!(position.next(), Some(12));
        assert!(position.extends(range(12, h(11), &[h(12)])).is_ok());

        assert_eq!(position.apply(Rewind::No), None);
        assert_eq!(position.apply(Rewind::To(10, h(10))), Some(11));
        assert_eq!(position.recent().hash_at(11), None);
        assert!(position.extends(range(11, h(10), &[h(12)])).is_ok());
        assert_eq!(position.apply(Rewind::Rebackfill(0)), Some(0));
        assert_eq!(position.recent().lowest(), None);
        assert!(
            position.extends(range(0, h(77), &[h(1)])).is_ok(),
            "a re-backfill is unlinked"
        );

        let mut fresh = Position::new(None, &[]);
        assert_eq!((fresh.next(), fresh.checkpoint()), (None, None));
        fresh.start_at(0);
        assert_eq!((fresh.next(), fresh.checkpoint()), (Some(0), None));
    }
}
