//! Pure block generation: the content of block `n` on branch `b` as a function of the chain
//! spec alone, including what a reorg's new version carries over from the orphaned ones.
//!
//! Nothing here holds state or does I/O. Two devnets with the same seed and chain id produce
//! byte-identical blocks on every run, which is what lets several provider ports (and several
//! processes) serve one chain, and what lets [`super::chain::Chain`] forget old blocks and
//! regenerate them on demand instead of storing them.
//!
//! This file holds the spec, block hashes and which version of a height carries what; `txs.rs`
//! draws a block's transactions and logs, `header.rs` assembles them into a block.

mod header;
mod txs;

use alloy_primitives::{Address, B256, Bloom, BloomInput, keccak256};

pub(crate) use super::blockdata::BlockData;
use txs::{SplitMix64, Tx};

/// Timestamp of block 0; block `n` is `GENESIS_TIMESTAMP + n`, whatever the block time, so the
/// content of a block never depends on how fast the devnet runs.
pub const GENESIS_TIMESTAMP: u64 = 1_700_000_000;

/// Gas limit of every block (mainnet's order of magnitude).
pub const GAS_LIMIT: u64 = 30_000_000;

/// How many distinct contract addresses emit logs: few enough that address filters match often.
pub const CONTRACT_COUNT: usize = 8;

/// How many distinct indexed values (`topic1..3`) logs carry, for the same reason.
pub const ACCOUNT_COUNT: usize = 16;

/// `topic0` of every log is the hash of one of these, so they look like real events.
pub const EVENT_SIGNATURES: [&str; 6] = [
    "Transfer(address,address,uint256)",
    "Approval(address,address,uint256)",
    "Swap(address,uint256,uint256,uint256,uint256,address)",
    "Sync(uint112,uint112)",
    "Deposit(address,uint256)",
    "Withdrawal(address,uint256)",
];

/// Everything that block content is a function of, with the per-value bloom contributions
/// precomputed: a block's `logsBloom` is then an OR of cached blooms instead of ~100 keccaks.
#[derive(Debug)]
pub(crate) struct ChainSpec {
    seed: u64,
    chain_id: u64,
    logs_per_block: usize,
    contracts: Vec<(Address, Bloom)>,
    signatures: Vec<(B256, Bloom)>,
    accounts: Vec<(B256, Bloom)>,
    beneficiary: Address,
}

impl ChainSpec {
    pub(crate) fn new(seed: u64, chain_id: u64, logs_per_block: usize) -> Self {
        let bloom_of = |bytes: &[u8]| {
            let mut bloom = Bloom::ZERO;
            bloom.accrue(BloomInput::Raw(bytes));
            bloom
        };
        // Contracts and accounts depend on the seed only: the same "deployment" on any chain id.
        let contracts = (0..CONTRACT_COUNT as u64)
            .map(|i| {
                let address = Address::from_slice(&derive(b"contract", &[seed, i])[12..]);
                (address, bloom_of(address.as_slice()))
            })
            .collect();
        let signatures = EVENT_SIGNATURES
            .iter()
            .map(|sig| {
                let topic = keccak256(sig.as_bytes());
                (topic, bloom_of(topic.as_slice()))
            })
            .collect();
        let accounts = (0..ACCOUNT_COUNT as u64)
            .map(|i| {
                // An indexed address is a topic with 12 zero bytes in front, as in real logs.
                let mut topic = derive(b"account", &[seed, i]);
                topic.0[..12].fill(0);
                (topic, bloom_of(topic.as_slice()))
            })
            .collect();
        let beneficiary = Address::from_slice(&derive(b"beneficiary", &[seed])[12..]);
        Self {
            seed,
            chain_id,
            logs_per_block,
            contracts,
            signatures,
            accounts,
            beneficiary,
        }
    }

    pub(crate) fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub(crate) fn logs_per_block(&self) -> usize {
        self.logs_per_block
    }

