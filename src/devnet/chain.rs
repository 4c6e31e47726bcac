//! The one chain every provider serves: its head, its reorg history, and a bounded cache of
//! recent blocks in front of the pure generator in [`super::block`].
//!
//! Memory stays bounded for runs of any length: a block is never stored for good, only cached
//! (at most [`BLOCK_CACHE_CAPACITY`] recent blocks); anything older is regenerated on demand,
//! which gives the same bytes because block content is a pure function of
//! `(seed, chain_id, n, branch)`. The reorg history costs 8 bytes per reorg.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};

use alloy_primitives::B256;
use lru::LruCache;
use tokio::sync::watch;

use super::block::{BlockData, ChainSpec};

/// Blocks kept in memory (~20 KiB each at 20 logs per block, JSON included).
pub(crate) const BLOCK_CACHE_CAPACITY: usize = 1024;

/// How far below the head the `safe` tag points.
pub const SAFE_DEPTH: u64 = 16;
/// How far below the head the `finalized` tag points.
pub const FINALIZED_DEPTH: u64 = 32;

/// Which version ("branch") of each height is canonical, from the list of reorgs.
///
/// A reorg that rewinds to height `f - 1` rewrites every height `>= f`; so the branch of height
/// `n` is the number of reorgs whose first rewritten height is `<= n`. Each version of a height
/// thus has its own branch number, and the canonical one is always the largest.
#[derive(Debug, Default, Clone)]
pub(crate) struct ForkHistory {
    /// First rewritten height of each reorg, oldest first.
    in_order: Vec<u64>,
    /// The same heights sorted, for `O(log r)` branch lookups.
    sorted: Vec<u64>,
}

