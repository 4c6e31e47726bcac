//! Reorgs at or below the checkpoint: the canonical hashes the range sync handed on (a bounded
//! window, [`Recent`]), how one provider's contrary chain is put to the others before anything
//! is rewound ([`poll_height`]), and the walk back to the common ancestor ([`find_ancestor`]).
//!
//! Why a vote: a provider that is behind, or still on a branch the others have left, answers
//! with an older chain; rewinding on its word would retract canonical events and store them
//! again once it catches up (ponder#2221). A reorg counts once the providers that answer mostly
//! agree that the block handed on is gone.

use std::collections::VecDeque;

use super::RangeError;
use crate::domain::{BlockRef, ProviderIndex};
use crate::ingest::providers::ProviderSet;
use crate::provider::{Request, methods};
use crate::telemetry::metrics as m;
use alloy_primitives::B256;

/// Heights whose canonical hash the range sync keeps: the deepest reorg it can follow to its
/// common ancestor. Deeper than this, it re-backfills (40 bytes per height).
pub const WINDOW: usize = 2048;
/// How long a provider may take to vote.
const VOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Heights asked for per batch while walking back.
const WALK_CHUNK: u64 = 64;

/// The canonical hashes of the last [`WINDOW`] contiguous heights handed on, lowest first.
#[derive(Debug, Default)]
pub struct Recent {
    blocks: VecDeque<(u64, B256)>,
}

impl Recent {
    /// From stored `(height, hash)` pairs in ascending order: the contiguous run at the top, and
    /// nothing at a height stored twice (an old database's unresolved fork).
    pub fn from_stored(stored: &[(u64, B256)]) -> Recent {
        let mut recent = Recent::default();
        let mut i = 0;
        while i < stored.len() {
            let (n, hash) = stored[i];
            let twice = stored.get(i + 1).is_some_and(|(m, _)| *m == n);
            if twice {
                recent.blocks.clear();
                while stored.get(i).is_some_and(|(m, _)| *m == n) {
                    i += 1;
                }
                continue;
            }
            recent.push(n, hash);
            i += 1;
        }
        recent
    }

    /// Appends height `n`; a height that does not follow the last one starts a new run.
    pub fn push(&mut self, n: u64, hash: B256) {
        if self
            .blocks
            .back()
            .is_some_and(|(last, _)| last.checked_add(1) != Some(n))
        {
            self.blocks.clear();
        }
        self.blocks.push_back((n, hash));
        while self.blocks.len() > WINDOW {
            self.blocks.pop_front();
        }
    }

    pub fn hash_at(&self, n: u64) -> Option<B256> {
        let (first, _) = self.blocks.front()?;
        let i = usize::try_from(n.checked_sub(*first)?).ok()?;
        self.blocks.get(i).map(|(_, hash)| *hash)
    }

    /// Forgets every height above `n`.
    pub fn truncate_after(&mut self, n: u64) {
        while self.blocks.back().is_some_and(|(m, _)| *m > n) {
            self.blocks.pop_back();
        }
    }

    pub fn lowest(&self) -> Option<u64> {
        self.blocks.front().map(|(n, _)| *n)
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
    }
}

/// What the providers asked said about a height.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Votes {
    /// Providers whose block there is another than ours.
    pub moved: usize,
    /// Providers whose block there is ours.
    pub kept: usize,
    /// A provider that moved: where to walk back from.
    pub mover: Option<ProviderIndex>,
}

impl Votes {
    /// Whether the block handed on is gone: most providers that answered say so. `reporter`
    /// counts the provider whose chain raised the question (it left the block already).
    pub fn confirm(self, reporter: bool) -> bool {
        let moved = self.moved + usize::from(reporter);
        moved > 0 && moved > self.kept
    }
}

