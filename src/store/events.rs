//! The batched write path ([`Store::write_batch`]); the reads are in `query`.
//!
//! Cursors come from an in-memory sequence owned by the single writer, initialised at open from
//! the database. A batch assigns `last + 1 ..` to its events in order, inserts them with
//! multi-row `INSERT OR IGNORE` (the unique content key ignores a duplicate), merges the
//! providers of the ignored ones into the existing rows, writes the checkpoint (and any
//! finality advance) in the same transaction, commits, and only then moves the sequence. An
//! assigned cursor present in the table afterwards marks an inserted row; an absent one, a
//! duplicate.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;

use crate::domain::{ChainName, Cursor, Event, EventKey, StoredEvent};

use super::checkpoint::{self, Checkpoint, FinalityAdvance, Levels};
use super::names::Names;
use super::reorg::{self, Canonical, Retraction};
use super::retention::Windows;
use super::rows::finality_of;
use super::spans;
use super::upsert::{Upserted, insert_events, merge_masks};
use super::{Store, StoreError};

/// One event as delivered to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event: Event,
    /// The provider `id` whose copy this is (never its URL).
    pub provider: String,
    /// Milliseconds since the Unix epoch when the aggregator received it.
    pub received_at_ms: i64,
    /// The providers that delivered this content, bit `i` for the chain's `i`-th configured
    /// provider (the writer folds copies arriving together into one). The stored
    /// `providers_seen` is the number of bits set over every delivery, so a provider delivering
    /// the same content twice (a reconnect, a restart's re-read) still counts once.
    pub providers_mask: u64,
}

/// More deliveries of an event already sent to the writer in an earlier batch: its row's
/// providers mask takes these bits (no new row, no cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redelivery {
    pub chain: ChainName,
    pub key: EventKey,
    pub block_number: u64,
    pub providers_mask: u64,
}

/// What one transaction stores, in this order: events (of any chains), redeliveries, canonical
/// ranges (orphans at those heights are removed), and checkpoints (at most one per chain).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub chain_events: Vec<NewEvent>,
    pub redeliveries: Vec<Redelivery>,
    pub canonical: Vec<Canonical>,
    pub checkpoints: Vec<Checkpoint>,
}

/// The outcome of a committed batch, for the publisher (which sends nothing uncommitted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The rows this batch created, in cursor order.
    pub inserted: Vec<StoredEvent>,
    /// Events of the batch whose content was already stored (before or earlier in the batch):
    /// no new row, the existing row's `providers_seen` incremented. A duplicate may leave a gap
    /// in the cursors: cursors are strictly increasing, not dense.
    pub duplicates: usize,
    /// Removals and restorations by reorg, after `inserted` in cursor order.
    pub retractions: Vec<Retraction>,
    /// Finality advances recorded by the batch's checkpoints, last in cursor order.
    pub finality: Vec<FinalityAdvance>,
}

/// The writer's cursor sequence (guarded by `Shared::sequence`).
#[derive(Debug)]
pub(crate) struct Sequence {
    pub(super) last: Cursor,
    /// Set while a transaction is in flight. Still set at the next batch means the previous one
    /// ended without reaching the end of `write_batch` (an error, or the future was dropped
    /// during COMMIT), so whether its cursors were used is unknown: reload from the database.
    pub(super) in_doubt: bool,
    /// Each pruned chain's low-water mark and event count.
    pub(super) windows: Windows,
    /// Interned chain and provider names the writer has committed.
    pub(super) names: Names,
}

impl Sequence {
    pub(crate) fn new(last: Cursor, windows: Windows) -> Sequence {
        Sequence {
            last,
            in_doubt: false,
            windows,
            names: Names::default(),
        }
    }
}

/// The highest cursor ever used: the sequence row, events and changes (see `V1__initial.sql`).
pub(crate) async fn load_last_cursor(pool: &SqlitePool) -> Result<Cursor, StoreError> {
    let mut conn = pool.acquire().await?;
    load_last_cursor_on(&mut conn).await
}

