//! The one chain every provider serves: its head, its high-water mark, its reorgs, and a
//! bounded cache of recent blocks in front of the pure generator in [`super::block`].
//!
//! Memory stays bounded for runs of any length: a block is never stored for good, only cached
//! (at most [`BLOCK_CACHE_CAPACITY`] recent blocks); anything older is regenerated on demand,
//! which gives the same bytes because block content is a pure function of its version, and
//! the canonical version of every height is arithmetic over the reorg schedule (see
//! [`super::schedule`]): automatic reorgs cost no memory, manual ones 8 bytes each, capped.
//!
//! Finality: no reorg ever rewrites a height at or below `high_water - safe depth` (the highest
//! `safe` block ever reported). Automatic reorgs stay above it by construction (the safe depth
//! is at least the reorg depth); manual ones are clamped to it.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};

use alloy_primitives::B256;
use lru::LruCache;
use tokio::sync::watch;

use super::block::{BlockData, ChainSpec, Orphan, Version};
use super::schedule::{self, Finality, ManualReorgs, Schedule};

/// Blocks kept in memory (~20 KiB each at 20 logs per block, JSON included).
pub(crate) const BLOCK_CACHE_CAPACITY: usize = 1024;

#[derive(Debug)]
struct ChainState {
    head: u64,
    /// The highest head ever reached: automatic reorgs fire on new heights only, and the
    /// finality floor is measured from here, so a manual rewind cannot lower it.
    high_water: u64,
    manual: ManualReorgs,
    /// Reorgs so far, automatic and manual.
    reorgs: u64,
}

/// Shared by the producer (the only writer besides [`Chain::rewind`]) and every request handler.
#[derive(Debug)]
pub(crate) struct Chain {
    spec: ChainSpec,
    schedule: Option<Schedule>,
    finality: Finality,
    /// A `std` lock: it is held for a few comparisons, never across an `.await`.
    state: RwLock<ChainState>,
    head_tx: watch::Sender<u64>,
    /// Recent blocks by height; an entry is only valid if its branch is still canonical.
    cache: Mutex<LruCache<u64, Arc<BlockData>>>,
}

/// What one step of the producer made.
#[derive(Debug)]
pub(crate) struct Advanced {
    /// The new head block.
    pub tip: Arc<BlockData>,
    /// `Some(depth)` when this step was an automatic reorg: `depth` blocks below the tip were
    /// replaced, and the new branch runs from `tip - depth` to the tip.
    pub reorg_depth: Option<u64>,
}