/// Asks every provider but `except` for its block at `n` (concurrently, one call each) and
/// counts who still has `ours`. A provider without the block, or failing, does not vote.
pub async fn poll_height(
    providers: &ProviderSet,
    n: u64,
    ours: B256,
    except: Option<ProviderIndex>,
) -> Votes {
    let Ok(request) = Request::block(n) else {
        return Votes::default();
    };
    let asked: Vec<_> = providers
        .all()
        .iter()
        .filter(|p| Some(p.index) != except)
        .collect();
    // Through each provider's breaker: an open one fails fast and abstains, as does one that
    // does not answer within VOTE_TIMEOUT.
    let answers = futures_util::future::join_all(
        asked
            .iter()
            .map(|p| tokio::time::timeout(VOTE_TIMEOUT, providers.call_one(p.index, &request))),
    )
    .await;
    let mut votes = Votes::default();
    for (provider, answer) in asked.iter().zip(answers) {
        let Some(head) = answer
            .ok()
            .and_then(Result::ok)
            .and_then(|raw| methods::read_block(&raw).ok().flatten())
        else {
            continue;
        };
        if head.block.number != n {
            continue;
        }
        if head.block.hash == ours {
            votes.kept += 1;
        } else {
            votes.moved += 1;
            votes.mover.get_or_insert(provider.index);
        }
    }
    votes
}

/// Where a walk back ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestor {
    /// The highest height at which the provider's chain and the one handed on agree.
    At(u64, B256),
    /// They agree nowhere in the window.
    TooDeep,
}

/// Walks down from `top`, asking the `start`-th provider first for blocks by number in batches,
/// to the highest height whose hash is the one handed on.
pub(super) async fn find_ancestor(
    providers: &ProviderSet,
    start: usize,
    recent: &Recent,
    top: u64,
) -> Result<Ancestor, RangeError> {
    let Some(lowest) = recent.lowest() else {
        return Ok(Ancestor::TooDeep);
    };
    let mut hi = top;
    while hi >= lowest {
        let lo = hi.saturating_sub(WALK_CHUNK - 1).max(lowest);
        let (_, answers) = providers
            .batch_from(start, None, 0, &Request::blocks(lo..=hi)?)
            .await?;
        let theirs = methods::read_blocks(lo, hi, &mut answers.into_iter())?;
        for head in theirs.into_iter().rev() {
            let BlockRef { number, hash, .. } = head.block;
            if recent.hash_at(number) == Some(hash) {
                return Ok(Ancestor::At(number, hash));
            }
        }
        if lo == 0 {
            break;
        }
        hi = lo - 1;
    }
    Ok(Ancestor::TooDeep)
}

/// The label of a reorg's depth on [`crate::telemetry::metrics::REORGS`].
pub fn depth_bucket(depth: u64) -> &'static str {
    let [one, few, some, many, deep] = m::REORG_DEPTH_BUCKETS;
    match depth {
        0..=1 => one,
        2..=4 => few,
        5..=16 => some,
        17..=64 => many,
        _ => deep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    #[test]
    fn recent_keeps_the_contiguous_top_run_within_the_window() {
        let stored = [(3, h(3)), (4, h(4)), (4, h(40)), (5, h(5)), (6, h(6))];
        let mut recent = Recent::from_stored(&stored);
        assert_eq!(
            recent.lowest(),
            Some(5),
            "a height stored twice cuts the run"
        );
        assert_eq!(recent.hash_at(6), Some(h(6)));
        assert_eq!(recent.hash_at(4), None);
        assert_eq!(recent.hash_at(7), None);
        recent.push(7, h(7));
        recent.truncate_after(5);
        assert_eq!((recent.hash_at(5), recent.hash_at(6)), (Some(h(5)), None));
        recent.push(9, h(9)); // a gap: a new run
        assert_eq!((recent.lowest(), recent.hash_at(5)), (Some(9), None));
        for n in 10..10 + WINDOW as u64 {
            recent.push(n, h(1));
        }
        assert_eq!(recent.lowest(), Some(10));
        assert_eq!(recent.blocks.len(), WINDOW);
    }

    #[test]
    fn a_reorg_needs_most_answering_providers() {
        let votes = |moved, kept| Votes {
            moved,
            kept,
            mover: None,
        };
        assert!(votes(0, 0).confirm(true), "a lone provider is believed");
        assert!(
            !votes(0, 1).confirm(true),
            "another keeps the block: lagging"
        );
        assert!(votes(1, 1).confirm(true));
        assert!(!votes(0, 0).confirm(false), "a hint nobody confirms");
        assert!(!votes(1, 1).confirm(false));
        assert!(votes(2, 1).confirm(false));
    }

    #[test]
    fn depth_buckets() {
        let labels: Vec<&str> = [1, 3, 12, 64, 65].map(depth_bucket).to_vec();
        assert_eq!(labels, ["1", "2-4", "5-16", "17-64", "65+"]);
    }
}
