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
    let first = to_sql_int(range.first, "canonical first block")?;
    let last = to_sql_int(range.first + span as u64, "canonical last block")?;
    let chain = range.chain.to_string();
    // Almost every range finds nothing to flip, and this is on the write path of every range:
    // look for orphans in the identity index alone (no table row is read), and for removed rows
    // in the small partial index of removed rows (`V3__removed_index.sql`).
    let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT DISTINCT block_number, block_hash FROM events INDEXED BY events_identity \
         WHERE chain = ? AND block_number BETWEEN ? AND ?",
    )
    .bind(&chain)
    .bind(first)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let foreign: Vec<Vec<u8>> = stored
        .into_iter()
        .filter(|(number, hash)| {
            let canonical = usize::try_from(number - first)
                .ok()
                .and_then(|i| range.hashes.get(i));
            canonical.is_none_or(|c| c.as_slice() != hash.as_slice())
        })
        .map(|(_, hash)| hash)
        .collect();
    let mut out = Vec::new();
    for restore in [false, true] {
        let mut sql = QueryBuilder::<Sqlite>::new("UPDATE events ");
        if restore {
            sql.push("INDEXED BY events_removed ");
        } else if foreign.is_empty() {
            continue;
        }
        sql.push("SET removed = ");
        sql.push(if restore { "0" } else { "1" });
        sql.push(" WHERE chain = ").push_bind(chain.clone());
        sql.push(" AND block_number BETWEEN ").push_bind(first);
        sql.push(" AND ").push_bind(last);
        sql.push(if restore {
            " AND removed = 1 AND block_hash IN ("
        } else {
            " AND removed = 0 AND block_hash IN ("
        });
        let mut list = sql.separated(", ");
        if restore {
            for hash in &range.hashes {
                list.push_bind(hash.as_slice().to_vec());
            }
        } else {
            for hash in &foreign {
                list.push_bind(hash.clone());
            }
        }
        sql.push(") RETURNING cursor");
        let mut flipped: Vec<Cursor> = sql.build_query_scalar().fetch_all(&mut *conn).await?;
        if flipped.is_empty() {
            continue;
        }
        flipped.sort_unstable();
        let kind = if restore { "restored" } else { "removed" };
        for &event_cursor in &flipped {
            sqlx::query(
                "INSERT INTO changes (cursor, chain, kind, event_cursor, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(*next)
            .bind(&chain)
            .bind(kind)
            .bind(event_cursor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            let event = read_event(conn, event_cursor).await?;
            out.push(Retraction {
                cursor: *next,
                restored: restore,
                event,
            });
            *next += 1;
        }
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