    /// The contract addresses logs come from, in a stable order.
    pub(crate) fn contracts(&self) -> impl Iterator<Item = Address> + '_ {
        self.contracts.iter().map(|(a, _)| *a)
    }

    /// The hash of block `n` on branch `branch`.
    ///
    /// It is not the keccak of the header's RLP (that would make every hash depend on the whole
    /// history before it); it is a keccak of `(seed, chain_id, n, branch)` with `n` and `branch`
    /// folded into the last 12 bytes under a mask taken from the first 12. The hash therefore
    /// looks random yet names its own height and branch, so `eth_getBlockByHash` can answer for
    /// any height without an index: decode, regenerate, compare ([`Self::decode_hash`]).
    pub(crate) fn block_hash(&self, n: u64, branch: u32) -> B256 {
        let mut hash = derive(b"block", &[self.seed, self.chain_id, n, u64::from(branch)]);
        let bytes = &mut hash.0;
        let n_mask = u64::from_be_bytes(array_at(bytes, 0));
        let branch_mask = u32::from_be_bytes(array_at(bytes, 8));
        bytes[20..28].copy_from_slice(&(n ^ n_mask).to_be_bytes());
        bytes[28..32].copy_from_slice(&(branch ^ branch_mask).to_be_bytes());
        hash
    }

    /// The `(n, branch)` a hash made by [`Self::block_hash`] claims; the caller must regenerate
    /// and compare, since any 32 bytes decode to something.
    pub(crate) fn decode_hash(hash: &B256) -> (u64, u32) {
        let bytes = &hash.0;
        let n = u64::from_be_bytes(array_at(bytes, 20)) ^ u64::from_be_bytes(array_at(bytes, 0));
        let branch =
            u32::from_be_bytes(array_at(bytes, 28)) ^ u32::from_be_bytes(array_at(bytes, 8));
        (n, branch)
    }

    /// The block described by `version`. Block 0 (genesis) has no logs and a zero parent hash.
    ///
    /// Transactions come in three groups, in this order: those of the orphaned parent version
    /// fated to [`Fate::Move`] here, those of the version this one replaced fated to
    /// [`Fate::Stay`], then this version's own new ones. Carried transactions keep their hash
    /// and logs; only the block fields (hash, number, indexes) change.
    pub(crate) fn generate(&self, version: &Version) -> BlockData {
        let n = version.n;
        let hash = self.block_hash(n, version.branch);
        let parent_hash = match n.checked_sub(1) {
            Some(parent) => self.block_hash(parent, version.parent_branch),
            None => B256::ZERO,
        };
        let mut rng = self.rng(n, version.branch);
        let mut txs = Vec::new();
        if let (Some(orphan), Some(parent)) = (version.move_from, n.checked_sub(1)) {
            txs.extend(self.orphan_txs(parent, orphan, Fate::Move));
        }
        if let Some(orphan) = version.stay_from {
            txs.extend(self.orphan_txs(n, orphan, Fate::Stay));
        }
        let own_logs = if n == 0 { 0 } else { version.own_logs };
        txs.extend(self.own_txs(hash, own_logs, &mut rng));
        // Drawn after the transactions, so a block's own content is a prefix of its stream.
        let base_fee = 1_000_000_000 + rng.below(9_000_000_000);
        self.assemble(n, version.branch, hash, parent_hash, txs, base_fee)
    }

    /// The transactions of version `orphan.branch` of height `n` that meet `fate`.
    fn orphan_txs(&self, n: u64, orphan: Orphan, fate: Fate) -> impl Iterator<Item = Tx> {
        let hash = self.block_hash(n, orphan.branch);
        let mut rng = self.rng(n, orphan.branch);
        let own_logs = if n == 0 { 0 } else { orphan.own_logs };
        self.own_txs(hash, own_logs, &mut rng)
            .into_iter()
            .filter(move |tx| Fate::of(tx.hash) == fate)
    }

    /// The content stream of version `branch` of height `n`.
    fn rng(&self, n: u64, branch: u32) -> SplitMix64 {
        let content = derive(
            b"content",
            &[self.seed, self.chain_id, n, u64::from(branch)],
        );
        SplitMix64(u64::from_be_bytes(array_at(&content.0, 0)))
    }
}

