//! How one `GET /v1/events` page is read: which index walks the rows, between which cursors.
//!
//! Every page is read in cursor order from an index whose entries are already in cursor order
//! for the filter's leading term (each index ends in the rowid, the cursor), so a page stops
//! after `limit` matches and never sorts the table:
//! - a value filter (address, topic, tx_hash) seeks its index of the value's last 8 bytes;
//! - otherwise a chain's rows walk `events_chain` (its blocks `events_chain_blocks`), one arm
//!   per chain when no chain is named, merged by cursor;
//! - a block hash is found in `headers`, and each block it names is one arm on the identity
//!   index; several addresses are one arm each, merged.
//!
//! A block range (`from_block`, `to_block`, `finality`) never drives the read: it becomes the
//! cursor span its blocks' events took (`spans::bounds`), which bounds the walk at both ends,
//! and each row's height is checked beside it. The heights are written `+e.block_number` so
//! that SQLite cannot choose the identity index for them (a range scan plus a sort by cursor,
//! bounded by the size of the range rather than the page).

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::super::StoreError;
use super::super::rows::{EVENT_COLUMNS, EVENT_FROM, EVENT_JOINS, to_sql_int};
use super::super::spans;
use super::{EventQuery, Order};
use crate::domain::{Cursor, EventFilter, EventKind, Finality};

/// `events e` and its chain's checkpoint `c`, for the `finality` terms of an arm.
const SETTLED_FROM: &str = "events e LEFT JOIN names cn ON cn.id = e.chain \
     LEFT JOIN checkpoints c ON c.chain = cn.name";

/// The cursors a walk is bounded by, both inclusive.
type Span = (Cursor, Cursor);

/// A chain the page may read, with the cursor span its block range allows.
#[derive(Debug, Clone, Copy)]
struct Scope {
    chain: i64,
    /// `None`: no block range was asked, every cursor.
    span: Option<Span>,
}

/// One index walk in cursor order; a page of several arms merges them.
#[derive(Debug, Clone)]
enum Arm {
    /// The filter's own terms on every chain in scope (a value index leads).
    Filter { chain: Option<i64> },
    /// One chain's rows.
    Chain(Scope),
    /// One of several addresses.
    Address { chain: Option<i64>, index: usize },
    /// The rows of one stored block (a `block_hash` filter).
    Block { chain: i64, number: i64 },
}

/// The SQL of a page, or `None` when the filters cannot match a stored row.
pub(super) async fn build(
    conn: &mut SqliteConnection,
    q: &EventQuery,
) -> Result<Option<QueryBuilder<Sqlite>>, StoreError> {
    build_after(conn, q, "").await
}

/// [`build`] after `prefix` (`EXPLAIN QUERY PLAN `, in the plan tests).
pub(super) async fn build_after(
    conn: &mut SqliteConnection,
    q: &EventQuery,
    prefix: &'static str,
) -> Result<Option<QueryBuilder<Sqlite>>, StoreError> {
    let scopes = scopes(conn, q).await?;
    if scopes.is_empty() {
        return Ok(None);
    }
    let arms = arms(conn, q, &scopes).await?;
    if arms.is_empty() {
        return Ok(None);
    }
    let mut sql = QueryBuilder::<Sqlite>::new(prefix);
    let order = match q.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    if let [(arm, span)] = arms.as_slice() {
        sql.push(format!(
            "SELECT {EVENT_COLUMNS} FROM {EVENT_FROM} WHERE 1 = 1"
        ));
        push_arm(&mut sql, q, arm, *span)?;
        sql.push(format!(" ORDER BY e.cursor {order} LIMIT "))
            .push_bind(i64::from(q.limit));
        return Ok(Some(sql));
    }
    // The arms merged by cursor, lazily: each term of the compound walks its index in cursor
    // order and is read only while its next row is the page's next (a term with its own
    // ORDER BY ... LIMIT would be read to its limit and sorted before the merge). Then the
    // page's rows.
    sql.push(format!("SELECT {EVENT_COLUMNS} FROM ("));
    for (i, (arm, span)) in arms.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        // Only what the terms read: the row's columns, and the checkpoint for `finality`.
        sql.push(match q.filter.finality {
            Some(_) => format!("SELECT e.cursor AS cursor FROM {SETTLED_FROM} WHERE 1 = 1"),
            None => "SELECT e.cursor AS cursor FROM events e WHERE 1 = 1".to_owned(),
        });
        push_arm(&mut sql, q, arm, *span)?;
    }
    sql.push(format!(" ORDER BY 1 {order} LIMIT "))
        .push_bind(i64::from(q.limit))
        .push(format!(
            ") AS page JOIN events e ON e.cursor = page.cursor {EVENT_JOINS} \
             ORDER BY e.cursor {order}"
        ));
    Ok(Some(sql))
}

