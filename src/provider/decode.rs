//! Provider JSON to domain values: heads and logs, read with alloy's field types.
//!
//! Heads are read through a narrow struct (number, hashes, timestamp, bloom) rather than a full
//! consensus header, so chains whose headers lack or add fields still index.

use alloy_primitives::{Address, B256, Bloom, Bytes, U64};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ProviderError;
use super::jsonrpc::decode;
use crate::domain::{BlockRef, LogFields};

/// What Livechain needs of a block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub block: BlockRef,
    pub timestamp: u64,
    pub logs_bloom: Bloom,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadWire {
    number: U64,
    hash: B256,
    parent_hash: B256,
    timestamp: U64,
    #[serde(default)]
    logs_bloom: Bloom,
}

/// Reads a `newHeads` result or an `eth_getBlockByNumber`/`ByHash` block.
pub fn head(raw: &RawValue) -> Result<Head, ProviderError> {
    let wire: HeadWire = decode(raw, "block header")?;
    Ok(Head {
        block: BlockRef {
            number: wire.number.to::<u64>(),
            hash: wire.hash,
            parent_hash: wire.parent_hash,
        },
        timestamp: wire.timestamp.to::<u64>(),
        logs_bloom: wire.logs_bloom,
    })
}

/// A log as a provider reported it, before it is joined with its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub block_number: u64,
    pub block_hash: B256,
    pub log: LogFields,
    /// The provider retracted this log (`removed: true`).
    pub removed: bool,
}

/// A log object as providers send it: the fields of alloy's `Log` that Livechain stores, read
/// straight into their types. (alloy's own `Log` flattens its inner log, which makes serde
/// buffer every field of every log before reading it: the cost of a backfill's parse.)
/// Fields a node adds (`blockTimestamp`, …) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogWire {
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
    block_hash: Option<B256>,
    block_number: Option<U64>,
    transaction_hash: Option<B256>,
    transaction_index: Option<U64>,
    log_index: Option<U64>,
    #[serde(default)]
    removed: bool,
}

/// Reads one log object (from a `logs` notification or an `eth_getLogs` array).
pub fn log(raw: &RawValue) -> Result<LogRecord, ProviderError> {
    let wire: LogWire = decode(raw, "log")?;
    from_wire(wire)
}

/// Reads an `eth_getLogs` result.
pub fn logs(raw: &RawValue) -> Result<Vec<LogRecord>, ProviderError> {
    let wire: Vec<LogWire> = decode(raw, "log list")?;
    wire.into_iter().map(from_wire).collect()
}

fn from_wire(wire: LogWire) -> Result<LogRecord, ProviderError> {
    let missing = |field: &str| ProviderError::Malformed(format!("log without {field}"));
    let block_hash = wire.block_hash.ok_or_else(|| missing("blockHash"))?;
    let block_number = wire
        .block_number
        .ok_or_else(|| missing("blockNumber"))?
        .to::<u64>();
    let tx_hash = wire
        .transaction_hash
        .ok_or_else(|| missing("transactionHash"))?;
    let tx_index = wire
        .transaction_index
        .ok_or_else(|| missing("transactionIndex"))?
        .to::<u64>();
    let log_index = wire
        .log_index
        .ok_or_else(|| missing("logIndex"))?
        .to::<u64>();
    let removed = wire.removed;
    let (address, data, topics) = (wire.address, wire.data, wire.topics);
    if topics.len() > 4 {
        return Err(ProviderError::Malformed(format!(
            "log with {} topics",
            topics.len()
        )));
    }
    Ok(LogRecord {
        block_number,
        block_hash,
        removed,
        log: LogFields {
            tx_hash,
            tx_index,
            log_index,
            address,
            topics,
            data,
        },
    })
}

/// The identity of a log, read without building the whole value: what dedupe needs to drop
/// the copies of an event already seen before paying for the full parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogKey {
    pub block_hash: B256,
    pub block_number: u64,
    pub log_index: u64,
    pub removed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogKeyWire {
    block_hash: B256,
    block_number: U64,
    log_index: U64,
    #[serde(default)]
    removed: bool,
}

pub fn log_key(raw: &RawValue) -> Result<LogKey, ProviderError> {
    let wire: LogKeyWire = decode(raw, "log identity")?;
    Ok(LogKey {
        block_hash: wire.block_hash,
        block_number: wire.block_number.to::<u64>(),
        log_index: wire.log_index.to::<u64>(),
        removed: wire.removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    const LOG: &str = r#"{"address":"0x00000000000000000000000000000000000000aa","topics":["0x000000000000000000000000000000000000000000000000000000000000002a"],"data":"0x0102","blockHash":"0x1111111111111111111111111111111111111111111111111111111111111111","blockNumber":"0x10","transactionHash":"0x2222222222222222222222222222222222222222222222222222222222222222","transactionIndex":"0x1","logIndex":"0x3","removed":false}"#;

    #[test]
    fn reads_a_log_and_its_key() {
        let record = log(&raw(LOG)).unwrap();
        assert_eq!(record.block_number, 16);
        assert_eq!(record.log.log_index, 3);
        assert_eq!(record.log.topics.len(), 1);
        assert_eq!(record.log.data.as_ref(), &[1, 2]);
        let key = log_key(&raw(LOG)).unwrap();
        assert_eq!(
            (key.block_number, key.log_index, key.removed),
            (16, 3, false)
        );
        assert_eq!(key.block_hash, record.block_hash);
    }

    #[test]
    fn reads_a_head() {
        let h = head(&raw(r#"{"number":"0x2","hash":"0x1111111111111111111111111111111111111111111111111111111111111111","parentHash":"0x2222222222222222222222222222222222222222222222222222222222222222","timestamp":"0x64","extra":"ignored"}"#)).unwrap();
        assert_eq!((h.block.number, h.timestamp), (2, 100));
    }

    #[test]
    fn malformed_input_is_an_error_naming_what() {
        for text in [r#"{}"#, r#"{"blockHash":"0x12"}"#, r#"[]"#, r#""x""#] {
            let err = log(&raw(text)).unwrap_err();
            assert!(
                matches!(err, ProviderError::Malformed(ref m) if m.starts_with("log")),
                "{text}: {err}"
            );
        }
        let pending = LOG.replace(
            r#""blockHash":"0x1111111111111111111111111111111111111111111111111111111111111111","#,
            "",
        );
        assert!(log(&raw(&pending)).is_err());
        let null_hash = LOG.replace(
            r#""blockHash":"0x1111111111111111111111111111111111111111111111111111111111111111""#,
            r#""blockHash":null"#,
        );
        let err = log(&raw(&null_hash)).unwrap_err().to_string();
        assert!(err.contains("blockHash"), "{err}");
        let topic = format!("\"0x{}\",", "00".repeat(32));
        let five = LOG.replace(
            r#""topics":["#,
            &format!(r#""topics":[{}"#, topic.repeat(4)),
        );
        let err = log(&raw(&five)).unwrap_err().to_string();
        assert!(err.contains("5 topics"), "{err}");
    }

    #[test]
    fn fields_a_node_adds_or_leaves_out_are_no_obstacle() {
        // Reth and others add `blockTimestamp`; some nodes leave `removed` out.
        let added = LOG.replace(
            r#""removed":false"#,
            r#""blockTimestamp":"0x5f5e100","extra":{"a":[1,2]}"#,
        );
        let record = log(&raw(&added)).unwrap();
        assert_eq!(record, log(&raw(LOG)).unwrap());
        let list = format!("[{LOG},{added}]");
        assert_eq!(logs(&raw(&list)).unwrap().len(), 2);
    }
}
