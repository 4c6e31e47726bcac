//! Retention: a chain's oldest whole blocks deleted a short transaction at a time, and the
//! low-water mark that keeps the window honest afterwards (`V4__retention.sql`).
//!
//! A prune step deletes every row (header and logs) of the oldest heights, never above the
//! chain's finalized height (or its checkpoint less `confirmations` without finality tags), so
//! the reorg window is never touched. In the same transaction it raises the chain's mark: the
//! lowest block still held, and the highest cursor pruned. The writer drops what providers
//! deliver below the mark ([`Windows::drop_below`]); readers resuming below the pruned cursor
//! are told so rather than handed a gap.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqliteConnection};

use alloy_primitives::B256;

use crate::domain::{ChainName, Cursor};
use crate::telemetry::metrics as m;

use super::events::{NewEvent, Redelivery, now_ms};
use super::rows::to_sql_int;
use super::spans;
use super::{Store, StoreError};
use cut::{age_cut, count_cut, heights_below};

mod cut;
mod reads;

/// Free pages kept for new rows, as a share of the file: the rows a prune step frees are
/// usually written again within the next pass, so returning those pages would only grow the
/// file again. Beyond this share (a lowered limit, a long expiry) they are returned.
const FREE_SHARE_KEPT: i64 = 4; // one page in four
/// Pages one incremental vacuum moves at most: its transaction holds the writer up meanwhile.
const VACUUM_STEP_PAGES: i64 = 2048;

/// What a chain has pruned so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// The lowest block still held: everything below was pruned.
    pub low_block: u64,
    /// The highest cursor of any pruned row: a resume after it misses nothing.
    pub oldest_cursor: Cursor,
    /// Events pruned over the chain's life.
    pub pruned_events: u64,
}

/// What a chain holds, for the coverage ledger: the ends of its stored blocks and cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The lowest canonical block stored, with its hash.
    pub first_block: Option<(u64, B256)>,
    /// The lowest and highest cursor of the chain's stored events.
    pub cursors: Option<(Cursor, Cursor)>,
    /// What the chain pruned, if it ever did.
    pub mark: Option<Mark>,
}

/// What one prune step may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneTarget {
    /// Delete the oldest blocks until at most this many events remain.
    pub keep_events: Option<u64>,
    /// Delete the blocks whose timestamp (Unix seconds) is below this.
    pub expire_before: Option<u64>,
    /// Without a finalized height, blocks this deep below the checkpoint count as final.
    pub confirmations: u64,
    /// Rows one step reads and (whole blocks aside) deletes at most: the step's transaction
    /// holds the writer up for as long as it runs.
    pub max_rows: u64,
}

/// What one prune step deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    /// Heights deleted (each with every header and log stored for it).
    pub heights: u64,
    /// The chain's mark after the step.
    pub mark: Mark,
    /// Rows the chain holds after the step, when counted.
    pub retained: Option<u64>,
    /// How long the step held the writer (waiting for it not included): what pacing weighs.
    pub held: std::time::Duration,
}

/// The writer's view of each pruned chain, guarded by the writer's lock: what the write path
/// drops, and the event counts retention compares with its limit.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    chains: Vec<Window>,
}

#[derive(Debug)]
struct Window {
    chain: ChainName,
    low_block: u64,
    /// Rows held for the chain, once counted ([`Store::retained_events`]); kept current by
    /// every commit and prune after that.
    retained: Option<u64>,
}

impl Windows {
    fn get_mut(&mut self, chain: &str) -> &mut Window {
        let at = match self.chains.iter().position(|w| &*w.chain == chain) {
            Some(at) => at,
            None => {
                self.chains.push(Window {
                    chain: Arc::from(chain),
                    low_block: 0,
                    retained: None,
                });
                self.chains.len() - 1
            }
        };
        &mut self.chains[at]
    }

