//! Where each stored block's events sit in the change feed: the `headers` rows (one per block,
//! with the header fields its events share) and their groups of 256 heights, written in the
//! writer's transaction and read to turn a block range into a cursor range
//! (`V5__compact_events.sql`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, SqliteConnection};

use super::StoreError;
use super::events::{NewEvent, cursor_count};
use super::names::Resolved;
use super::rows::to_sql_int;
use super::statements::{GROUP_COLUMNS, HEADER_COLUMNS, Statements, chunk_size};
use super::upsert::Upserted;
use crate::domain::Cursor;

/// Heights per `header_groups` row, as a shift: group = block_number >> GROUP_SHIFT.
pub(crate) const GROUP_SHIFT: u32 = 8;
const GROUP_SIZE: u64 = 1 << GROUP_SHIFT;

/// One block's events of a batch: its header and the span of the cursors they took.
struct Span<'a> {
    chain: i64,
    number: i64,
    event: &'a NewEvent,
    first: Cursor,
    last: Cursor,
    events: i64,
}

/// Records the header and cursor span of every block a batch inserted rows for (`seen`), and
/// the spans of their groups: one upsert row per block and per group.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    statements: &Statements,
    names: &Resolved<'_>,
    first: Cursor,
    events: &[NewEvent],
    seen: &[Upserted],
) -> Result<(), StoreError> {
    let mut spans: Vec<Span> = Vec::new();
    let mut at: HashMap<(i64, u64, &[u8]), usize> = HashMap::new();
    for (i, (new, _)) in events
        .iter()
        .zip(seen)
        .enumerate()
        .filter(|(_, (_, u))| u.inserted)
    {
        let cursor = first + cursor_count(i)?;
        let block = &new.event.block;
        let chain = names.id(&new.event.chain)?;
        match at.entry((chain, block.number, block.hash.as_slice())) {
            Entry::Occupied(i) => {
                let span = &mut spans[*i.get()];
                span.last = cursor;
                span.events += 1;
            }
            Entry::Vacant(slot) => {
                slot.insert(spans.len());
                spans.push(Span {
                    chain,
                    number: to_sql_int(block.number, "block_number")?,
                    event: new,
                    first: cursor,
                    last: cursor,
                    events: 1,
                });
            }
        }
    }
    upsert_headers(conn, statements, &spans).await?;
    let mut groups: Vec<(i64, i64, Cursor, Cursor, i64)> = Vec::new();
    for span in &spans {
        let grp = span.number >> GROUP_SHIFT;
        match groups.iter_mut().find(|g| g.0 == span.chain && g.1 == grp) {
            Some(g) => {
                g.2 = g.2.min(span.first);
                g.3 = g.3.max(span.last);
                g.4 += span.events;
            }
            None => groups.push((span.chain, grp, span.first, span.last, span.events)),
        }
    }
    upsert_groups(conn, statements, &groups).await
}

async fn upsert_headers(
    conn: &mut SqliteConnection,
    statements: &Statements,
    spans: &[Span<'_>],
) -> Result<(), StoreError> {
    let mut done = 0;
    while done < spans.len() {
        let (size_index, size) = chunk_size(spans.len() - done);
        let mut args = SqliteArguments::default();
        args.reserve(size * HEADER_COLUMNS, 0);
        for span in &spans[done..done + size] {
            let event = &span.event.event;
            let bound = |r: Result<(), sqlx::error::BoxDynError>| {
                r.map_err(|e| StoreError::Invalid(format!("cannot bind a header: {e}")))
            };
            bound(args.add(span.chain))?;
            bound(args.add(span.number))?;
            bound(args.add(event.block.hash.as_slice()))?;
            bound(args.add(event.block.parent_hash.as_slice()))?;
            bound(args.add(to_sql_int(event.block_timestamp, "block_timestamp")?))?;
            bound(args.add(span.first))?;
            bound(args.add(span.last))?;
            bound(args.add(span.events))?;
        }
        let sql = AssertSqlSafe(statements.headers[size_index].clone());
        sqlx::query_with(sql, args).execute(&mut *conn).await?;
        done += size;
    }
    Ok(())
}

async fn upsert_groups(
    conn: &mut SqliteConnection,
    statements: &Statements,
    groups: &[(i64, i64, Cursor, Cursor, i64)],
) -> Result<(), StoreError> {
    let mut done = 0;
    while done < groups.len() {
        let (size_index, size) = chunk_size(groups.len() - done);
        let mut args = SqliteArguments::default();
        args.reserve(size * GROUP_COLUMNS, 0);
        for (chain, grp, first, last, events) in &groups[done..done + size] {
            let bound = |r: Result<(), sqlx::error::BoxDynError>| {
                r.map_err(|e| StoreError::Invalid(format!("cannot bind a header group: {e}")))
            };
            bound(args.add(*chain))?;
            bound(args.add(*grp))?;
            bound(args.add(*first))?;
            bound(args.add(*last))?;
            bound(args.add(*events))?;
        }
        let sql = AssertSqlSafe(statements.groups[size_index].clone());
        sqlx::query_with(sql, args).execute(&mut *conn).await?;
        done += size;
    }
    Ok(())
}

/// The lowest and highest cursor of `chain`'s events at heights `from..=to` (`to` `None`: no
/// upper end), or `None` when none is stored there. Reads at most two partial groups of
/// `headers` rows and one `header_groups` row per 256 heights in between. The bounds may be
/// wider than the rows still held (see `header_groups`), never narrower.
pub(crate) async fn bounds(
    conn: &mut SqliteConnection,
    chain: i64,
    from: u64,
    to: Option<u64>,
) -> Result<Option<(Cursor, Cursor)>, StoreError> {
    // Heights are stored as i64: past that nothing is stored.
    let top = i64::MAX as u64;
    let to = to.unwrap_or(top).min(top);
    if from > to {
        return Ok(None);
    }
    let [left, groups, right] = parts(from, to);
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let row: (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(f), max(l) FROM ( \
           SELECT first_cursor AS f, last_cursor AS l FROM headers \
             WHERE chain = ?1 AND block_number >= ?2 AND block_number < ?3 \
           UNION ALL SELECT first_cursor, last_cursor FROM header_groups \
             WHERE chain = ?1 AND grp >= ?4 AND grp < ?5 \
           UNION ALL SELECT first_cursor, last_cursor FROM headers \
             WHERE chain = ?1 AND block_number >= ?6 AND block_number < ?7)",
    )
    .bind(chain)
    .bind(int(left.0))
    .bind(int(left.1))
    .bind(int(groups.0))
    .bind(int(groups.1))
    .bind(int(right.0))
    .bind(int(right.1))
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.0.zip(row.1))
}