impl ForkHistory {
    /// The canonical branch of height `n`.
    pub(crate) fn branch_at(&self, n: u64) -> u32 {
        let count = self.sorted.partition_point(|&f| f <= n);
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The branch of the parent of version `branch` of height `n`: what height `n - 1` was when
    /// that version was made. For the canonical version it is simply the parent's canonical
    /// branch; for an orphaned one the history is replayed (rare: only old hashes ask for it).
    pub(crate) fn parent_branch(&self, n: u64, branch: u32) -> u32 {
        let Some(parent) = n.checked_sub(1) else {
            return 0;
        };
        if branch == self.branch_at(n) {
            return self.branch_at(parent);
        }
        let (mut at_n, mut at_parent) = (0u32, 0u32);
        for &fork in &self.in_order {
            if at_n == branch {
                break;
            }
            at_n += u32::from(fork <= n);
            at_parent += u32::from(fork <= parent);
        }
        at_parent
    }

    /// Records a reorg whose first rewritten height is `first_rewritten`.
    pub(crate) fn push(&mut self, first_rewritten: u64) {
        self.in_order.push(first_rewritten);
        let at = self.sorted.partition_point(|&f| f <= first_rewritten);
        self.sorted.insert(at, first_rewritten);
    }
}

#[derive(Debug)]
struct ChainState {
    head: u64,
    forks: ForkHistory,
}

/// Shared by the producer (the only writer besides [`Chain::rewind`]) and every request handler.
#[derive(Debug)]
pub(crate) struct Chain {
    spec: ChainSpec,
    /// A `std` lock: it is held for a few comparisons, never across an `.await`.
    state: RwLock<ChainState>,
    head_tx: watch::Sender<u64>,
    /// Recent blocks by height; an entry is only valid if its branch is still canonical.
    cache: Mutex<LruCache<u64, Arc<BlockData>>>,
}

impl Chain {
    pub(crate) fn new(spec: ChainSpec, initial_head: u64) -> Self {
        let capacity = NonZeroUsize::new(BLOCK_CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            spec,
            state: RwLock::new(ChainState {
                head: initial_head,
                forks: ForkHistory::default(),
            }),
            head_tx: watch::channel(initial_head).0,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub(crate) fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub(crate) fn head(&self) -> u64 {
        self.read().head
    }

    /// Watches the head number (for `wait_for_head`).
    pub(crate) fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The canonical block at height `n`, or `None` above the head.
    pub(crate) fn block(&self, n: u64) -> Option<Arc<BlockData>> {
        let (branch, parent_branch) = {
            let state = self.read();
            if n > state.head {
                return None;
            }
            let branch = state.forks.branch_at(n);
            (branch, state.forks.parent_branch(n, branch))
        };
        Some(self.version(n, branch, parent_branch))
    }

    /// The canonical block with this hash, or `None` (unknown, above the head, or orphaned).
    pub(crate) fn block_by_hash(&self, hash: B256) -> Option<Arc<BlockData>> {
        let (n, branch) = ChainSpec::decode_hash(&hash);
        let block = self.block(n)?;
        (block.branch == branch && block.hash() == hash).then_some(block)
    }

    /// Appends one block and returns it, JSON already rendered (the producer is about to send
    /// it everywhere; rendering here keeps that work off the connections).
    pub(crate) fn advance(&self) -> Arc<BlockData> {
        let (n, branch, parent_branch) = {
            let mut state = self.write();
            state.head += 1;
            let n = state.head;
            let branch = state.forks.branch_at(n);
            (n, branch, state.forks.parent_branch(n, branch))
        };
        let block = self.version(n, branch, parent_branch);
        block.json();
        self.head_tx.send_replace(n);
        block
    }

    /// Rewinds the head by `depth` blocks (never past genesis); the heights above the new head
    /// will be regrown as a new branch. Returns the new head.
    pub(crate) fn rewind(&self, depth: u64) -> u64 {
        let head = {
            let mut state = self.write();
            let depth = depth.min(state.head);
            if depth == 0 {
                return state.head;
            }
            let first_rewritten = state.head - depth + 1;
            state.forks.push(first_rewritten);
            state.head -= depth;
            state.head
        };
        self.head_tx.send_replace(head);
        head
    }

    fn version(&self, n: u64, branch: u32, parent_branch: u32) -> Arc<BlockData> {
        if let Some(hit) = self.lock_cache().get(&n)
            && hit.branch == branch
        {
            return Arc::clone(hit);
        }
        let block = Arc::new(self.spec.generate(n, branch, parent_branch));
        // Only recent heights are cached, so one wide `eth_getLogs` over old history cannot
        // evict the blocks that subscribers and tip-followers are reading.
        if n + BLOCK_CACHE_CAPACITY as u64 > self.head() {
            self.lock_cache().put(n, Arc::clone(&block));
        }
        block
    }

    // A panic while holding these locks can only come from a bug in this file; recovering the
    // guard keeps the devnet serving instead of cascading the panic into every connection.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ChainState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ChainState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<BlockData>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the block tags mean for a given head.
pub(crate) fn safe_head(head: u64) -> u64 {
    head.saturating_sub(SAFE_DEPTH)
}

pub(crate) fn finalized_head(head: u64) -> u64 {
    head.saturating_sub(FINALIZED_DEPTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(initial: u64) -> Chain {
        Chain::new(ChainSpec::new(1, 31337, 4), initial)
    }

    #[test]
    fn advance_links_blocks_and_hashes_resolve() {
        let chain = chain(0);
        let genesis = chain.block(0).unwrap();
        let one = chain.advance();
        assert_eq!(one.number(), 1);
        assert_eq!(one.header.inner.parent_hash, genesis.hash());
        assert!(chain.block(2).is_none(), "nothing above the head");
        assert_eq!(chain.block_by_hash(one.hash()).unwrap().number(), 1);
        assert!(chain.block_by_hash(B256::repeat_byte(7)).is_none());
    }

    #[test]
    fn old_blocks_regenerate_identically() {
        let chain = chain(5_000);
        let old = chain.block(10).unwrap();
        for n in 4_000..5_000 {
            chain.block(n);
        }
        let again = chain.block(10).unwrap();
        assert_eq!(old.json().block, again.json().block);
        assert!(chain.lock_cache().len() <= BLOCK_CACHE_CAPACITY);
    }

    #[test]
    fn rewind_regrows_a_new_branch_that_links() {
        let chain = chain(10);
        let before: Vec<_> = (0..=10).map(|n| chain.block(n).unwrap().hash()).collect();
        assert_eq!(chain.rewind(3), 7);
        assert!(chain.block(8).is_none());
        let regrown: Vec<_> = (0..3).map(|_| chain.advance()).collect();
        assert_eq!(
            regrown[0].header.inner.parent_hash, before[7],
            "fork point kept"
        );
        for (i, block) in regrown.iter().enumerate() {
            assert_eq!(block.branch, 1);
            assert_ne!(block.hash(), before[8 + i], "height {} changed", 8 + i);
        }
        assert_eq!(regrown[1].header.inner.parent_hash, regrown[0].hash());
        assert!(
            chain.block_by_hash(before[9]).is_none(),
            "orphaned hash is not canonical"
        );
        assert_eq!(chain.block(7).unwrap().hash(), before[7]);
    }

    #[test]
    fn fork_history_tracks_branches_and_orphan_parents() {
        let mut forks = ForkHistory::default();
        forks.push(10); // rewrite 10..
        forks.push(12); // rewrite 12..
        forks.push(8); // rewrite 8..
        assert_eq!(forks.branch_at(7), 0);
        assert_eq!(forks.branch_at(9), 1);
        assert_eq!(forks.branch_at(11), 2);
        assert_eq!(forks.branch_at(12), 3);
        // Version 1 of height 12 was made after the first reorg: its parent 11 was on branch 1.
        assert_eq!(forks.parent_branch(12, 1), 1);
        // Version 2 of height 12 (after the second reorg, which kept 11): parent still branch 1.
        assert_eq!(forks.parent_branch(12, 2), 1);
        // Version 1 of height 10: parent 9 untouched by the first reorg.
        assert_eq!(forks.parent_branch(10, 1), 0);
        // Canonical versions follow the canonical parent.
        assert_eq!(forks.parent_branch(12, 3), 2);
        assert_eq!(forks.parent_branch(0, 0), 0);
    }

    #[test]
    fn tags_saturate() {
        assert_eq!(safe_head(5), 0);
        assert_eq!(finalized_head(100), 68);
    }
}
