//! The inserts of the write transaction: a batch's events as multi-row `INSERT OR IGNORE`
//! chunks, and the providers of repeat deliveries merged into their rows.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, SqliteConnection};

use super::StoreError;
use super::events::{NewEvent, Redelivery, cursor_count};
use super::names::Resolved;
use super::rows::{BLOCK_LOG_INDEX, to_sql_int};
use super::statements::{COLUMNS_PER_ROW, REDELIVERY_COLUMNS, Statements, chunk_size};
use crate::domain::{ChainName, Cursor, EventKey};

/// How the insert and merge left one event of a batch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Upserted {
    /// Whether its own cursor made a row (else it was a duplicate).
    pub(super) inserted: bool,
    /// The row's `providers_seen` at the end of the batch (0 for a duplicate).
    pub(super) providers_seen: u32,
}

/// Inserts `events` with cursors `first..`, chunk by chunk, merges the ones whose content was
/// already stored into the existing rows, then finds out which made rows.
///
/// The common batch has no duplicate at all: the inserts' counts of rows made say so, and every
/// row holds what was bound. Otherwise the cursors of that range are read back: an
/// assigned cursor that is absent was ignored, and its providers are merged into the row of
/// the same content (stored before, or earlier in the batch). An ignored event with no such
/// row broke a constraint of the table: the batch fails rather than lose it.
pub(super) async fn insert_events(
    conn: &mut SqliteConnection,
    statements: &Statements,
    names: &Resolved<'_>,
    first: Cursor,
    events: &[NewEvent],
) -> Result<Vec<Upserted>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut made = 0u64;
    let mut done = 0;
    while done < events.len() {
        let (size_index, size) = chunk_size(events.len() - done);
        let chunk = &events[done..done + size];
        let mut args = SqliteArguments::default();
        args.reserve(size * COLUMNS_PER_ROW, 0);
        for (offset, new) in chunk.iter().enumerate() {
            let cursor = first + cursor_count(done + offset)?;
            bind_event(&mut args, names, cursor, new)?;
        }
        let sql = AssertSqlSafe(statements.inserts[size_index].clone());
        // An ignored row is not counted: the batch's rows made, without a query.
        made += sqlx::query_with(sql, args)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        done += size;
    }
    let last = first + cursor_count(events.len() - 1)?;
    if usize::try_from(made).ok() == Some(events.len()) {
        return Ok(events
            .iter()
            .map(|new| Upserted {
                inserted: true,
                providers_seen: new.providers_mask.count_ones().max(1),
            })
            .collect());
    }
    let present: Vec<i64> =
        sqlx::query_scalar("SELECT cursor FROM events WHERE cursor BETWEEN ? AND ?")
            .bind(first)
            .bind(last)
            .fetch_all(&mut *conn)
            .await?;
    let mut seen = vec![Upserted::default(); events.len()];
    for cursor in present {
        if let Some(upserted) = usize::try_from(cursor - first)
            .ok()
            .and_then(|i| seen.get_mut(i))
        {
            upserted.inserted = true;
        }
    }
    merge_ignored(conn, statements, names, events, &seen).await?;
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT cursor, providers_seen FROM events WHERE cursor BETWEEN ? AND ?")
            .bind(first)
            .bind(last)
            .fetch_all(&mut *conn)
            .await?;
    for (cursor, providers_seen) in rows {
        if let Some(upserted) = usize::try_from(cursor - first)
            .ok()
            .and_then(|i| seen.get_mut(i))
        {
            upserted.providers_seen = u32::try_from(providers_seen).unwrap_or(u32::MAX);
        }
    }
    Ok(seen)
}

/// Merges the providers of the events the insert ignored (`seen[i].inserted` false) into the
/// rows of the same content, one merge per content. Fails naming the first event that found
/// no row: the insert ignored it for a constraint, not for a duplicate.
async fn merge_ignored(
    conn: &mut SqliteConnection,
    statements: &Statements,
    names: &Resolved<'_>,
    events: &[NewEvent],
    seen: &[Upserted],
) -> Result<(), StoreError> {
    let mut merges: Vec<Redelivery> = Vec::new();
    let mut by_content: HashMap<(&ChainName, EventKey), usize> = HashMap::new();
    for (new, _) in events.iter().zip(seen).filter(|(_, u)| !u.inserted) {
        let event = &new.event;
        match by_content.entry((&event.chain, event.key())) {
            Entry::Occupied(at) => merges[*at.get()].providers_mask |= new.providers_mask,
            Entry::Vacant(at) => {
                at.insert(merges.len());
                merges.push(Redelivery {
                    chain: event.chain.clone(),
                    key: event.key(),
                    block_number: event.block.number,
                    providers_mask: new.providers_mask,
                });
            }
        }
    }
    let merged = merge_masks(conn, statements, names, &merges).await?;
    if merged == merges.len() as u64 {
        return Ok(());
    }
    // Rare (a constraint broken): find which, to name it.
    for merge in &merges {
        if merge_masks(conn, statements, names, std::slice::from_ref(merge)).await? == 0 {
            let what = match merge.key.log_index {
                Some(i) => format!("log {i} of block {}", merge.block_number),
                None => format!("block {}", merge.block_number),
            };
            return Err(StoreError::Invalid(format!(
                "{what} ({}) of chain {} breaks a constraint of the events table",
                merge.key.block_hash, merge.chain
            )));
        }
    }
    Err(StoreError::Invalid(format!(
        "{} of {} ignored events merged into no row",
        merges.len() as u64 - merged,
        merges.len()
    )))
}

