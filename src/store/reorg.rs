//! Reorgs as data (ARCHITECTURE.md, "Reorgs are data"): the canonical hashes of a height range decide which stored
//! events are orphaned. Nothing is deleted: an orphan is marked `removed` and its retraction
//! takes a cursor in `changes`; an event a later reorg makes canonical again is restored the
//! same way. Both happen in the writer's transaction, next to the replacements.

use alloy_primitives::B256;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::StoreError;
use super::rows::{self, EVENT_COLUMNS, EVENT_FROM, to_sql_int};
use crate::domain::{ChainName, Cursor, StoredEvent};

/// The canonical block hash at each height `first..first + hashes.len()` of `chain`, as a
/// provider proved it (a parent-linked range). Anything else stored at those heights is orphaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub chain: ChainName,
    pub first: u64,
    pub hashes: Vec<B256>,
}

/// A change of an event's canonical status, with the change's own cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    pub cursor: Cursor,
    /// False: the event was removed by a reorg. True: a later reorg restored it.
    pub restored: bool,
    /// The event as it now is (its `cursor` is the one of its addition).
    pub event: StoredEvent,
}

/// Marks orphans removed and restores canonical rows in `range`, taking cursors from `next`.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    range: &Canonical,
    next: &mut Cursor,
    now_ms: i64,
) -> Result<Vec<Retraction>, StoreError> {
    let Some(span) = range.hashes.len().checked_sub(1) else {
        return Ok(Vec::new());
    };
    let chain = range.chain.to_string();
    let heights = Heights {
        chain: &chain,
        first: to_sql_int(range.first, "canonical first block")?,
        last: to_sql_int(range.first + span as u64, "canonical last block")?,
    };
    let foreign = foreign_hashes(conn, &heights, &range.hashes).await?;
    let mut out = Vec::new();
    if !foreign.is_empty() {
        let removed = flip(conn, &heights, false, foreign).await?;
        out.extend(record(conn, &chain, false, &removed, next, now_ms).await?);
    }
    let canonical = range.hashes.iter().map(|hash| hash.as_slice().to_vec());
    let restored = flip(conn, &heights, true, canonical).await?;
    out.extend(record(conn, &chain, true, &restored, next, now_ms).await?);
    Ok(out)
}

/// The heights of a canonical range, as bound in SQL.
struct Heights<'a> {
    chain: &'a str,
    first: i64,
    last: i64,
}

/// The hashes of blocks stored in `heights` that are not the canonical one of their height.
async fn foreign_hashes(
    conn: &mut SqliteConnection,
    heights: &Heights<'_>,
    canonical: &[B256],
) -> Result<Vec<Vec<u8>>, StoreError> {
    // Almost every range finds nothing to flip, and this is on the write path of every range:
    // look for orphans among the range's headers (one row per stored block), and for removed
    // rows in the small partial index of removed rows (`V3__removed_index.sql`).
    let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT block_number, block_hash FROM headers \
         WHERE chain = (SELECT id FROM names WHERE name = ?) AND block_number BETWEEN ? AND ?",
    )
    .bind(heights.chain)
    .bind(heights.first)
    .bind(heights.last)
    .fetch_all(&mut *conn)
    .await?;
    let foreign = stored
        .into_iter()
        .filter(|(number, hash)| {
            let canonical = usize::try_from(number - heights.first)
                .ok()
                .and_then(|i| canonical.get(i));
            canonical.is_none_or(|c| c.as_slice() != hash.as_slice())
        })
        .map(|(_, hash)| hash)
        .collect();
    Ok(foreign)
}

/// Sets `removed` (or clears it, when `restore`) on the events in `heights` whose block is one
/// of `hashes` and that are not so already; returns their cursors in order.
async fn flip(
    conn: &mut SqliteConnection,
    heights: &Heights<'_>,
    restore: bool,
    hashes: impl IntoIterator<Item = Vec<u8>>,
) -> Result<Vec<Cursor>, StoreError> {
    let mut sql = QueryBuilder::<Sqlite>::new("UPDATE events ");
    if restore {
        sql.push("INDEXED BY events_removed ");
    }
    sql.push("SET removed = ");
    sql.push(if restore { "0" } else { "1" });
    sql.push(" WHERE chain = (SELECT id FROM names WHERE name = ")
        .push_bind(heights.chain.to_owned())
        .push(")");
    sql.push(" AND block_number BETWEEN ")
        .push_bind(heights.first);
    sql.push(" AND ").push_bind(heights.last);
    sql.push(if restore {
        " AND removed = 1 AND block_hash IN ("
    } else {
        " AND removed = 0 AND block_hash IN ("
    });
    let mut list = sql.separated(", ");
    for hash in hashes {
        list.push_bind(hash);
    }
    sql.push(") RETURNING cursor");
    let mut flipped: Vec<Cursor> = sql.build_query_scalar().fetch_all(&mut *conn).await?;
    flipped.sort_unstable();
    Ok(flipped)
}

/// A `changes` row for each flipped event, each with the next cursor, and the event as it
/// now is.
async fn record(
    conn: &mut SqliteConnection,
    chain: &str,
    restored: bool,
    flipped: &[Cursor],
    next: &mut Cursor,
    now_ms: i64,
) -> Result<Vec<Retraction>, StoreError> {
    let kind = if restored { "restored" } else { "removed" };
    let mut out = Vec::with_capacity(flipped.len());
    for &event_cursor in flipped {
        sqlx::query(
            "INSERT INTO changes (cursor, chain, kind, event_cursor, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(*next)
        .bind(chain)
        .bind(kind)
        .bind(event_cursor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        let event = read_event(conn, event_cursor).await?;
        out.push(Retraction {
            cursor: *next,
            restored,
            event,
        });
        *next += 1;
    }
    Ok(out)
}

/// One event read inside the transaction (the read pool would not see its uncommitted state).
async fn read_event(
    conn: &mut SqliteConnection,
    cursor: Cursor,
) -> Result<StoredEvent, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM {EVENT_FROM} WHERE e.cursor = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cursor)
        .fetch_one(&mut *conn)
        .await?;
    rows::stored_event(&row)
}
