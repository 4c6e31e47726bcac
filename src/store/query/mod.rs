//! The reads: REST pages of events (how each is read: [`plan`]) and single events by cursor.
//!
//! Pagination is by cursor, never by OFFSET, so page 1,000 costs what page 1 costs.

mod plan;

use sqlx::AssertSqlSafe;

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

impl Store {
    /// The events matching `q`, in cursor order, at most `q.limit`. The page's bounds and its
    /// rows are read in one snapshot.
    pub async fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.shared.readers.begin().await?;
        let Some(mut sql) = plan::build(&mut tx, q).await? else {
            return Ok(Vec::new());
        };
        let found = sql.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        found.iter().map(rows::stored_event).collect()
    }
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
