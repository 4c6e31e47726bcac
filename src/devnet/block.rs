//! Pure block generation: the content of block `n` on branch `b` as a function of the chain
//! spec alone, plus the JSON of that content, serialized once and shared by every reader.
//!
//! Nothing here holds state or does I/O. Two devnets with the same seed and chain id produce
//! byte-identical blocks on every run, which is what lets several provider ports (and several
//! processes) serve one chain, and what lets [`super::chain::Chain`] forget old blocks and
//! regenerate them on demand instead of storing them.

use std::sync::OnceLock;

use alloy_primitives::{Address, B64, B256, Bloom, BloomInput, Bytes, U256, b256, keccak256};
use alloy_rpc_types_eth::{Block, BlockTransactions, Header, Log};

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

/// Keccak of the RLP of an empty list: the ommers hash of every post-merge block.
const EMPTY_OMMERS_HASH: B256 =
    b256!("0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347");
/// Root of an empty trie: the transactions and receipts root of a block without transactions.
const EMPTY_ROOT_HASH: B256 =
    b256!("0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");

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

    /// Block `n` on branch `branch`, whose parent is block `n - 1` on `parent_branch`.
    ///
    /// Block 0 (genesis) has no logs and a zero parent hash.
    pub(crate) fn generate(&self, n: u64, branch: u32, parent_branch: u32) -> BlockData {
        let hash = self.block_hash(n, branch);
        let parent_hash = match n.checked_sub(1) {
            Some(parent) => self.block_hash(parent, parent_branch),
            None => B256::ZERO,
        };
        let timestamp = GENESIS_TIMESTAMP + n;
        let content = derive(
            b"content",
            &[self.seed, self.chain_id, n, u64::from(branch)],
        );
        let mut rng = SplitMix64(u64::from_be_bytes(array_at(&content.0, 0)));

        let log_count = if n == 0 { 0 } else { self.logs_per_block };
        let mut logs = Vec::with_capacity(log_count);
        let mut tx_hashes = Vec::new();
        let mut bloom = Bloom::ZERO;
        let mut gas_used: u64 = 0;
        // A plausible RLP size: header (~540 bytes) plus what the transactions carry.
        let mut size: u64 = 540;
        while logs.len() < log_count {
            // Each transaction emits one to three logs, so `transactionIndex` repeats across
            // consecutive logs while `logIndex` stays consecutive within the block.
            let tx_index = tx_hashes.len() as u64;
            let tx_hash = derive_from(hash, tx_index);
            tx_hashes.push(tx_hash);
            gas_used += 21_000 + rng.below(40_000);
            size += 110;
            let in_tx = (1 + rng.below(3) as usize).min(log_count - logs.len());
            for _ in 0..in_tx {
                let (address, address_bloom) = *rng.pick(&self.contracts);
                let (signature, signature_bloom) = *rng.pick(&self.signatures);
                bloom.accrue_bloom(&address_bloom);
                bloom.accrue_bloom(&signature_bloom);
                let topic_count = 1 + rng.below(4) as usize;
                let mut topics = Vec::with_capacity(topic_count);
                topics.push(signature);
                for _ in 1..topic_count {
                    let (topic, topic_bloom) = *rng.pick(&self.accounts);
                    bloom.accrue_bloom(&topic_bloom);
                    topics.push(topic);
                }
                let mut data = vec![0u8; rng.below(257) as usize];
                rng.fill(&mut data);
                gas_used += 375 + 375 * topic_count as u64 + 8 * data.len() as u64;
                size += data.len() as u64;
                logs.push(Log {
                    inner: alloy_primitives::Log::new_unchecked(address, topics, data.into()),
                    block_hash: Some(hash),
                    block_number: Some(n),
                    block_timestamp: Some(timestamp),
                    transaction_hash: Some(tx_hash),
                    transaction_index: Some(tx_index),
                    log_index: Some(logs.len() as u64),
                    removed: false,
                });
            }
        }

        let mut header: Header = Header {
            hash,
            size: Some(U256::from(size)),
            ..Header::default()
        };
        let inner = &mut header.inner;
        inner.parent_hash = parent_hash;
        inner.ommers_hash = EMPTY_OMMERS_HASH;
        inner.beneficiary = self.beneficiary;
        // The roots are synthetic (no tries are built) but consistent: same content, same root.
        inner.state_root = derive_from(content, u64::MAX);
        inner.transactions_root = root_of(&tx_hashes, 0);
        inner.receipts_root = root_of(&tx_hashes, 1);
        inner.logs_bloom = bloom;
        inner.number = n;
        inner.gas_limit = GAS_LIMIT;
        inner.gas_used = gas_used.min(GAS_LIMIT);
        inner.timestamp = timestamp;
        inner.extra_data = Bytes::from_static(b"livechain-devnet");
        inner.mix_hash = derive_from(content, u64::MAX - 1);
        inner.nonce = B64::ZERO;
        inner.base_fee_per_gas = Some(1_000_000_000 + rng.below(9_000_000_000));

        BlockData {
            branch,
            header,
            tx_hashes,
            logs,
            json: OnceLock::new(),
        }
    }
}

