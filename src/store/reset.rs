//! `livechain reset-chain`: a chain's stored history retracted and its checkpoint forgotten, so
//! the next run indexes the chain over from its configured start (after a node reset, or with
//! another chain now behind the same URL).

use std::sync::atomic::Ordering;

use super::events::load_last_cursor_on;
use super::{Store, StoreError};

/// What a reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// Events that were canonical and are now `removed`, each with a removal of its own cursor.
    pub retracted: u64,
    /// The checkpoint deleted, if the chain had one.
    pub checkpoint: Option<u64>,
}

impl Store {
    /// Retracts every canonical event of `chain` as a reorg would (rows stay, marked `removed`,
    /// each retraction a change with its own cursor, so a stream client resuming from any
    /// cursor learns of it) and deletes the chain's checkpoint, in one transaction. For a
    /// stopped service only: the caller holds the database's [`super::DatabaseLock`].
    pub async fn reset_chain(&self, chain: &str) -> Result<Reset, StoreError> {
        let shared = &self.shared;
        let mut sequence = shared.sequence.lock().await;
        let mut conn = shared.writer.acquire().await?;
        sequence.in_doubt = true;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let last = load_last_cursor_on(&mut tx).await?;
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT block_number FROM checkpoints WHERE chain = ?")
                .bind(chain)
                .fetch_optional(&mut *tx)
                .await?;
        let now = super::events::now_ms();
        // Removals in the order the events were added, numbered after the last cursor.
        let retracted = sqlx::query(
            "INSERT INTO changes (cursor, chain, kind, event_cursor, created_at) \
             SELECT ?1 + row_number() OVER (ORDER BY cursor), ?3, 'removed', cursor, ?2 \
             FROM events WHERE chain = (SELECT id FROM names WHERE name = ?3) AND removed = 0",
        )
        .bind(last)
        .bind(now)
        .bind(chain)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE events SET removed = 1 WHERE chain = (SELECT id FROM names WHERE name = ?) AND removed = 0",
        )
            .bind(chain)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM checkpoints WHERE chain = ?")
            .bind(chain)
            .execute(&mut *tx)
            .await?;
        // The chain is indexed over from its start: nothing below the old mark is refused now.
        // The pruned cursor stays: those changes are gone for readers either way.
        sqlx::query("UPDATE retention SET low_block = 0 WHERE chain = ?")
            .bind(chain)
            .execute(&mut *tx)
            .await?;
        let last = last + i64::try_from(retracted).unwrap_or(i64::MAX);
        sqlx::query("UPDATE cursor_sequence SET last_cursor = max(last_cursor, ?) WHERE id = 1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sequence.last = last;
        shared.committed.store(last, Ordering::Release);
        sequence.in_doubt = false;
        sequence.windows.reset(chain);
        Ok(Reset {
            retracted,
            checkpoint: checkpoint.and_then(|n| u64::try_from(n).ok()),
        })
    }
}
