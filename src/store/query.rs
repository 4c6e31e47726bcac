//! The reads: the REST query builder (one parameterised SELECT over `events` per filter
//! combination) and single events by cursor.
//!
//! Every filter maps to an indexed column (see `V1__initial.sql`); pagination is by cursor,
//! never by OFFSET, so page 1,000 costs what page 1 costs.

use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};

use super::rows::{self, EVENT_COLUMNS, EVENT_FROM, to_sql_int};
use super::{Store, StoreError};
use crate::domain::{Cursor, EventFilter, EventKind, Finality, StoredEvent};

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
    /// The events matching `q`, in cursor order, at most `q.limit`.
    pub async fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let f = &q.filter;
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM {EVENT_FROM} WHERE 1 = 1"
        ));
        if let Some(chain) = &f.chain {
            sql.push(" AND e.chain = ").push_bind(chain.clone());
        }
        // Literal, not bound: SQLite only proves the partial index `kind = 'block'` applies
        // when the query spells the same constant.
        match f.kind {
            Some(EventKind::Block) => sql.push(" AND e.kind = 'block'"),
            Some(EventKind::Log) => sql.push(" AND e.kind = 'log'"),
            None => &mut sql,
        };
        if !f.addresses.is_empty() {
            sql.push(" AND e.address IN (");
            let mut list = sql.separated(", ");
            for address in &f.addresses {
                list.push_bind(address.as_slice().to_vec());
            }
            sql.push(")");
        }
        for (i, topic) in f.topics.iter().enumerate() {
            if let Some(topic) = topic {
                sql.push(format!(" AND e.topic{i} = "))
                    .push_bind(topic.as_slice().to_vec());
            }
        }
        if let Some(from) = f.from_block {
            sql.push(" AND e.block_number >= ")
                .push_bind(to_sql_int(from, "from_block")?);
        }
        if let Some(to) = f.to_block {
            sql.push(" AND e.block_number <= ")
                .push_bind(to_sql_int(to, "to_block")?);
        }
        if let Some(tx) = &f.tx_hash {
            sql.push(" AND e.tx_hash = ")
                .push_bind(tx.as_slice().to_vec());
        }
        if let Some(block) = &f.block_hash {
            sql.push(" AND e.block_hash = ")
                .push_bind(block.as_slice().to_vec());
        }
        if !q.include_removed {
            sql.push(" AND e.removed = 0");
        }
        // The same rule as `rows::finality_of`: finalized implies safe, so `safe` is at or below
        // either height. A chain may know its finalized block before (or above) its safe one,
        // and a missing height (NULL) settles nothing.
        match f.finality {
            Some(Finality::Finalized) => sql.push(" AND e.block_number <= c.finalized_block"),
            Some(Finality::Safe) => sql.push(
                " AND (e.block_number <= c.safe_block OR e.block_number <= c.finalized_block)",
            ),
            Some(Finality::Latest) | None => &mut sql,
        };
        let order = match q.order {
            Order::Asc => {
                if let Some(after) = q.after {
                    sql.push(" AND e.cursor > ").push_bind(after);
                }
                "ASC"
            }
            Order::Desc => {
                if let Some(after) = q.after {
                    sql.push(" AND e.cursor < ").push_bind(after);
                }
                "DESC"
            }
        };
        sql.push(format!(" ORDER BY e.cursor {order} LIMIT "))
            .push_bind(i64::from(q.limit));
        let found = sql.build().fetch_all(&self.shared.readers).await?;
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
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE chain = ?")
            .bind(chain)
            .fetch_one(&self.shared.readers)
            .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}