/// One generated block: the alloy values and, computed once on first use, their JSON.
#[derive(Debug)]
pub(crate) struct BlockData {
    /// How many reorgs had rewritten this height when this version was made.
    pub branch: u32,
    pub header: Header,
    pub tx_hashes: Vec<B256>,
    pub logs: Vec<Log>,
    json: OnceLock<BlockJson>,
}

/// The serialized forms every consumer needs, made once per block and shared by all providers,
/// connections and subscriptions (a notification is then a prefix, these bytes and `}}`).
#[derive(Debug)]
pub(crate) struct BlockJson {
    /// The `newHeads` payload: the header without transactions.
    pub header: Box<str>,
    /// The `eth_getBlockByNumber`/`ByHash` result: header, `uncles`, `transactions` (hashes).
    pub block: Box<str>,
    /// One entry per log, in log order.
    pub logs: Vec<Box<str>>,
}

impl BlockData {
    pub(crate) fn number(&self) -> u64 {
        self.header.inner.number
    }

    pub(crate) fn hash(&self) -> B256 {
        self.header.hash
    }

    /// The block as `alloy_rpc_types_eth::Block` with transaction hashes.
    pub(crate) fn to_block(&self) -> Block {
        Block {
            header: self.header.clone(),
            uncles: Vec::new(),
            transactions: BlockTransactions::Hashes(self.tx_hashes.clone()),
            withdrawals: None,
        }
    }

    /// Log `i`'s JSON: the shared rendering if the block has one, else rendered alone (a
    /// selective `eth_getLogs` over old blocks should not render every log it skips).
    pub(crate) fn log_json(&self, i: usize) -> std::borrow::Cow<'_, str> {
        match self.json.get() {
            Some(json) => json.logs.get(i).map_or("null".into(), |s| (&**s).into()),
            None => self
                .logs
                .get(i)
                .map_or("null".into(), |l| String::from(to_json(l)).into()),
        }
    }

    /// The block's JSON, serialized on first use.
    pub(crate) fn json(&self) -> &BlockJson {
        self.json.get_or_init(|| BlockJson {
            header: to_json(&self.header),
            block: to_json(&self.to_block()),
            logs: self.logs.iter().map(to_json).collect(),
        })
    }
}

/// Serializes a value whose `Serialize` cannot fail (alloy types: no maps with non-string keys,
/// no fallible custom impls). Should that ever change, the result is JSON `null` plus an error
/// log, never a panic.
fn to_json<T: serde::Serialize>(value: &T) -> Box<str> {
    match serde_json::to_string(value) {
        Ok(json) => json.into_boxed_str(),
        Err(err) => {
            tracing::error!(error = %err, "devnet: cannot serialize a generated value");
            "null".into()
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

/// A synthetic root over the transaction hashes (the empty-trie root when there are none).
fn root_of(tx_hashes: &[B256], salt: u8) -> B256 {
    if tx_hashes.is_empty() {
        return EMPTY_ROOT_HASH;
    }
    let mut buf = Vec::with_capacity(1 + 32 * tx_hashes.len());
    buf.push(salt);
    for hash in tx_hashes {
        buf.extend_from_slice(hash.as_slice());
    }
    keccak256(&buf)
}

/// `N` bytes of a 32-byte array starting at `at`; every caller passes constant in-range offsets.
fn array_at<const N: usize>(bytes: &[u8; 32], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// SplitMix64: a tiny PRNG whose output is fixed by its definition, so block content cannot
/// change under us with a `rand` upgrade (`StdRng` documents no such stability).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for test data (`bound > 0`).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// One element of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_seed_sensitive() {
        let a = ChainSpec::new(1, 31337, 20);
        let b = ChainSpec::new(1, 31337, 20);
        let c = ChainSpec::new(2, 31337, 20);
        for n in [0, 1, 2, 1000] {
            let (x, y, z) = (
                a.generate(n, 0, 0),
                b.generate(n, 0, 0),
                c.generate(n, 0, 0),
            );
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
        let genesis = spec.generate(0, 0, 0);
        assert!(genesis.logs.is_empty() && genesis.tx_hashes.is_empty());
        assert_eq!(genesis.header.inner.parent_hash, B256::ZERO);
        let block = spec.generate(1, 0, 0);
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
    fn json_round_trips_through_alloy_types() {
        let block = ChainSpec::new(1, 31337, 5).generate(9, 0, 0);
        let json = block.json();
        let header: Header = serde_json::from_str(&json.header).unwrap();
        assert_eq!(header, block.header);
        let full: Block = serde_json::from_str(&json.block).unwrap();
        assert_eq!(
            full.transactions.hashes().collect::<Vec<_>>(),
            block.tx_hashes
        );
        for (text, log) in json.logs.iter().zip(&block.logs) {
            assert_eq!(&serde_json::from_str::<Log>(text).unwrap(), log);
        }
    }
}
