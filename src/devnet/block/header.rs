//! A block assembled from its transactions: log block fields, bloom, gas, size and the
//! header, whose roots are synthetic but consistent (same content, same root).

use alloy_primitives::{B64, B256, Bloom, Bytes, U256, b256, keccak256};
use alloy_rpc_types_eth::{Header, Log};

use super::txs::Tx;
use super::{BlockData, ChainSpec, GAS_LIMIT, GENESIS_TIMESTAMP, derive, derive_from};

/// Keccak of the RLP of an empty list: the ommers hash of every post-merge block.
const EMPTY_OMMERS_HASH: B256 =
    b256!("0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347");
/// Root of an empty trie: the transactions and receipts root of a block without transactions.
const EMPTY_ROOT_HASH: B256 =
    b256!("0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");

impl ChainSpec {
    /// The block of height `n` holding `txs`, in order.
    pub(super) fn assemble(
        &self,
        n: u64,
        branch: u32,
        hash: B256,
        parent_hash: B256,
        txs: Vec<Tx>,
        base_fee: u64,
    ) -> BlockData {
        let timestamp = GENESIS_TIMESTAMP + n;
        let content = derive(
            b"content",
            &[self.seed, self.chain_id, n, u64::from(branch)],
        );
        let mut logs = Vec::with_capacity(txs.iter().map(|tx| tx.logs.len()).sum());
        let mut tx_hashes = Vec::with_capacity(txs.len());
        let mut bloom = Bloom::ZERO;
        let mut gas_used: u64 = 0;
        // A plausible RLP size: header (~540 bytes) plus what the transactions carry.
        let mut size: u64 = 540;
        for (tx_index, tx) in txs.into_iter().enumerate() {
            bloom.accrue_bloom(&tx.bloom);
            gas_used += tx.gas;
            size += tx.size;
            tx_hashes.push(tx.hash);
            for inner in tx.logs {
                logs.push(Log {
                    inner,
                    block_hash: Some(hash),
                    block_number: Some(n),
                    block_timestamp: Some(timestamp),
                    transaction_hash: Some(tx.hash),
                    transaction_index: Some(tx_index as u64),
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
        inner.base_fee_per_gas = Some(base_fee);

        BlockData::new(branch, header, tx_hashes, logs)
    }
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
