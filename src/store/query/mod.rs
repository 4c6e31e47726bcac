//! The reads: REST pages of events (how each is read: [`plan`]) and single events by cursor.
//!
//! Pagination is by cursor, never by OFFSET, so page 1,000 costs what page 1 costs.

mod plan;

use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

use super::rows;
use super::{Store, StoreError};
use crate::domain::{Cursor, EventFilter, StoredEvent};

/// Cursor order of a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A page of stored events: `GET /v1/events`, and the stream's replay and settled pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub filter: EventFilter,
    /// Include events a reorg retracted (default: canonical only). Only history reads choose:
    /// the live feed always carries retractions.
    pub include_removed: bool,
    /// Strictly after this cursor in the page's order (`desc`: strictly before).
    pub after: Option<Cursor>,
    pub limit: u32,
    pub order: Order,
}

/// SQLite virtual-machine steps between two looks at a query's deadline: a few microseconds.
const STEPS_PER_CHECK: i32 = 1000;

impl Store {
    /// The events matching `q`, in cursor order, at most `q.limit`. The page's bounds and its
    /// rows are read in one snapshot.
    pub async fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.shared.readers.acquire().await?;
        read_page(&mut conn, q).await
    }

    /// [`Store::query_events`], stopped by SQLite itself once it has run for `budget`
    /// ([`StoreError::TooCostly`]): a caller's query never holds a reader for long.
    pub async fn query_events_within(
        &self,
        q: &EventQuery,
        budget: Duration,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.shared.readers.acquire().await?;
        let deadline = Instant::now() + budget;
        conn.lock_handle()
            .await?
            .set_progress_handler(STEPS_PER_CHECK, move || Instant::now() < deadline);
        let result = read_page(&mut conn, q).await;
        let removed = match conn.lock_handle().await {
            Ok(mut handle) => {
                handle.remove_progress_handler();
                true
            }
            Err(_) => false,
        };
        if !removed {
            // Never back in the pool with a deadline that has passed.
            conn.close_on_drop();
        }
        result.map_err(|err| match err.is_interrupted() {
            true => StoreError::TooCostly(budget),
            false => err,
        })
    }
}

async fn read_page(
    conn: &mut SqliteConnection,
    q: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let Some(mut sql) = plan::build(&mut tx, q).await? else {
        return Ok(Vec::new());
    };
    let found = sql.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    found.iter().map(rows::stored_event).collect()
}

impl Store {
    /// The event whose addition took cursor `c`, with its current `removed`, finality and
    /// `providers_seen`.
    pub async fn event_by_cursor(&self, c: Cursor) -> Result<Option<StoredEvent>, StoreError> {
        let sql = AssertSqlSafe(self.shared.statements.event_by_cursor.clone());
        let row = sqlx::query(sql)
            .bind(c)
            .fetch_optional(&self.shared.readers)
            .await?;
        row.as_ref().map(rows::stored_event).transpose()
    }

    /// Rows stored for `chain`, removed ones included.
    pub async fn count_events(&self, chain: &str) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE chain = (SELECT id FROM names WHERE name = ?)",
        )
        .bind(chain)
        .fetch_one(&self.shared.readers)
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
