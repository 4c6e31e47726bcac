//! Row ↔ domain mapping for `events`, in one place: the write path, the point reads here and the
//! REST query builder all select [`EVENT_COLUMNS`] from [`EVENT_FROM`] and decode with
//! [`stored_event`].

use alloy_primitives::{Address, B256, Bytes};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::domain::{BlockRef, ChainName, Event, Finality, LogFields, StoredEvent};

use super::StoreError;

/// `log_index` of a block row: the unique content key cannot hold NULL (see `V1__initial.sql`).
pub(crate) const BLOCK_LOG_INDEX: i64 = -1;

/// The columns [`stored_event`] decodes, in its order. `e` is `events`, `cn` and `pn` its chain
/// and provider names, `h` its block's header and `c` the chain's checkpoint (finality is
/// derived from it, not stored per row): the joins of [`EVENT_JOINS`].
pub(crate) const EVENT_COLUMNS: &str = "e.cursor, cn.name, e.block_number, e.block_hash, \
     h.parent_hash, h.block_timestamp, e.tx_hash, e.tx_index, e.log_index, e.address, \
     e.topic0, e.topic1, e.topic2, e.topic3, e.data, e.removed, pn.name, \
     e.providers_seen, e.received_at, c.safe_block, c.finalized_block";

macro_rules! event_joins {
    () => {
        "LEFT JOIN names cn ON cn.id = e.chain \
         LEFT JOIN names pn ON pn.id = e.first_provider \
         LEFT JOIN headers h ON h.chain = e.chain AND h.block_number = e.block_number \
             AND h.block_hash = e.block_hash \
         LEFT JOIN checkpoints c ON c.chain = cn.name"
    };
}

/// What [`EVENT_COLUMNS`] needs joined to `events e`. Every join is LEFT: SQLite then keeps
/// `events` the outer loop (the filters' index drives the read, each join is one key lookup),
/// and a missing name or header shows as a corrupt row rather than a silently missing one.
pub(crate) const EVENT_JOINS: &str = event_joins!();

/// The FROM clause matching [`EVENT_COLUMNS`].
pub(crate) const EVENT_FROM: &str = concat!("events e ", event_joins!());

/// A row's finality from its chain's safe and finalized block numbers (`None`: not known yet).
pub(crate) fn finality_of(
    block_number: u64,
    safe_block: Option<u64>,
    finalized_block: Option<u64>,
) -> Finality {
    if finalized_block.is_some_and(|f| block_number <= f) {
        Finality::Finalized
    } else if safe_block.is_some_and(|s| block_number <= s) {
        Finality::Safe
    } else {
        Finality::Latest
    }
}

/// A `u64` as SQLite's signed 64-bit INTEGER; refuses values past `i64::MAX`.
pub(crate) fn to_sql_int(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} exceeds 2^63-1")))
}

/// Decodes one row selected with [`EVENT_COLUMNS`].
pub(crate) fn stored_event(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    stored_event_at(row, 0)
}

/// Decodes [`EVENT_COLUMNS`] starting at column `o` (a query may select columns before them).
pub(crate) fn stored_event_at(row: &SqliteRow, o: usize) -> Result<StoredEvent, StoreError> {
    let cursor: i64 = row.try_get(o)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("events cursor {cursor}: {what}"));
    let chain: Option<&str> = row.try_get(o + 1)?;
    let chain = chain.ok_or_else(|| corrupt("chain name"))?;
    let block_number = unsigned(row, o + 2, &corrupt)?;
    let parent: Option<&[u8]> = row.try_get(o + 4)?;
    let block = BlockRef {
        number: block_number,
        hash: hash(row.try_get(o + 3)?).ok_or_else(|| corrupt("block_hash"))?,
        parent_hash: parent.and_then(hash).ok_or_else(|| corrupt("header"))?,
    };
    let block_timestamp: Option<i64> = row.try_get(o + 5)?;
    let block_timestamp = block_timestamp
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| corrupt("block_timestamp"))?;
    let log_index: i64 = row.try_get(o + 8)?;
    let log = if log_index == BLOCK_LOG_INDEX {
        None
    } else {
        Some(log_fields(row, o, &corrupt)?)
    };
    let safe: Option<i64> = row.try_get(o + 19)?;
    let finalized: Option<i64> = row.try_get(o + 20)?;
    let as_block = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    let providers_seen: i64 = row.try_get(o + 17)?;
    let first_provider: Option<String> = row.try_get(o + 16)?;
    Ok(StoredEvent {
        cursor,
        event: Event {
            chain: ChainName::from(chain),
            block,
            block_timestamp,
            log,
        },
        removed: row.try_get::<i64, _>(o + 15)? != 0,
        finality: finality_of(block_number, as_block(safe), as_block(finalized)),
        first_provider: first_provider.ok_or_else(|| corrupt("provider name"))?,
        providers_seen: u32::try_from(providers_seen).unwrap_or(u32::MAX),
        received_at_ms: row.try_get(o + 18)?,
    })
}

/// Columns `o + 6..=o + 14` of a log row.
fn log_fields(
    row: &SqliteRow,
    o: usize,
    corrupt: &impl Fn(&str) -> StoreError,
) -> Result<LogFields, StoreError> {
    let tx_hash: Option<&[u8]> = row.try_get(o + 6)?;
    let tx_index: Option<i64> = row.try_get(o + 7)?;
    let log_index: i64 = row.try_get(o + 8)?;
    let address: Option<&[u8]> = row.try_get(o + 9)?;
    let mut topics = Vec::with_capacity(4);
    for column in o + 10..=o + 13 {
        match row.try_get::<Option<&[u8]>, _>(column)? {
            Some(bytes) => topics.push(hash(bytes).ok_or_else(|| corrupt("topic"))?),
            None => break,
        }
    }
    let data: Option<&[u8]> = row.try_get(o + 14)?;
    Ok(LogFields {
        tx_hash: tx_hash.and_then(hash).ok_or_else(|| corrupt("tx_hash"))?,
        tx_index: tx_index
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| corrupt("tx_index"))?,
        log_index: u64::try_from(log_index).map_err(|_| corrupt("log_index"))?,
        address: address
            .and_then(|a| Address::try_from(a).ok())
            .ok_or_else(|| corrupt("address"))?,
        topics,
        data: Bytes::copy_from_slice(data.ok_or_else(|| corrupt("data"))?),
    })
}

fn unsigned(
    row: &SqliteRow,
    column: usize,
    corrupt: &impl Fn(&str) -> StoreError,
) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| corrupt("negative number"))
}

fn hash(bytes: &[u8]) -> Option<B256> {
    B256::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finality_is_derived_from_the_checkpoint() {
        let cases = [
            (10, None, None, Finality::Latest),
            (10, Some(9), None, Finality::Latest),
            (10, Some(10), None, Finality::Safe),
            (10, Some(12), Some(9), Finality::Safe),
            (10, Some(12), Some(10), Finality::Finalized),
            (10, None, Some(11), Finality::Finalized),
        ];
        for (number, safe, finalized, want) in cases {
            assert_eq!(
                finality_of(number, safe, finalized),
                want,
                "block {number} safe {safe:?} finalized {finalized:?}"
            );
        }
    }

    #[test]
    fn numbers_past_i64_are_refused() {
        assert_eq!(to_sql_int(7, "block").unwrap(), 7);
        let err = to_sql_int(u64::MAX, "block_number").unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
}