/// Which version of a height to generate, and what it takes over from orphaned versions
/// (decided by [`super::chain::Chain`] from the reorg schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub n: u64,
    pub branch: u32,
    pub parent_branch: u32,
    /// How many new logs this version emits itself.
    pub own_logs: usize,
    /// The version of this height that this one replaced.
    pub stay_from: Option<Orphan>,
    /// The orphaned version of the parent height.
    pub move_from: Option<Orphan>,
}

impl Version {
    /// A version that carries nothing over.
    pub(crate) fn plain(n: u64, branch: u32, parent_branch: u32, own_logs: usize) -> Self {
        Self {
            n,
            branch,
            parent_branch,
            own_logs,
            stay_from: None,
            move_from: None,
        }
    }
}

/// An orphaned version whose own transactions a new version may carry. Its own log count is
/// needed to regenerate exactly the transactions it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orphan {
    pub branch: u32,
    pub own_logs: usize,
}

/// What a reorg does to a transaction of an orphaned block, fixed by its hash so that every
/// provider and run agrees: about 40% are re-included at the same height, 35% move to the next
/// height of the new branch, 25% vanish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Stay,
    Move,
    Vanish,
}

impl Fate {
    pub(crate) fn of(tx_hash: B256) -> Fate {
        match tx_hash.0[0] % 20 {
            0..8 => Fate::Stay,
            8..15 => Fate::Move,
            _ => Fate::Vanish,
        }
    }
}

/// Domain-separated keccak of a tag and some words.
fn derive(tag: &[u8], words: &[u64]) -> B256 {
    let mut buf = Vec::with_capacity(24 + tag.len() + 8 * words.len());
    buf.extend_from_slice(b"livechain-devnet/");
    buf.extend_from_slice(tag);
    for word in words {
        buf.extend_from_slice(&word.to_be_bytes());
    }
    keccak256(&buf)
}

/// Keccak of a hash and an index: transaction hashes, synthetic roots.
fn derive_from(base: B256, index: u64) -> B256 {
    let mut buf = [0u8; 40];
    buf[..32].copy_from_slice(base.as_slice());
    buf[32..].copy_from_slice(&index.to_be_bytes());
    keccak256(buf)
}

