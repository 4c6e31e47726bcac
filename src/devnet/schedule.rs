//! Which version ("branch") of each height is canonical, as a pure function of the automatic
//! reorg schedule, the chain's high-water mark and the list of manual reorgs; and how deep the
//! `safe` and `finalized` tags sit.
//!
//! Why a schedule and not a log of reorgs: a block's content and hash are a function of its
//! `(height, branch)`, and every height must keep its branch forever once final, so that old
//! blocks regenerate byte for byte. A log of reorgs would grow without bound over a long run.
//! Automatic reorgs instead happen at fixed heights (`initial_blocks + k * every`, `k >= 1`),
//! so how many of them have rewritten a height — and how many still will — is arithmetic:
//!
//! - the reorg at point `p` rewrites `max(1, p - depth) ..= p - 1` and produces `p` in the same
//!   step, so the head never goes back; it fires when `p` is produced for the first time (that
//!   is, above the high-water mark `w`, the highest head ever reached);
//! - the *auto* part of height `n`'s branch counts the reorgs still to come for it, the points
//!   in `(max(n, w), n + depth]`. It starts at its largest value and only decreases, reaching 0
//!   once `w >= n + depth`: a final block is always on auto version 0.
//!
//! Manual reorgs ([`super::Devnet::reorg`]) are arbitrary, so they are recorded: the *manual*
//! part of a height's branch is how many manual reorgs rewrote it. Their list is capped at
//! [`MAX_MANUAL_REORGS`] (8 bytes each), and automatic reorgs cost no memory at all.
//!
//! A version never comes back: the manual part only grows and the auto part only shrinks, and
//! every rewrite of a height changes one of them. So a hash, once orphaned, stays orphaned.

/// Deepest automatic reorg a devnet may be configured with.
pub const MAX_REORG_DEPTH: u64 = 1024;
/// Most manual reorgs one devnet records; later ones are refused (logged), keeping memory
/// bounded. Tests call [`super::Devnet::reorg`] a handful of times.
pub const MAX_MANUAL_REORGS: usize = 0xFFFF;

/// How far below the head the `safe` tag points by default.
pub const SAFE_DEPTH: u64 = 16;
/// How far below the head the `finalized` tag points by default.
pub const FINALIZED_DEPTH: u64 = 32;

/// How deep the tags sit for a given reorg depth. The `safe` tag is never shallower than the
/// configured reorg depth, so automatic reorgs never rewrite a block that was ever `safe` (let
/// alone `finalized`); manual reorgs are clamped to the same bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finality {
    pub safe: u64,
    pub finalized: u64,
}

impl Finality {
    pub(crate) fn for_reorg_depth(depth: u64) -> Self {
        let safe = SAFE_DEPTH.max(depth);
        Self {
            safe,
            finalized: FINALIZED_DEPTH.max(safe + (FINALIZED_DEPTH - SAFE_DEPTH)),
        }
    }

    pub(crate) fn safe_head(self, head: u64) -> u64 {
        head.saturating_sub(self.safe)
    }

    pub(crate) fn finalized_head(self, head: u64) -> u64 {
        head.saturating_sub(self.finalized)
    }
}

/// The automatic reorg schedule: a reorg of `depth` at every `every`-th height past `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    base: u64,
    every: u64,
    depth: u64,
}

impl Schedule {
    /// `None` when there are no automatic reorgs (`every` unset or 0, or `depth` 0).
    pub(crate) fn new(base: u64, every: Option<u64>, depth: u64) -> Option<Self> {
        let every = every.filter(|&e| e > 0)?;
        (depth > 0).then_some(Self {
            base,
            every,
            depth: depth.min(MAX_REORG_DEPTH),
        })
    }

    /// Whether producing height `n` for the first time triggers a reorg.
    pub(crate) fn is_point(&self, n: u64) -> bool {
        n > self.base && (n - self.base).is_multiple_of(self.every)
    }

    /// The lowest height the reorg at point `p` rewrites (genesis is never rewritten).
    pub(crate) fn first_rewritten(&self, p: u64) -> u64 {
        p.saturating_sub(self.depth).max(1)
    }

    /// Reorg points `p` with `lo < p <= hi`.
    fn points_in(&self, lo: u64, hi: u64) -> u64 {
        let upto = |x: u64| x.saturating_sub(self.base) / self.every;
        upto(hi).saturating_sub(upto(lo))
    }

    /// Reorgs still to rewrite height `n`, the high-water mark being `high_water`.
    pub(crate) fn pending(&self, n: u64, high_water: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.points_in(n.max(high_water), n.saturating_add(self.depth))
    }