    /// Forgets `chain`'s mark (`reset-chain`).
    pub(super) fn reset(&mut self, chain: &str) {
        self.get_mut(chain).low_block = 0;
    }

    /// Removes the events and repeat deliveries below their chain's mark, counting them per
    /// chain: pruned history is not stored again, and a late copy has no row to count on.
    pub(crate) fn drop_below(&self, events: &mut Vec<NewEvent>, copies: &mut Vec<Redelivery>) {
        if self.chains.iter().all(|w| w.low_block == 0) {
            return;
        }
        let below = |chain: &ChainName, block: u64| {
            let below = self
                .chains
                .iter()
                .find(|w| w.chain == *chain)
                .is_some_and(|w| block < w.low_block);
            if below {
                metrics::counter!(m::EVENTS_BELOW_RETENTION, "chain" => chain.to_string())
                    .increment(1);
            }
            below
        };
        events.retain(|new| !below(&new.event.chain, new.event.block.number));
        copies.retain(|copy| !below(&copy.chain, copy.block_number));
    }

    /// Counts rows a commit added to chains whose count is kept.
    pub(crate) fn added<'a>(&mut self, chains: impl Iterator<Item = &'a ChainName>) {
        if self.chains.iter().all(|w| w.retained.is_none()) {
            return;
        }
        let mut last: Option<(&ChainName, usize)> = None;
        for chain in chains {
            let at = match last {
                Some((c, at)) if Arc::ptr_eq(c, chain) || c == chain => at,
                _ => match self.chains.iter().position(|w| w.chain == *chain) {
                    Some(at) => at,
                    None => continue,
                },
            };
            last = Some((chain, at));
            if let Some(n) = &mut self.chains[at].retained {
                *n += 1;
            }
        }
    }
}

/// Reads every chain's low-water mark, for the writer at open.
pub(crate) async fn load(conn: &mut SqliteConnection) -> Result<Windows, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT chain, low_block FROM retention")
        .fetch_all(&mut *conn)
        .await?;
    let chains = rows
        .into_iter()
        .map(|(chain, low_block)| Window {
            chain: Arc::from(chain.as_str()),
            low_block: u64::try_from(low_block).unwrap_or_default(),
            retained: None,
        })
        .collect();
    Ok(Windows { chains })
}

impl Store {
    /// Rows held for `chain` (removed ones included). Counted once under the writer's lock,
    /// then kept by every commit and prune: cheap after the first call.
    pub async fn retained_events(&self, chain: &str) -> Result<u64, StoreError> {
        let mut sequence = self.shared.sequence.lock().await;
        if let Some(n) = sequence.windows.get_mut(chain).retained {
            return Ok(n);
        }
        let mut conn = self.shared.writer.acquire().await?;
        let count = count_rows(&mut conn, chain).await?;
        sequence.windows.get_mut(chain).retained = Some(count);
        Ok(count)
    }

