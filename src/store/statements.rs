//! The SQL of the write path, built once at open: the multi-row inserts and redelivery merges
//! in every chunk size, and the statement texts the reads share.

use std::sync::Arc;

use super::rows::{EVENT_COLUMNS, EVENT_FROM};

/// Columns bound per event by the multi-row insert.
pub(super) const COLUMNS_PER_ROW: usize = 17;
/// Columns bound per `headers` row and per `header_groups` row.
pub(super) const HEADER_COLUMNS: usize = 8;
pub(super) const GROUP_COLUMNS: usize = 5;
/// Rows per INSERT (and redelivery UPDATE) statement, largest first. A batch of n rows is cut
/// greedily into these sizes: ten statement texts of each kind, each prepared once and cached by
/// sqlx, and a batch below 512 rows takes one statement per bit of its size (a 100-event block:
/// 64 + 32 + 4), each a round trip to SQLite's worker thread; coarser steps took more
/// statements per batch. 512 × 20 = 10240 parameters, well under SQLite's limit of 32766.
pub(super) const CHUNK_SIZES: [usize; 10] = [512, 256, 128, 64, 32, 16, 8, 4, 2, 1];
/// Rows the writer's worker thread may hand over before it waits for them to be taken.
pub(crate) const ROW_BUFFER: usize = 1024;

/// SQL built once at open: texts assembled from constants, and the multi-row inserts, one per
/// entry of [`CHUNK_SIZES`]. sqlx prepares each text once per connection and caches it.
pub(crate) struct Statements {
    pub(super) inserts: [Arc<str>; CHUNK_SIZES.len()],
    pub(super) redeliveries: [Arc<str>; CHUNK_SIZES.len()],
    pub(super) headers: [Arc<str>; CHUNK_SIZES.len()],
    pub(super) groups: [Arc<str>; CHUNK_SIZES.len()],
    pub(super) event_by_cursor: Arc<str>,
}

impl Statements {
    pub(crate) fn new() -> Statements {
        Statements {
            inserts: CHUNK_SIZES.map(|n| Arc::from(insert_sql(n))),
            redeliveries: CHUNK_SIZES.map(|n| Arc::from(redelivery_sql(n))),
            headers: CHUNK_SIZES.map(|n| Arc::from(headers_sql(n))),
            groups: CHUNK_SIZES.map(|n| Arc::from(groups_sql(n))),
            event_by_cursor: Arc::from(format!(
                "SELECT {EVENT_COLUMNS} FROM {EVENT_FROM} WHERE e.cursor = ?"
            )),
        }
    }
}

fn insert_sql(rows: usize) -> String {
    let values = values(rows, COLUMNS_PER_ROW);
    // OR IGNORE rather than an upsert: SQLite runs an `ON CONFLICT DO UPDATE` under a statement
    // journal (its UPDATE may abort midway), copying every page the statement touches and
    // allocating for it. A row this statement ignores is merged afterwards (see `insert_events`), and one that merges
    // nowhere broke a constraint: the batch fails. No RETURNING: sqlx hands each returned row
    // across threads as a message of its own; which rows are new is counted afterwards.
    format!(
        "INSERT OR IGNORE INTO events (cursor, chain, block_number, block_hash, log_index, \
             tx_hash, tx_index, address, topic0, topic1, topic2, topic3, data, first_provider, \
             received_at, providers_seen, providers_mask) \
         VALUES {values}"
    )
}

fn values(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    vec![row.as_str(); rows].join(",")
}

/// Records blocks' headers and cursor spans (`spans::record`): a block seen again in a later
/// batch (more of its logs, a restored reorg) widens its span and adds to its count.
fn headers_sql(rows: usize) -> String {
    format!(
        "INSERT INTO headers (chain, block_number, block_hash, parent_hash, block_timestamp, \
             first_cursor, last_cursor, events) VALUES {} \
         ON CONFLICT (chain, block_number, block_hash) DO UPDATE SET \
             first_cursor = min(first_cursor, excluded.first_cursor), \
             last_cursor = max(last_cursor, excluded.last_cursor), \
             events = events + excluded.events",
        values(rows, HEADER_COLUMNS)
    )
}

/// The same for groups of heights.
fn groups_sql(rows: usize) -> String {
    format!(
        "INSERT INTO header_groups (chain, grp, first_cursor, last_cursor, events) VALUES {} \
         ON CONFLICT (chain, grp) DO UPDATE SET \
             first_cursor = min(first_cursor, excluded.first_cursor), \
             last_cursor = max(last_cursor, excluded.last_cursor), \
             events = events + excluded.events",
        values(rows, GROUP_COLUMNS)
    )
}

/// Columns bound per redelivery: the mask, then the row's identity.
pub(super) const REDELIVERY_COLUMNS: usize = 5;

/// Merges the masks of `rows` redeliveries into their rows in one statement: the bound rows
/// are a table joined to `events` on its identity index (one index search per redelivery).
pub(crate) fn redelivery_sql(rows: usize) -> String {
    let values = values(rows, REDELIVERY_COLUMNS);
    format!(
        "UPDATE events SET {merge} FROM (VALUES {values}) AS r \
         WHERE events.chain = r.column2 AND events.block_number = r.column3 \
             AND events.block_hash = r.column4 AND events.log_index = r.column5",
        merge = merge_providers_sql("r.column1"),
    )
}

/// The SET clause OR-ing the mask `added` (an SQL expression) into a row's `providers_mask` and
/// setting `providers_seen` to the bits then set. SQLite has no popcount, so the count is the
/// sum of the 64 bits (evaluated only for rows that already exist). A row written before masks
/// existed (mask 0) keeps its count if that is higher.
fn merge_providers_sql(added: &str) -> String {
    let merged = format!("(providers_mask | {added})");
    let bits: Vec<String> = (0..64)
        .map(|i| format!("(({merged} >> {i}) & 1)"))
        .collect();
    let count = bits.join(" + ");
    format!(
        "providers_seen = CASE WHEN providers_mask = 0 THEN max(providers_seen, {count}) \
             ELSE {count} END, \
         providers_mask = {merged}"
    )
}

/// The largest entry of [`CHUNK_SIZES`] not above `left` (`left` > 0), and its index.
pub(super) fn chunk_size(left: usize) -> (usize, usize) {
    CHUNK_SIZES
        .iter()
        .copied()
        .enumerate()
        .find(|(_, n)| *n <= left)
        .unwrap_or((CHUNK_SIZES.len() - 1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_has_one_placeholder_per_column_and_row() {
        for n in CHUNK_SIZES {
            let sql = insert_sql(n);
            assert_eq!(sql.matches('?').count(), n * COLUMNS_PER_ROW, "{n} rows");
            let sql = redelivery_sql(n);
            assert_eq!(sql.matches('?').count(), n * REDELIVERY_COLUMNS, "{n} rows");
            assert_eq!(headers_sql(n).matches('?').count(), n * HEADER_COLUMNS);
            assert_eq!(groups_sql(n).matches('?').count(), n * GROUP_COLUMNS);
        }
        assert!(CHUNK_SIZES.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(CHUNK_SIZES.last(), Some(&1));
        assert!(CHUNK_SIZES[0] * COLUMNS_PER_ROW <= 32766);
    }
}
