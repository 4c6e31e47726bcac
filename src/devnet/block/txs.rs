//! A block's transactions and their logs, drawn from the block's content stream: which
//! contracts emit, which events, which indexed accounts, how much data.

use alloy_primitives::{B256, Bloom};

use super::{ChainSpec, derive_from};

/// One transaction: its hash, its logs (without block fields) and what it adds to the block.
#[derive(Debug, Clone)]
pub(super) struct Tx {
    pub(super) hash: B256,
    pub(super) gas: u64,
    pub(super) size: u64,
    pub(super) bloom: Bloom,
    pub(super) logs: Vec<alloy_primitives::Log>,
}

impl ChainSpec {
    /// New transactions emitting `log_count` logs in all, for the block whose hash is `hash`.
    pub(super) fn own_txs(&self, hash: B256, log_count: usize, rng: &mut SplitMix64) -> Vec<Tx> {
        let mut txs = Vec::new();
        let mut emitted = 0;
        while emitted < log_count {
            // Each transaction emits one to three logs, so `transactionIndex` repeats across
            // consecutive logs while `logIndex` stays consecutive within the block.
            let mut tx = Tx {
                hash: derive_from(hash, txs.len() as u64),
                gas: 21_000 + rng.below(40_000),
                size: 110,
                bloom: Bloom::ZERO,
                logs: Vec::new(),
            };
            let in_tx = (1 + rng.below(3) as usize).min(log_count - emitted);
            for _ in 0..in_tx {
                let (address, address_bloom) = *rng.pick(&self.contracts);
                let (signature, signature_bloom) = *rng.pick(&self.signatures);
                tx.bloom.accrue_bloom(&address_bloom);
                tx.bloom.accrue_bloom(&signature_bloom);
                let topic_count = 1 + rng.below(4) as usize;
                let mut topics = Vec::with_capacity(topic_count);
                topics.push(signature);
                for _ in 1..topic_count {
                    let (topic, topic_bloom) = *rng.pick(&self.accounts);
                    tx.bloom.accrue_bloom(&topic_bloom);
                    topics.push(topic);
                }
                let mut data = vec![0u8; rng.below(257) as usize];
                rng.fill(&mut data);
                tx.gas += 375 + 375 * topic_count as u64 + 8 * data.len() as u64;
                tx.size += data.len() as u64;
                tx.logs.push(alloy_primitives::Log::new_unchecked(
                    address,
                    topics,
                    data.into(),
                ));
            }
            emitted += in_tx;
            txs.push(tx);
        }
        txs
    }
}

/// SplitMix64: a tiny PRNG whose output is fixed by its definition, so block content cannot
/// change under us with a `rand` upgrade (`StdRng` documents no such stability).
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for test data (`bound > 0`).
    pub(super) fn below(&mut self, bound: u64) -> u64 {
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