    /// One prune step of `chain` in its own transaction: the oldest whole heights that `target`
    /// expires, at most about `target.max_rows` rows, never above the chain's final height.
    /// `None` when there is nothing to prune.
    pub async fn prune_step(
        &self,
        chain: &str,
        target: &PruneTarget,
    ) -> Result<Option<Pruned>, StoreError> {
        let shared = &self.shared;
        // One hold of the writer's lock for the whole step: the writer waits for one step only.
        let mut sequence = shared.sequence.lock().await;
        let began = std::time::Instant::now();
        let mut conn = shared.writer.acquire().await?;
        let retained = match (target.keep_events, sequence.windows.get_mut(chain).retained) {
            (None, _) => None,
            (Some(_), Some(n)) => Some(n),
            (Some(_), None) => {
                let n = count_rows(&mut conn, chain).await?;
                sequence.windows.get_mut(chain).retained = Some(n);
                Some(n)
            }
        };
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let Some(ceiling) = final_height(&mut tx, chain, target.confirmations).await? else {
            return Ok(None);
        };
        let oldest = oldest_rows(&mut tx, chain, target.max_rows).await?;
        let by_count = match (target.keep_events, retained) {
            (Some(keep), Some(held)) if held > keep => {
                count_cut(&oldest, (held - keep).min(target.max_rows))
            }
            _ => None,
        };
        let by_age = target
            .expire_before
            .and_then(|before| age_cut(&oldest, before, target.max_rows));
        let Some(first) = oldest.first().map(|(n, _)| *n) else {
            return Ok(None);
        };
        let cut = by_count
            .max(by_age)
            .map(|cut| cut.min(ceiling.saturating_add(1)));
        let Some(cut) = cut.filter(|cut| *cut > first) else {
            return Ok(None);
        };
        let heights = heights_below(&oldest, cut);
        let (events, pruned_cursor) = delete_below(&mut tx, chain, cut).await?;
        let mark = raise_mark(&mut tx, chain, cut, pruned_cursor, events).await?;
        tx.commit().await?;
        self.wrote();

        let window = sequence.windows.get_mut(chain);
        window.low_block = window.low_block.max(cut);
        if let Some(n) = &mut window.retained {
            *n = n.saturating_sub(events);
        }
        let retained = window.retained;
        drop(sequence);
        let held = began.elapsed();
        metrics::counter!(m::PRUNED_EVENTS, "chain" => chain.to_owned()).increment(events);
        Ok(Some(Pruned {
            events,
            heights,
            mark,
            retained,
            held,
        }))
    }
}

impl Store {
    /// Returns one step of free pages beyond a quarter of the file to the file system, in a
    /// database made with incremental auto-vacuum; returns the pages returned (0 when there was
    /// nothing to return, or the file was made before auto-vacuum was set: it reuses them).
    pub async fn reclaim_free_pages(&self) -> Result<u64, StoreError> {
        let _sequence = self.shared.sequence.lock().await;
        let mut conn = self.shared.writer.acquire().await?;
        let (mode, pages, free): (i64, i64, i64) = sqlx::query_as(
            "SELECT auto_vacuum, page_count, freelist_count \
             FROM pragma_auto_vacuum(), pragma_page_count(), pragma_freelist_count()",
        )
        .fetch_one(&mut *conn)
        .await?;
        // 2 = INCREMENTAL.
        let surplus = free - pages / FREE_SHARE_KEPT;
        if mode != 2 || surplus <= 0 {
            return Ok(0);
        }
        let step = surplus.min(VACUUM_STEP_PAGES);
        sqlx::query(AssertSqlSafe(format!("PRAGMA incremental_vacuum({step})")))
            .execute(&mut *conn)
            .await?;
        self.wrote();
        Ok(u64::try_from(step).unwrap_or_default())
    }
}

/// Rows held for `chain`, from its header groups' counts (no scan of `events`).
async fn count_rows(conn: &mut SqliteConnection, chain: &str) -> Result<u64, StoreError> {
    spans::count(conn, chain).await
}

/// The highest block `chain` may prune: its finalized height, else its checkpoint less
/// `confirmations`; `None` without a checkpoint or below block 0.
async fn final_height(
    conn: &mut SqliteConnection,
    chain: &str,
    confirmations: u64,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT block_number, finalized_block FROM checkpoints WHERE chain = ?")
            .bind(chain)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.and_then(|(checkpoint, finalized)| {
        let checkpoint = u64::try_from(checkpoint).ok()?;
        match finalized.and_then(|f| u64::try_from(f).ok()) {
            Some(finalized) => Some(finalized.min(checkpoint)),
            None => checkpoint.checked_sub(confirmations),
        }
    }))
}