/// Binds one event's [`COLUMNS_PER_ROW`] columns in the order of [`insert_sql`].
fn bind_event(
    args: &mut SqliteArguments,
    names: &Resolved<'_>,
    cursor: Cursor,
    new: &NewEvent,
) -> Result<(), StoreError> {
    let event = &new.event;
    let block = &event.block;
    let bound = |r: Result<(), sqlx::error::BoxDynError>| {
        r.map_err(|e| StoreError::Invalid(format!("cannot bind event: {e}")))
    };
    bound(args.add(cursor))?;
    bound(args.add(names.id(&event.chain)?))?;
    bound(args.add(to_sql_int(block.number, "block_number")?))?;
    bound(args.add(block.hash.as_slice()))?;
    match &event.log {
        None => {
            bound(args.add(BLOCK_LOG_INDEX))?;
            bound(args.add(None::<&[u8]>))?; // tx_hash
            bound(args.add(None::<i64>))?; // tx_index
            for _ in 0..6 {
                bound(args.add(None::<&[u8]>))?; // address, topic0..3, data
            }
        }
        Some(log) => {
            if log.topics.len() > 4 {
                return Err(StoreError::Invalid(format!(
                    "log {} of block {} has {} topics; the EVM allows at most 4",
                    log.log_index,
                    block.hash,
                    log.topics.len()
                )));
            }
            bound(args.add(to_sql_int(log.log_index, "log_index")?))?;
            bound(args.add(log.tx_hash.as_slice()))?;
            bound(args.add(to_sql_int(log.tx_index, "tx_index")?))?;
            bound(args.add(log.address.as_slice()))?;
            for i in 0..4 {
                bound(args.add(log.topics.get(i).map(|t| t.as_slice())))?;
            }
            bound(args.add(log.data.as_ref()))?;
        }
    }
    bound(args.add(names.id(&new.provider)?))?;
    bound(args.add(new.received_at_ms))?;
    bound(args.add(i64::from(new.providers_mask.count_ones().max(1))))?;
    // The mask's bits as SQLite's signed 64-bit integer (bit 63 makes it negative).
    bound(args.add(i64::from_ne_bytes(new.providers_mask.to_ne_bytes())))?;
    Ok(())
}

/// Merges redeliveries' providers into their rows, chunk by chunk, and says how many rows took
/// them. For later copies a row that is not there (retention pruned it, or it was never
/// stored) has nothing to count: not an error.
pub(super) async fn merge_masks(
    conn: &mut SqliteConnection,
    statements: &Statements,
    names: &Resolved<'_>,
    redeliveries: &[Redelivery],
) -> Result<u64, StoreError> {
    let mut merged = 0;
    let mut done = 0;
    while done < redeliveries.len() {
        let (size_index, size) = chunk_size(redeliveries.len() - done);
        let mut args = SqliteArguments::default();
        args.reserve(size * REDELIVERY_COLUMNS, 0);
        let bound = |r: Result<(), sqlx::error::BoxDynError>| {
            r.map_err(|e| StoreError::Invalid(format!("cannot bind a redelivery: {e}")))
        };
        for r in &redeliveries[done..done + size] {
            let log_index = match r.key.log_index {
                Some(i) => to_sql_int(i, "log_index")?,
                None => BLOCK_LOG_INDEX,
            };
            bound(args.add(i64::from_ne_bytes(r.providers_mask.to_ne_bytes())))?;
            bound(args.add(names.id(&r.chain)?))?;
            bound(args.add(to_sql_int(r.block_number, "block_number")?))?;
            bound(args.add(r.key.block_hash.as_slice()))?;
            bound(args.add(log_index))?;
        }
        let sql = AssertSqlSafe(statements.redeliveries[size_index].clone());
        merged += sqlx::query_with(sql, args)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        done += size;
    }
    Ok(merged)
}