    /// Every reorg that will ever rewrite `n`: its auto version when first produced.
    pub(crate) fn initial(&self, n: u64) -> u64 {
        self.pending(n, n)
    }
}

/// A branch number: manual part in the high 16 bits, auto part in the low 16 (both fit: the
/// auto part is at most `MAX_REORG_DEPTH + 1`, the manual one at most `MAX_MANUAL_REORGS`).
pub(crate) fn encode(manual: u64, auto: u64) -> u32 {
    let part = |x: u64| u32::try_from(x.min(0xFFFF)).unwrap_or(0xFFFF);
    (part(manual) << 16) | part(auto)
}

/// The `(manual, auto)` parts of a branch.
pub(crate) fn decode(branch: u32) -> (u64, u64) {
    (u64::from(branch >> 16), u64::from(branch & 0xFFFF))
}

/// The manual reorgs: first rewritten height of each, sorted, for `O(log r)` counting.
#[derive(Debug, Default, Clone)]
pub(crate) struct ManualReorgs {
    sorted: Vec<u64>,
}

impl ManualReorgs {
    /// How many manual reorgs rewrote height `n`.
    pub(crate) fn count_at(&self, n: u64) -> u64 {
        self.sorted.partition_point(|&f| f <= n) as u64
    }

    /// Records one; `false` (nothing recorded) once [`MAX_MANUAL_REORGS`] are.
    pub(crate) fn push(&mut self, first_rewritten: u64) -> bool {
        if self.sorted.len() >= MAX_MANUAL_REORGS {
            return false;
        }
        let at = self.sorted.partition_point(|&f| f <= first_rewritten);
        self.sorted.insert(at, first_rewritten);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finality_covers_the_reorg_depth() {
        assert_eq!(
            Finality::for_reorg_depth(3),
            Finality {
                safe: SAFE_DEPTH,
                finalized: FINALIZED_DEPTH
            }
        );
        let deep = Finality::for_reorg_depth(64);
        assert_eq!((deep.safe, deep.finalized), (64, 80));
        assert_eq!(deep.safe_head(50), 0);
        assert_eq!(deep.finalized_head(100), 20);
    }

    #[test]
    fn points_fire_every_n_blocks_past_the_base() {
        assert!(Schedule::new(0, None, 3).is_none());
        assert!(Schedule::new(0, Some(5), 0).is_none());
        let s = Schedule::new(10, Some(5), 3).unwrap();
        let points: Vec<u64> = (0..=30).filter(|&n| s.is_point(n)).collect();
        assert_eq!(points, [15, 20, 25, 30]);
        assert_eq!(s.first_rewritten(15), 12);
        assert_eq!(Schedule::new(0, Some(2), 9).unwrap().first_rewritten(2), 1);
    }

    #[test]
    fn versions_count_down_to_zero_as_the_head_passes() {
        // Reorgs at 15, 20, 25, ... rewriting the 3 heights below each.
        let s = Schedule::new(10, Some(5), 3).unwrap();
        assert_eq!(s.initial(11), 0, "no point in 12..=14");
        assert_eq!(s.initial(12), 1, "rewritten by the reorg at 15");
        assert_eq!(s.pending(12, 14), 1);
        assert_eq!(s.pending(12, 15), 0, "done once 15 is reached");
        assert_eq!(s.initial(15), 0, "a point is not rewritten by itself");
        assert_eq!(s.pending(0, 0), 0, "genesis is never rewritten");
        // Overlapping windows: depth 7 every 2 rewrites a height several times.
        let dense = Schedule::new(0, Some(2), 7).unwrap();
        assert_eq!(dense.initial(5), 4, "the points 6, 8, 10 and 12");
        let versions: Vec<u64> = (5..=12).map(|w| dense.pending(5, w)).collect();
        assert_eq!(versions, [4, 3, 3, 2, 2, 1, 1, 0]);
    }

    #[test]
    fn branches_encode_both_parts_and_manual_reorgs_count() {
        assert_eq!(decode(encode(3, 7)), (3, 7));
        assert_ne!(encode(1, 0), encode(0, 1));
        assert_eq!(decode(encode(1 << 20, 1 << 20)), (0xFFFF, 0xFFFF));
        let mut manual = ManualReorgs::default();
        assert!(manual.push(10));
        assert!(manual.push(4));
        assert_eq!(
            (manual.count_at(3), manual.count_at(4), manual.count_at(10)),
            (0, 1, 2)
        );
    }
}