/// The index walks of a page: one per block of a `block_hash`, per address of several, per
/// chain when a block range spans chains differently or no value index leads; else one.
async fn arms(
    conn: &mut SqliteConnection,
    q: &EventQuery,
    scopes: &[Scope],
) -> Result<Vec<(Arm, Option<Span>)>, StoreError> {
    let f = &q.filter;
    // Where a value index leads: on one chain (the named one), or across every chain in one
    // walk; but a block range is a different cursor span on each chain (their blocks were
    // written at different times), and one walk from the lowest to the highest would read
    // everything written in between: then one walk per chain, each in its own span.
    let ranged = scopes.iter().any(|s| s.span.is_some());
    let walks: Vec<(Option<i64>, Option<Span>)> = if ranged {
        scopes.iter().map(|s| (Some(s.chain), s.span)).collect()
    } else {
        vec![(f.chain.as_ref().map(|_| scopes[0].chain), None)]
    };
    let arms = if let Some(hash) = &f.block_hash {
        let blocks: Vec<(i64, i64)> =
            sqlx::query_as("SELECT chain, block_number FROM headers WHERE block_hash = ?")
                .bind(hash.as_slice().to_vec())
                .fetch_all(&mut *conn)
                .await?;
        blocks
            .into_iter()
            .filter(|(c, _)| scopes.iter().any(|s| s.chain == *c))
            .map(|(chain, number)| (Arm::Block { chain, number }, None))
            .collect()
    } else if f.addresses.len() > 1 && f.tx_hash.is_none() {
        walks
            .iter()
            .flat_map(|&(chain, span)| {
                (0..f.addresses.len()).map(move |index| (Arm::Address { chain, index }, span))
            })
            .collect()
    } else if !f.addresses.is_empty() || f.tx_hash.is_some() || f.topics.iter().any(Option::is_some)
    {
        walks
            .iter()
            .map(|&(chain, span)| (Arm::Filter { chain }, span))
            .collect()
    } else {
        scopes.iter().map(|s| (Arm::Chain(*s), s.span)).collect()
    };
    Ok(arms)
}