/// `from..=to` (`to` < i64::MAX) as three half-open parts: the heights below the first whole
/// group, the whole groups, and the heights above the last whole group. A range within less
/// than one whole group is all in the first part.
fn parts(from: u64, to: u64) -> [(u64, u64); 3] {
    let full_lo = from.div_ceil(GROUP_SIZE);
    let full_hi = (to + 1) / GROUP_SIZE;
    if full_lo < full_hi {
        [
            (from, full_lo * GROUP_SIZE),
            (full_lo, full_hi),
            (full_hi * GROUP_SIZE, to + 1),
        ]
    } else {
        [(from, to + 1), (0, 0), (0, 0)]
    }
}

/// Events held for the chain with id `chain` (removed ones included): the sum of its groups.
pub(crate) async fn count(conn: &mut SqliteConnection, chain: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(events), 0) FROM header_groups \
         WHERE chain = (SELECT id FROM names WHERE name = ?)",
    )
    .bind(chain)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Forgets `chain`'s headers below `cut` (retention deleted their events): their groups go,
/// and the group holding `cut` counts only the events left in it.
pub(crate) async fn prune_below(
    conn: &mut SqliteConnection,
    chain: &str,
    cut: u64,
) -> Result<(), StoreError> {
    let cut = to_sql_int(cut, "cut")?;
    let group = cut >> GROUP_SHIFT;
    sqlx::query(
        "UPDATE header_groups SET events = events - ( \
             SELECT coalesce(sum(events), 0) FROM headers \
             WHERE chain = header_groups.chain AND block_number >= ?3 AND block_number < ?2) \
         WHERE chain = (SELECT id FROM names WHERE name = ?1) AND grp = ?4",
    )
    .bind(chain)
    .bind(cut)
    .bind(group << GROUP_SHIFT)
    .bind(group)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM header_groups WHERE chain = (SELECT id FROM names WHERE name = ?) AND grp < ?",
    )
    .bind(chain)
    .bind(group)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM headers WHERE chain = (SELECT id FROM names WHERE name = ?) \
         AND block_number < ?",
    )
    .bind(chain)
    .bind(cut)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_splits_into_edges_and_whole_groups() {
        for (from, to) in [
            (0u64, 0u64),
            (0, 255),
            (0, 256),
            (10, 1000),
            (256, 511),
            (300, 9_999),
        ] {
            let [left, groups, right] = parts(from, to);
            for h in from..=to {
                let inside = |(lo, hi): (u64, u64)| lo <= h && h < hi;
                let parts = [
                    inside(left),
                    inside((groups.0 * GROUP_SIZE, groups.1 * GROUP_SIZE)),
                    inside(right),
                ];
                let n = parts.iter().filter(|p| **p).count();
                assert_eq!(n, 1, "height {h} of {from}..={to}: {parts:?}");
            }
            // Nothing outside the range is in any part.
            let outside = [from.checked_sub(1), Some(to + 1)];
            for h in outside.into_iter().flatten() {
                let inside = |(lo, hi): (u64, u64)| lo <= h && h < hi;
                let grouped = (groups.0 * GROUP_SIZE, groups.1 * GROUP_SIZE);
                assert!(!inside(left) && !inside(grouped) && !inside(right), "{h}");
            }
        }
        // Wide ranges read few rows: 511 edge heights at most, one row per 256 heights.
        let [left, groups, right] = parts(1, 1_000_000);
        assert!(left.1 - left.0 + right.1 - right.0 <= 2 * GROUP_SIZE);
        assert_eq!(groups.1 - groups.0, 1_000_001 / GROUP_SIZE - 1);
    }
}