impl Chain {
    pub(crate) fn new(
        spec: ChainSpec,
        initial_head: u64,
        schedule: Option<Schedule>,
        finality: Finality,
    ) -> Self {
        let capacity = NonZeroUsize::new(BLOCK_CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            spec,
            schedule,
            finality,
            state: RwLock::new(ChainState {
                head: initial_head,
                high_water: initial_head,
                manual: ManualReorgs::default(),
                reorgs: 0,
            }),
            head_tx: watch::channel(initial_head).0,
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// A chain without automatic reorgs and default tag depths (unit tests).
    #[cfg(test)]
    pub(crate) fn plain(spec: ChainSpec, initial_head: u64) -> Self {
        Self::new(spec, initial_head, None, Finality::for_reorg_depth(0))
    }

    pub(crate) fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub(crate) fn finality(&self) -> Finality {
        self.finality
    }

    pub(crate) fn head(&self) -> u64 {
        self.read().head
    }

    /// Reorgs so far, automatic and manual (clamped-away ones are not counted).
    pub(crate) fn reorgs(&self) -> u64 {
        self.read().reorgs
    }

    /// Heights at or below this never change again.
    pub(crate) fn settled(&self) -> u64 {
        self.finality.safe_head(self.read().high_water)
    }

    /// Watches the head number (for `wait_for_head`).
    pub(crate) fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The canonical block at height `n`, or `None` above the head.
    pub(crate) fn block(&self, n: u64) -> Option<Arc<BlockData>> {
        let version = {
            let state = self.read();
            if n > state.head {
                return None;
            }
            self.version_at(&state, n)
        };
        Some(self.version(&version))
    }

    /// The canonical block with this hash, or `None` (unknown, above the head, or orphaned).
    pub(crate) fn block_by_hash(&self, hash: B256) -> Option<Arc<BlockData>> {
        let (n, branch) = ChainSpec::decode_hash(&hash);
        let block = self.block(n)?;
        (block.branch == branch && block.hash() == hash).then_some(block)
    }

    /// Whether `block` (one this chain generated) is still canonical. Cheap: no hashing.
    pub(crate) fn is_canonical(&self, block: &BlockData) -> bool {
        let state = self.read();
        let n = block.number();
        n <= state.head && self.branch_at(&state, n) == block.branch
    }

    /// Appends one block, or on a reorg point replaces the blocks below it as well, and
    /// returns the new head block. The JSON of every new block is rendered here: the producer
    /// is about to send them everywhere, and this keeps that work off the connections.
    pub(crate) fn advance(&self) -> Advanced {
        let (below, top, reorg_depth) = {
            let mut state = self.write();
            state.head += 1;
            let n = state.head;
            let mut first = n;
            if n > state.high_water {
                state.high_water = n;
                if let Some(schedule) = self.schedule
                    && schedule.is_point(n)
                {
                    first = schedule.first_rewritten(n).min(n);
                }
            }
            let reorg_depth = (first < n).then_some(n - first);
            if reorg_depth.is_some() {
                state.reorgs += 1;
            }
            let below: Vec<Version> = (first..n).map(|h| self.version_at(&state, h)).collect();
            (below, self.version_at(&state, n), reorg_depth)
        };
        for version in &below {
            self.version(version).json();
        }
        let tip = self.version(&top);
        tip.json();
        self.head_tx.send_replace(tip.number());
        Advanced { tip, reorg_depth }
    }

    /// Rewinds the head by `depth` blocks; the heights above the new head will be regrown as a
    /// new branch. The depth is clamped so that genesis and every height that was ever `safe`
    /// keep their block. Returns the new head.
    pub(crate) fn rewind(&self, depth: u64) -> u64 {
        let head = {
            let mut state = self.write();
            let floor = self.finality.safe_head(state.high_water);
            let depth = depth.min(state.head.saturating_sub(floor)).min(state.head);
            if depth == 0 {
                return state.head;
            }
            let first_rewritten = state.head - depth + 1;
            if !state.manual.push(first_rewritten) {
                tracing::warn!(
                    limit = schedule::MAX_MANUAL_REORGS,
                    "devnet: too many manual reorgs; this one is ignored"
                );
                return state.head;
            }
            state.head -= depth;
            state.reorgs += 1;
            state.head
        };
        self.head_tx.send_replace(head);
        head
    }

    /// The canonical branch of height `n` (which must be at most the head).
    fn branch_at(&self, state: &ChainState, n: u64) -> u32 {
        let auto = self.schedule.map_or(0, |s| s.pending(n, state.high_water));
        schedule::encode(state.manual.count_at(n), auto)
    }

    /// What the canonical version of height `n` is made of.
    fn version_at(&self, state: &ChainState, n: u64) -> Version {
        let branch = self.branch_at(state, n);
        let parent_branch = n.checked_sub(1).map_or(0, |p| self.branch_at(state, p));
        let per_block = self.spec.logs_per_block();
        let Some(schedule) = self.schedule else {
            return Version::plain(n, branch, parent_branch, per_block);
        };
        // A version made by a reorg re-includes transactions of the version it replaced (it
        // has a later one: fewer reorgs pending than the height started with) and, as does the
        // new head a reorg produces, of its orphaned parent. It then makes fewer new ones, so
        // blocks keep about `logs_per_block` logs. Versions that never existed may be asked
        // for as orphans (below a reorg window, or after a manual reorg): they are just content.
        let carries = |n: u64, auto: u64| auto < schedule.initial(n) || schedule.is_point(n);
        let own = |n: u64, auto: u64| {
            if carries(n, auto) {
                per_block.div_ceil(3)
            } else {
                per_block
            }
        };
        let (manual, auto) = schedule::decode(branch);
        let stay_from = (auto < schedule.initial(n)).then(|| Orphan {
            branch: schedule::encode(manual, auto + 1),
            own_logs: own(n, auto + 1),
        });
        let move_from = (n >= 2 && carries(n, auto)).then(|| {
            let (parent_manual, parent_auto) = schedule::decode(parent_branch);
            Orphan {
                branch: schedule::encode(parent_manual, parent_auto + 1),
                own_logs: own(n - 1, parent_auto + 1),
            }
        });
        Version {
            n,
            branch,
            parent_branch,
            own_logs: own(n, auto),
            stay_from,
            move_from,
        }
    }

    fn version(&self, version: &Version) -> Arc<BlockData> {
        let n = version.n;
        if let Some(hit) = self.lock_cache().get(&n)
            && hit.branch == version.branch
        {
            return Arc::clone(hit);
        }
        let block = Arc::new(self.spec.generate(version));
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::devnet::block::Fate;

    fn chain(initial: u64) -> Chain {
        Chain::plain(ChainSpec::new(1, 31337, 4), initial)
    }

    fn auto_chain(initial: u64, every: u64, depth: u64, logs: usize) -> Chain {
        Chain::new(
            ChainSpec::new(1, 31337, logs),
            initial,
            Schedule::new(initial, Some(every), depth),
            Finality::for_reorg_depth(depth),
        )
    }

    fn hashes(chain: &Chain) -> Vec<B256> {
        blocks(chain).iter().map(|b| b.hash()).collect()
    }

    fn blocks(chain: &Chain) -> Vec<Arc<BlockData>> {
        (0..=chain.head())
            .map(|n| chain.block(n).unwrap())
            .collect()
    }

    #[test]
    fn advance_links_blocks_and_hashes_resolve() {
        let chain = chain(0);
        let genesis = chain.block(0).unwrap();
        let one = chain.advance();
        assert_eq!(one.reorg_depth, None);
        let one = one.tip;
        assert_eq!(one.number(), 1);
        assert_eq!(one.header.inner.parent_hash, genesis.hash());
        assert!(chain.block(2).is_none(), "nothing above the head");
        assert_eq!(chain.block_by_hash(one.hash()).unwrap().number(), 1);
        assert!(chain.block_by_hash(B256::repeat_byte(7)).is_none());
        assert!(chain.is_canonical(&one));
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
        let before = hashes(&chain);
        let orphan = chain.block(9).unwrap();
        assert_eq!(chain.rewind(3), 7);
        assert_eq!(chain.reorgs(), 1);
        assert!(chain.block(8).is_none());
        assert!(!chain.is_canonical(&orphan));
        let regrown: Vec<_> = (0..3).map(|_| chain.advance().tip).collect();
        assert_eq!(
            regrown[0].header.inner.parent_hash, before[7],
            "fork point kept"
        );
        for (i, block) in regrown.iter().enumerate() {
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
    fn manual_rewinds_never_touch_safe_blocks() {
        let chain = chain(100);
        let safe = chain.finality().safe_head(100);
        assert_eq!(chain.rewind(1_000), safe, "clamped to the safe block");
        assert_eq!(chain.rewind(5), safe, "nothing left to rewind");
        assert_eq!(chain.reorgs(), 1);
        assert_eq!(chain.settled(), safe);
        let tiny = Chain::plain(ChainSpec::new(1, 1, 1), 3);
        assert_eq!(tiny.rewind(10), 0, "genesis stays");
        assert_eq!(tiny.block(0).unwrap().number(), 0);
    }

    #[test]
    fn automatic_reorgs_replace_the_blocks_below_each_point() {
        let chain = auto_chain(20, 5, 3, 30);
        let mut seen: HashMap<B256, u64> = HashMap::new();
        let mut orphaned: Vec<B256> = Vec::new();
        let mut previous = blocks(&chain);
        let (mut moved, mut vanished) = (0, 0);
        for step in 1..=40u64 {
            let advanced = chain.advance();
            let tip = advanced.tip.number();
            assert_eq!(tip, 20 + step, "the head moves one per step");
            assert_eq!(
                advanced.reorg_depth,
                step.is_multiple_of(5).then_some(3),
                "step {step}"
            );
            let now = blocks(&chain);
            for n in 1..=tip {
                let block = chain.block(n).unwrap();
                assert_eq!(block.header.inner.parent_hash, now[n as usize - 1].hash());
            }
            for (n, (old, new)) in previous.iter().zip(&now).enumerate() {
                if old.hash() != new.hash() {
                    assert!(advanced.reorg_depth.is_some());
                    assert!(n as u64 >= tip - 3, "only the window changes");
                    orphaned.push(old.hash());
                }
            }
            for (n, block) in now.iter().enumerate() {
                let hash = block.hash();
                assert!(!orphaned.contains(&hash), "an orphaned hash never returns");
                assert_eq!(*seen.entry(hash).or_insert(n as u64), n as u64);
            }
            if advanced.reorg_depth.is_some() {
                let old_txs: Vec<B256> = (tip - 3..tip)
                    .flat_map(|n| previous[n as usize].tx_hashes.clone())
                    .collect();
                let new_txs: Vec<(u64, B256)> = (tip - 3..=tip)
                    .flat_map(|n| {
                        let block = chain.block(n).unwrap();
                        block.tx_hashes.iter().map(|h| (n, *h)).collect::<Vec<_>>()
                    })
                    .collect();
                for tx in old_txs {
                    match new_txs.iter().find(|(_, h)| *h == tx) {
                        None => vanished += 1,
                        Some(_) if Fate::of(tx) == Fate::Move => moved += 1,
                        Some(_) => assert_eq!(Fate::of(tx), Fate::Stay),
                    }
                }
            }
            previous = now;
        }
        assert!(
            moved > 0 && vanished > 0,
            "moved {moved}, vanished {vanished}"
        );
        assert_eq!(chain.reorgs(), 8);
    }

    #[test]
    fn deep_reorgs_keep_finalized_blocks_and_clamp_at_genesis() {
        let chain = auto_chain(0, 10, 64, 2);
        let mut finalized: HashMap<u64, B256> = HashMap::new();
        for _ in 0..300 {
            let advanced = chain.advance();
            let tip = advanced.tip.number();
            if let Some(depth) = advanced.reorg_depth {
                assert_eq!(depth, (tip - 1).min(64), "clamped above genesis only");
            }
            for n in 0..=chain.finality().finalized_head(tip) {
                let hash = chain.block(n).unwrap().hash();
                assert_eq!(*finalized.entry(n).or_insert(hash), hash, "height {n}");
            }
        }
        assert_eq!(chain.reorgs(), 30);
    }
}
