//! One connection's position in the chain: the next height to deliver and the recent blocks it
//! delivered, from which it tells when a reorg orphaned some of them.
//!
//! A connection does not deliver the blocks the producer hands it; a notice only says "the head
//! is now here". The feed reads the blocks up to that head (minus a lag fault) from the chain,
//! so whatever the connection skipped or held back, it catches up on in chain order, and an
//! automatic reorg — which replaces several blocks in one producer step — always arrives whole,
//! from the block after the common ancestor on.
//!
//! Reorg detection needs no message from the producer: if the newest delivered block is no
//! longer canonical, it and its successors were orphaned (versions never come back, see
//! `schedule`), so the feed pops them and delivers the new branch from the lowest of them.
//! Only blocks above the chain's settled height can be orphaned, so that is all it keeps.

use std::collections::VecDeque;
use std::sync::Arc;

use super::block::BlockData;
use super::chain::Chain;
use super::schedule::MAX_REORG_DEPTH;

/// Most blocks one step delivers: a whole automatic reorg fits, and a connection catching up
/// from far behind (a lifted lag) writes in slices rather than holding hundreds of blocks.
const MAX_BLOCKS_PER_STEP: usize = 64;
/// Most delivered blocks remembered, whatever the settled height says (belt and braces).
const MAX_REMEMBERED: usize = MAX_REORG_DEPTH as usize + 2;

/// What to send for one step: removals first, then the blocks.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Delivered blocks a reorg orphaned, newest first.
    pub orphaned: Vec<Arc<BlockData>>,
    /// Blocks to deliver, in chain order, each the child of the one before.
    pub blocks: Vec<Arc<BlockData>>,
}

impl Step {
    pub(crate) fn is_empty(&self) -> bool {
        self.orphaned.is_empty() && self.blocks.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// The next height to deliver; `None` while the connection has no subscription.
    next: Option<u64>,
    /// Recently delivered blocks, oldest first, each the parent of the next (gaps allowed
    /// after a stall).
    delivered: VecDeque<Arc<BlockData>>,
}

impl Feed {
    /// Keeps the feed in step with the connection's subscriptions: it starts at the first
    /// block a new subscription may see, and forgets everything once none are left.
    pub(crate) fn follow(&mut self, first_block: Option<u64>) {
        match (self.next, first_block) {
            (_, None) => {
                self.next = None;
                self.delivered.clear();
            }
            (None, Some(first)) => self.next = Some(first),
            (Some(_), Some(_)) => {}
        }
    }

    /// Skips to past `target` without delivering (a stalled provider loses what it skipped).
    pub(crate) fn skip_to(&mut self, target: u64) {
        if let Some(next) = &mut self.next {
            *next = (*next).max(target.saturating_add(1));
        }
    }

    /// The next step towards `target`; empty once there. `hint` is the block the producer
    /// announced, used as is when it is the one due (no chain lookup).
    pub(crate) fn step(&mut self, chain: &Chain, target: u64, hint: &Arc<BlockData>) -> Step {
        let mut step = Step::default();
        let Some(mut next) = self.next else {
            return step;
        };
        while let Some(top) = self.delivered.back() {
            if chain.is_canonical(top) {
                break;
            }
            step.orphaned.extend(self.delivered.pop_back());
        }
        if let Some(lowest) = step.orphaned.last() {
            next = next.min(lowest.number());
        }
        while next <= target && step.blocks.len() < MAX_BLOCKS_PER_STEP {
            let block = if hint.number() == next && chain.is_canonical(hint) {
                Arc::clone(hint)
            } else {
                match chain.block(next) {
                    Some(block) => block,
                    None => break,
                }
            };
            // A reorg between two reads: stop here; the notice that follows every chain change
            // finds the orphans and resumes.
            let parent = step.blocks.last().or(self.delivered.back());
            if let Some(parent) = parent
                && parent.number() + 1 == next
                && parent.hash() != block.header.inner.parent_hash
            {
                break;
            }
            step.blocks.push(block);
            next += 1;
        }
        self.next = Some(next);
        self.delivered.extend(step.blocks.iter().cloned());
        let settled = chain.settled();
        while self.delivered.len() > 1
            && self
                .delivered
                .front()
                .is_some_and(|b| b.number() <= settled || self.delivered.len() > MAX_REMEMBERED)
        {
            self.delivered.pop_front();
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::block::ChainSpec;
    use crate::devnet::schedule::{Finality, Schedule};

    fn numbers(blocks: &[Arc<BlockData>]) -> Vec<u64> {
        blocks.iter().map(|b| b.number()).collect()
    }

    #[test]
    fn follows_the_head_and_catches_up_in_slices() {
        let chain = Chain::plain(ChainSpec::new(1, 1, 1), 10);
        let mut feed = Feed::default();
        let tip = chain.block(10).unwrap();
        assert!(
            feed.step(&chain, 10, &tip).is_empty(),
            "no subscription yet"
        );
        feed.follow(Some(11));
        let tip = chain.advance().tip;
        assert_eq!(numbers(&feed.step(&chain, 11, &tip).blocks), [11]);
        for _ in 0..100 {
            chain.advance();
        }
        let tip = chain.block(111).unwrap();
        assert_eq!(
            feed.step(&chain, 111, &tip).blocks.len(),
            MAX_BLOCKS_PER_STEP
        );
        assert_eq!(
            numbers(&feed.step(&chain, 111, &tip).blocks),
            (76..=111).collect::<Vec<_>>()
        );
        assert!(feed.step(&chain, 111, &tip).is_empty());
        assert!(feed.delivered.len() <= 18, "only unsettled blocks are kept");
        feed.skip_to(200);
        feed.follow(None);
        assert!(feed.step(&chain, 300, &tip).is_empty());
    }

    #[test]
    fn a_reorg_yields_the_orphans_then_the_new_branch() {
        let chain = Chain::new(
            ChainSpec::new(1, 1, 2),
            0,
            Schedule::new(0, Some(10), 3),
            Finality::for_reorg_depth(3),
        );
        let mut feed = Feed::default();
        feed.follow(Some(1));
        for n in 1..=9 {
            let tip = chain.advance().tip;
            assert_eq!(numbers(&feed.step(&chain, n, &tip).blocks), [n]);
        }
        let old: Vec<_> = (7..=9).map(|n| chain.block(n).unwrap().hash()).collect();
        let advanced = chain.advance();
        assert_eq!(advanced.reorg_depth, Some(3));
        let step = feed.step(&chain, 10, &advanced.tip);
        let orphaned: Vec<_> = step.orphaned.iter().map(|b| b.hash()).rev().collect();
        assert_eq!(orphaned, old, "newest first");
        assert_eq!(numbers(&step.blocks), [7, 8, 9, 10]);
        let fork = chain.block(6).unwrap().hash();
        assert_eq!(step.blocks[0].header.inner.parent_hash, fork);

        // A manual rewind is noticed at the next block, however far it went.
        let before = chain.block(10).unwrap();
        chain.rewind(2);
        let tip = chain.advance().tip;
        let step = feed.step(&chain, tip.number(), &tip);
        assert_eq!(numbers(&step.orphaned), [10, 9]);
        assert_eq!(step.orphaned[0].hash(), before.hash());
        assert_eq!(numbers(&step.blocks), [9]);
    }
}