pub(crate) async fn load_last_cursor_on(conn: &mut SqliteConnection) -> Result<Cursor, StoreError> {
    // Each max() over a rowid is a single B-tree descent.
    let last: i64 = sqlx::query_scalar(
        "SELECT max((SELECT last_cursor FROM cursor_sequence WHERE id = 1), \
                    coalesce((SELECT max(cursor) FROM events), 0), \
                    coalesce((SELECT max(cursor) FROM changes), 0))",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(last)
}

impl Store {
    /// Stores a batch in one transaction: every event stored once by its content key, then the
    /// checkpoint. Either all of it commits or none of it, and the cursor sequence only moves
    /// after the commit. Events below their chain's retention mark are dropped (and counted):
    /// pruned history is not brought back by a late delivery.
    pub async fn write_batch(&self, batch: WriteBatch) -> Result<Committed, StoreError> {
        self.try_write_batch(batch).await.map_err(|(err, _)| err)
    }

    /// [`Store::write_batch`], handing the batch back when it fails, to be retried without
    /// keeping a copy of it meanwhile.
    pub async fn try_write_batch(
        &self,
        batch: WriteBatch,
    ) -> Result<Committed, (StoreError, WriteBatch)> {
        let mut batch = batch;
        match self.transact(&mut batch).await {
            Ok(done) => Ok(committed(batch.chain_events, done)),
            Err(err) => Err((err, batch)),
        }
    }

    async fn transact(&self, batch: &mut WriteBatch) -> Result<Transacted, StoreError> {
        if batch.chain_events.is_empty()
            && batch.redeliveries.is_empty()
            && batch.canonical.is_empty()
            && batch.checkpoints.is_empty()
        {
            return Ok(Transacted::default());
        }
        let shared = &self.shared;
        let mut sequence = shared.sequence.lock().await;
        // Under the lock: a prune cannot slip in between the check and the insert.
        sequence
            .windows
            .drop_below(&mut batch.chain_events, &mut batch.redeliveries);
        let WriteBatch {
            chain_events,
            redeliveries,
            canonical,
            checkpoints,
        } = &*batch;
        let mut conn = shared.writer.acquire().await?;
        if sequence.in_doubt {
            sequence.last = load_last_cursor_on(&mut conn).await?;
            shared.committed.store(sequence.last, Ordering::Release);
            sequence.in_doubt = false;
        }
        let wal_before = shared.wal_ceiling.hold(&mut conn).await?;
        let first = sequence.last + 1;
        sequence.in_doubt = true;

        // IMMEDIATE: take the write lock now rather than upgrading later, so another process
        // holding the file makes us wait (busy_timeout) instead of failing mid-batch.
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let mut wanted: Vec<&str> = Vec::new();
        for new in chain_events {
            wanted.push(&new.event.chain);
            wanted.push(&new.provider);
        }
        wanted.extend(redeliveries.iter().map(|r| &*r.chain));
        let names = sequence.names.resolve(&mut tx, &wanted).await?;
        let statements = &shared.statements;
        let seen = insert_events(&mut tx, statements, &names, first, chain_events).await?;
        spans::record(&mut tx, statements, &names, first, chain_events, &seen).await?;
        // Changes follow the last inserted event: trailing duplicates give their numbers back
        // (never visible anywhere), so an all-duplicate batch consumes no cursor at all.
        let mut next = match seen.iter().rposition(|u| u.inserted) {
            Some(i) => first + cursor_count(i)? + 1,
            None => first,
        };
        let now = now_ms();
        merge_masks(&mut tx, statements, &names, redeliveries).await?;
        let added = names.into_added();
        let mut retractions = Vec::new();
        for range in canonical {
            retractions.extend(reorg::apply(&mut tx, range, &mut next, now).await?);
        }
        let (finality, levels) =
            write_checkpoints(&mut tx, checkpoints, chain_events, &seen, &mut next, now).await?;
        let last = next - 1;
        if last >= first {
            sqlx::query("UPDATE cursor_sequence SET last_cursor = ? WHERE id = 1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.wrote();
        shared.wal_ceiling.committed(wal_before);
        sequence.names.keep(added);

        if last >= first {
            sequence.last = last;
            shared.committed.store(last, Ordering::Release);
        }
        sequence.in_doubt = false;
        let added = chain_events.iter().zip(&seen).filter(|(_, u)| u.inserted);
        sequence
            .windows
            .added(added.map(|(new, _)| &new.event.chain));
        drop(sequence);
        Ok(Transacted {
            seen,
            first,
            levels,
            finality,
            retractions,
        })
    }
}

/// Writes the batch's checkpoints (their finality advances take cursors from `next`) and
/// gathers the settled heights of every chain a new row belongs to, as this transaction leaves
/// them: a chain's checkpoint says them, the others are read.
async fn write_checkpoints(
    tx: &mut SqliteConnection,
    checkpoints: &[Checkpoint],
    chain_events: &[NewEvent],
    seen: &[Upserted],
    next: &mut Cursor,
    now: i64,
) -> Result<(Vec<FinalityAdvance>, Vec<(ChainName, Levels)>), StoreError> {
    let mut finality = Vec::new();
    let mut levels: Vec<(ChainName, Levels)> = Vec::new();
    for cp in checkpoints {
        let (advances, left) = checkpoint::write(tx, cp, next, now).await?;
        finality.extend(advances);
        levels.retain(|(chain, _)| *chain != cp.chain);
        levels.push((cp.chain.clone(), left));
    }
    for (new, _) in chain_events.iter().zip(seen).filter(|(_, u)| u.inserted) {
        let chain = &new.event.chain;
        if !levels.iter().any(|(c, _)| c == chain) {
            levels.push((chain.clone(), checkpoint::levels(tx, chain).await?));
        }
    }
    Ok((finality, levels))
}

/// What a committed transaction decided, before its events move into [`Committed`].
#[derive(Default)]
struct Transacted {
    seen: Vec<Upserted>,
    first: Cursor,
    levels: Vec<(ChainName, Levels)>,
    finality: Vec<FinalityAdvance>,
    retractions: Vec<Retraction>,
}

/// Builds the publisher's view of a committed batch, moving the events (no clone).
fn committed(events: Vec<NewEvent>, done: Transacted) -> Committed {
    let Transacted {
        seen,
        first,
        levels,
        finality,
        retractions,
    } = done;
    let mut inserted = Vec::with_capacity(seen.iter().filter(|u| u.inserted).count());
    for ((i, new), upserted) in events.into_iter().enumerate().zip(&seen) {
        if !upserted.inserted {
            continue;
        }
        let (safe, finalized) = levels
            .iter()
            .find(|(c, _)| *c == new.event.chain)
            .map(|(_, l)| l.as_blocks())
            .unwrap_or_default();
        inserted.push(StoredEvent {
            // `i` < batch length, which `cursor_count` already accepted.
            cursor: first + i as Cursor,
            finality: finality_of(new.event.block.number, safe, finalized),
            event: new.event,
            removed: false,
            first_provider: new.provider,
            providers_seen: upserted.providers_seen.max(1),
            received_at_ms: new.received_at_ms,
        });
    }
    let duplicates = seen.len() - inserted.len();
    Committed {
        inserted,
        duplicates,
        retractions,
        finality,
    }
}

pub(super) fn cursor_count(n: usize) -> Result<Cursor, StoreError> {
    Cursor::try_from(n).map_err(|_| StoreError::Invalid(format!("batch of {n} events")))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