/// `N` bytes of a 32-byte array starting at `at`; every caller passes constant in-range offsets.
fn array_at<const N: usize>(bytes: &[u8; 32], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(spec: &ChainSpec, n: u64) -> BlockData {
        spec.generate(&Version::plain(n, 0, 0, spec.logs_per_block()))
    }

    #[test]
    fn generation_is_deterministic_and_seed_sensitive() {
        let a = ChainSpec::new(1, 31337, 20);
        let b = ChainSpec::new(1, 31337, 20);
        let c = ChainSpec::new(2, 31337, 20);
        for n in [0, 1, 2, 1000] {
            let (x, y, z) = (plain(&a, n), plain(&b, n), plain(&c, n));
            assert_eq!(x.json().block, y.json().block);
            assert_eq!(x.json().logs, y.json().logs);
            assert_ne!(x.hash(), z.hash());
        }
        assert_ne!(
            a.block_hash(5, 0),
            a.block_hash(5, 1),
            "a branch is a new block"
        );
        assert_ne!(
            ChainSpec::new(1, 1, 20).block_hash(5, 0),
            a.block_hash(5, 0),
            "the chain id is part of the hash"
        );
    }

    #[test]
    fn hashes_decode_to_their_height_and_branch() {
        let spec = ChainSpec::new(7, 1, 3);
        for (n, branch) in [(0, 0), (1, 0), (123_456_789, 3), (u64::MAX, u32::MAX)] {
            assert_eq!(
                ChainSpec::decode_hash(&spec.block_hash(n, branch)),
                (n, branch)
            );
        }
    }

    #[test]
    fn blocks_link_and_logs_are_well_formed() {
        let spec = ChainSpec::new(1, 31337, 20);
        let genesis = plain(&spec, 0);
        assert!(genesis.logs.is_empty() && genesis.tx_hashes.is_empty());
        assert_eq!(genesis.header.inner.parent_hash, B256::ZERO);
        let block = plain(&spec, 1);
        assert_eq!(block.header.inner.parent_hash, genesis.hash());
        assert_eq!(block.header.inner.timestamp, GENESIS_TIMESTAMP + 1);
        assert_eq!(block.logs.len(), 20);
        let contracts: Vec<_> = spec.contracts().collect();
        for (i, log) in block.logs.iter().enumerate() {
            assert_eq!(log.log_index, Some(i as u64));
            assert!((1..=4).contains(&log.topics().len()));
            assert!(log.data().data.len() <= 256);
            assert!(contracts.contains(&log.address()));
            let tx = log.transaction_index.unwrap() as usize;
            assert_eq!(log.transaction_hash, Some(block.tx_hashes[tx]));
        }
        let real = alloy_primitives::logs_bloom(block.logs.iter().map(|l| &l.inner));
        assert_eq!(
            block.header.inner.logs_bloom, real,
            "precomputed blooms equal alloy's"
        );
    }

    #[test]
    fn reorg_versions_carry_moved_and_stayed_transactions() {
        let spec = ChainSpec::new(3, 31337, 40);
        let orphan = Orphan {
            branch: 1,
            own_logs: 40,
        };
        let old_parent = spec.generate(&Version::plain(7, 1, 0, 40));
        let old = spec.generate(&Version::plain(8, 1, 1, 40));
        let new = spec.generate(&Version {
            n: 8,
            branch: 0,
            parent_branch: 0,
            own_logs: 14,
            stay_from: Some(orphan),
            move_from: Some(orphan),
        });
        assert_ne!(new.hash(), old.hash());
        let fated = |block: &BlockData, fate| -> Vec<B256> {
            let mut txs: Vec<B256> = block
                .tx_hashes
                .iter()
                .copied()
                .filter(|h| Fate::of(*h) == fate)
                .collect();
            txs.dedup();
            txs
        };
        let moved = fated(&old_parent, Fate::Move);
        let stayed = fated(&old, Fate::Stay);
        assert!(!moved.is_empty() && !stayed.is_empty() && !fated(&old, Fate::Vanish).is_empty());
        let expected: Vec<B256> = moved.iter().chain(&stayed).copied().collect();
        assert_eq!(
            new.tx_hashes[..expected.len()],
            expected[..],
            "carried first, in order"
        );
        assert!(new.tx_hashes.len() > expected.len(), "and new ones after");
        let tx_logs = |block: &BlockData, tx: B256| -> Vec<alloy_primitives::Log> {
            let logs = block.logs.iter().filter(|l| l.transaction_hash == Some(tx));
            logs.map(|l| l.inner.clone()).collect()
        };
        for tx in &moved {
            assert_eq!(tx_logs(&new, *tx), tx_logs(&old_parent, *tx), "moved whole");
        }
        for tx in &stayed {
            assert_eq!(tx_logs(&new, *tx), tx_logs(&old, *tx), "stayed whole");
        }
        assert!(new.logs.iter().all(|l| l.block_hash == Some(new.hash())));
        let indexes: Vec<u64> = new.logs.iter().map(|l| l.log_index.unwrap()).collect();
        assert_eq!(indexes, (0..new.logs.len() as u64).collect::<Vec<_>>());
        let real = alloy_primitives::logs_bloom(new.logs.iter().map(|l| &l.inner));
        assert_eq!(new.header.inner.logs_bloom, real);
    }
}