/// The chains the page may read (the named one, or every chain with stored events) with the
/// cursor spans of their block ranges; a chain whose range holds nothing is left out.
async fn scopes(conn: &mut SqliteConnection, q: &EventQuery) -> Result<Vec<Scope>, StoreError> {
    let f = &q.filter;
    let chains: Vec<(i64, Option<i64>, Option<i64>)> = match &f.chain {
        Some(name) => {
            sqlx::query_as(
                "SELECT n.id, c.safe_block, c.finalized_block FROM names n \
                 LEFT JOIN checkpoints c ON c.chain = n.name WHERE n.name = ?",
            )
            .bind(name)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT n.id, c.safe_block, c.finalized_block FROM names n \
                 LEFT JOIN checkpoints c ON c.chain = n.name \
                 WHERE n.id IN (SELECT chain FROM header_groups)",
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let ranged = f.from_block.is_some() || f.to_block.is_some() || f.finality.is_some();
    let mut scopes = Vec::with_capacity(chains.len());
    for (chain, safe, finalized) in chains {
        let height = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
        // The same rule as `rows::finality_of`: finalized implies safe.
        let settled = match f.finality {
            Some(Finality::Finalized) => Some(height(finalized)),
            Some(Finality::Safe) => Some(height(safe).max(height(finalized))),
            Some(Finality::Latest) | None => None,
        };
        let to = match (f.to_block, settled) {
            (_, Some(None)) => continue, // nothing settled yet
            (Some(to), Some(Some(s))) => Some(to.min(s)),
            (to, Some(s)) => to.or(s),
            (to, None) => to,
        };
        if !ranged {
            scopes.push(Scope { chain, span: None });
            continue;
        }
        if let Some(span) = spans::bounds(conn, chain, f.from_block.unwrap_or(0), to).await? {
            scopes.push(Scope {
                chain,
                span: Some(span),
            });
        }
    }
    Ok(scopes)
}

/// The terms of one arm: its own leading term, then every filter as a check on the row.
fn push_arm(
    sql: &mut QueryBuilder<Sqlite>,
    q: &EventQuery,
    arm: &Arm,
    span: Option<Span>,
) -> Result<(), StoreError> {
    let f = &q.filter;
    match arm {
        Arm::Filter { chain } => {
            if let Some(chain) = chain {
                sql.push(" AND e.chain = ").push_bind(*chain);
            }
        }
        Arm::Chain(scope) => {
            sql.push(" AND e.chain = ").push_bind(scope.chain);
        }
        Arm::Address { chain, index } => {
            if let Some(chain) = chain {
                sql.push(" AND e.chain = ").push_bind(*chain);
            }
            if let Some(address) = f.addresses.get(*index) {
                push_value(sql, "address", address.as_slice());
            }
        }
        Arm::Block { chain, number } => {
            sql.push(" AND e.chain = ").push_bind(*chain);
            sql.push(" AND e.block_number = ").push_bind(*number);
        }
    }
    if let Some(hash) = &f.block_hash {
        sql.push(" AND e.block_hash = ")
            .push_bind(hash.as_slice().to_vec());
    }
    push_values(sql, f, arm);
    // Checked on the row only (see the module's note on `+`).
    if let Some(from) = f.from_block {
        sql.push(" AND +e.block_number >= ")
            .push_bind(to_sql_int(from, "from_block")?);
    }
    if let Some(to) = f.to_block {
        sql.push(" AND +e.block_number <= ")
            .push_bind(to_sql_int(to, "to_block")?);
    }
    match f.finality {
        Some(Finality::Finalized) => sql.push(" AND +e.block_number <= c.finalized_block"),
        Some(Finality::Safe) => sql
            .push(" AND (+e.block_number <= c.safe_block OR +e.block_number <= c.finalized_block)"),
        Some(Finality::Latest) | None => &mut *sql,
    };
    if !q.include_removed {
        sql.push(" AND e.removed = 0");
    }
    push_bounds(sql, q, span);
    Ok(())
}

/// The filter's value terms, each checked on the row (the arm's own leading term is already in).
fn push_values(sql: &mut QueryBuilder<Sqlite>, f: &EventFilter, arm: &Arm) {
    // Literal, not bound: SQLite only proves the partial index `log_index = -1` applies when
    // the query spells the same constant.
    match f.kind {
        Some(EventKind::Block) => sql.push(" AND e.log_index = -1"),
        Some(EventKind::Log) => sql.push(" AND e.log_index >= 0"),
        None => &mut *sql,
    };
    if let [address] = f.addresses.as_slice() {
        push_value(sql, "address", address.as_slice());
    } else if !f.addresses.is_empty() && !matches!(arm, Arm::Address { .. }) {
        sql.push(" AND e.address IN (");
        let mut list = sql.separated(", ");
        for address in &f.addresses {
            list.push_bind(address.as_slice().to_vec());
        }
        sql.push(")");
    }
    for (i, topic) in f.topics.iter().enumerate() {
        if let Some(topic) = topic {
            push_value(
                sql,
                ["topic0", "topic1", "topic2", "topic3"][i],
                topic.as_slice(),
            );
        }
    }
    if let Some(tx) = &f.tx_hash {
        push_value(sql, "tx_hash", tx.as_slice());
    }
}

/// The walk's cursor bounds: its span, narrowed by `after` in the page's direction.
fn push_bounds(sql: &mut QueryBuilder<Sqlite>, q: &EventQuery, span: Option<Span>) {
    let (mut low, mut high) = span.unwrap_or((Cursor::MIN, Cursor::MAX));
    match (q.order, q.after) {
        (Order::Asc, Some(after)) => low = low.max(after.saturating_add(1)),
        (Order::Desc, Some(after)) => high = high.min(after.saturating_sub(1)),
        (_, None) => {}
    }
    if low > Cursor::MIN {
        sql.push(" AND e.cursor >= ").push_bind(low);
    }
    if high < Cursor::MAX {
        sql.push(" AND e.cursor <= ").push_bind(high);
    }
}

/// `column = value`, sought on the column's index of its last 8 bytes and checked in full.
fn push_value(sql: &mut QueryBuilder<Sqlite>, column: &str, value: &[u8]) {
    let (start, key) = index_key(value);
    sql.push(format!(" AND substr(e.{column}, {start}, 8) = "))
        .push_bind(key.to_vec());
    sql.push(format!(" AND e.{column} = "))
        .push_bind(value.to_vec());
}

/// What the value indexes hold of a value: its last 8 bytes, and where they start (1-based, as
/// `substr` counts), the expression `V5__compact_events.sql` indexes.
pub(super) fn index_key(value: &[u8]) -> (usize, &[u8]) {
    let start = value.len().saturating_sub(8);
    (start + 1, &value[start..])
}