/// The heights and timestamps of `chain`'s oldest `max_rows + 1` rows, oldest first.
async fn oldest_rows(
    conn: &mut SqliteConnection,
    chain: &str,
    max_rows: u64,
) -> Result<Vec<(u64, u64)>, StoreError> {
    // One header row per block, each with at least one event: as many blocks as rows wanted
    // are always enough.
    let wanted = max_rows.saturating_add(1);
    let blocks: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT block_number, block_timestamp, events FROM headers WHERE chain = (SELECT id FROM names WHERE name = ?) \
         ORDER BY block_number LIMIT ?",
    )
    .bind(chain)
    .bind(to_sql_int(wanted, "max_rows")?)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = Vec::new();
    for (n, ts, events) in blocks {
        let row = (
            u64::try_from(n).unwrap_or_default(),
            u64::try_from(ts).unwrap_or_default(),
        );
        let left = wanted.saturating_sub(rows.len() as u64);
        let take = u64::try_from(events).unwrap_or_default().min(left);
        rows.extend(std::iter::repeat_n(
            row,
            usize::try_from(take).unwrap_or_default(),
        ));
        if rows.len() as u64 >= wanted {
            break;
        }
    }
    Ok(rows)
}

/// Deletes `chain`'s rows below `cut`, their removals and restorations (the foreign key's
/// cascade) and the finality advances that speak only of them. Returns the events deleted and
/// the highest cursor gone.
async fn delete_below(
    conn: &mut SqliteConnection,
    chain: &str,
    cut: u64,
) -> Result<(u64, Cursor), StoreError> {
    let cut = to_sql_int(cut, "cut")?;
    // Each max() reads an index: the rows' cursors are the rowids the indexes carry.
    let highest: Option<i64> = sqlx::query_scalar(
        // (The scalar max() of several values is NULL if any is: each is coalesced.)
        "SELECT max( \
           coalesce((SELECT max(last_cursor) FROM headers \
              WHERE chain = (SELECT id FROM names WHERE name = ?1) AND block_number < ?2), 0), \
           coalesce((SELECT max(x.cursor) FROM changes x WHERE x.event_cursor IN \
              (SELECT cursor FROM events \
               WHERE chain = (SELECT id FROM names WHERE name = ?1) AND block_number < ?2)), 0), \
           coalesce((SELECT max(cursor) FROM changes \
              WHERE kind = 'finality' AND chain = ?1 AND to_block < ?2), 0))",
    )
    .bind(chain)
    .bind(cut)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM changes WHERE kind = 'finality' AND chain = ? AND to_block < ?")
        .bind(chain)
        .bind(cut)
        .execute(&mut *conn)
        .await?;
    let events = sqlx::query(
        "DELETE FROM events WHERE chain = (SELECT id FROM names WHERE name = ?) AND block_number < ?",
    )
    .bind(chain)
    .bind(cut)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    spans::prune_below(conn, chain, u64::try_from(cut).unwrap_or_default()).await?;
    Ok((events, highest.unwrap_or(0)))
}

async fn raise_mark(
    conn: &mut SqliteConnection,
    chain: &str,
    cut: u64,
    pruned_cursor: Cursor,
    events: u64,
) -> Result<Mark, StoreError> {
    let (low, oldest, pruned): (i64, i64, i64) = sqlx::query_as(
        "INSERT INTO retention (chain, low_block, oldest_cursor, pruned_events, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (chain) DO UPDATE SET \
           low_block = max(low_block, excluded.low_block), \
           oldest_cursor = max(oldest_cursor, excluded.oldest_cursor), \
           pruned_events = pruned_events + excluded.pruned_events, \
           updated_at = excluded.updated_at \
         RETURNING low_block, oldest_cursor, pruned_events",
    )
    .bind(chain)
    .bind(to_sql_int(cut, "low_block")?)
    .bind(pruned_cursor)
    .bind(to_sql_int(events, "pruned_events")?)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Mark {
        low_block: u64::try_from(low).unwrap_or_default(),
        oldest_cursor: oldest,
        pruned_events: u64::try_from(pruned).unwrap_or_default(),
    })
}
