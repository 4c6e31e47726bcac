//! Change-feed reads beyond additions: retractions and finality advances after a cursor, for
//! replaying the feed to a resuming subscriber. (Additions are `query_events` with `after`.)

use sqlx::Row;

use super::checkpoint::FinalityAdvance;
use super::reorg::Retraction;
use super::rows::{self, EVENT_COLUMNS, EVENT_JOINS, to_sql_int};
use super::{Store, StoreError};
use crate::domain::{ChainName, Cursor, Finality};

impl Store {
    /// Removals and restorations with a cursor above `after`, in cursor order, at most `limit`;
    /// only `chain`'s when given.
    pub async fn retractions_since(
        &self,
        after: Cursor,
        chain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Retraction>, StoreError> {
        // `c` is the checkpoints alias EVENT_COLUMNS expects; the change row is `x`.
        let sql = format!(
            "SELECT x.cursor, x.kind, {EVENT_COLUMNS} FROM changes x \
             JOIN events e ON e.cursor = x.event_cursor {EVENT_JOINS} \
             WHERE x.cursor > ? AND x.kind IN ('removed', 'restored') AND (? IS NULL OR x.chain = ?) \
             ORDER BY x.cursor LIMIT ?"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(chain)
            .bind(chain)
            .bind(i64::from(limit))
            .fetch_all(&self.shared.readers)
            .await?;
        found
            .iter()
            .map(|row| {
                let cursor: Cursor = row.try_get(0)?;
                let kind: &str = row.try_get(1)?;
                let event = rows::stored_event_at(row, 2)?;
                Ok(Retraction {
                    cursor,
                    restored: kind == "restored",
                    event,
                })
            })
            .collect()
    }

    /// Finality advances with a cursor above `after`, in cursor order, at most `limit`.
    pub async fn finality_since(
        &self,
        after: Cursor,
        chain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FinalityAdvance>, StoreError> {
        let rows: Vec<(Cursor, String, String, i64)> = sqlx::query_as(
            "SELECT cursor, chain, finality, to_block FROM changes \
             WHERE cursor > ? AND kind = 'finality' AND (? IS NULL OR chain = ?) \
             ORDER BY cursor LIMIT ?",
        )
        .bind(after)
        .bind(chain)
        .bind(chain)
        .bind(i64::from(limit))
        .fetch_all(&self.shared.readers)
        .await?;
        rows.into_iter()
            .map(|(cursor, chain, finality, to_block)| {
                let corrupt =
                    |what: &str| StoreError::Corrupt(format!("changes cursor {cursor}: {what}"));
                Ok(FinalityAdvance {
                    cursor,
                    chain: ChainName::from(chain.as_str()),
                    finality: finality
                        .parse::<Finality>()
                        .map_err(|_| corrupt("finality"))?,
                    to_block: u64::try_from(to_block).map_err(|_| corrupt("to_block"))?,
                })
            })
            .collect()
    }

    /// The `to_block` of the last `finality` advance of `chain` before cursor `before` (0 when
    /// there is none): where a settled-only subscriber's previous delivery ended.
    pub async fn finality_before(
        &self,
        chain: &str,
        finality: Finality,
        before: Cursor,
    ) -> Result<u64, StoreError> {
        let to: Option<i64> = sqlx::query_scalar(
            "SELECT to_block FROM changes WHERE kind = 'finality' AND chain = ? AND finality = ? \
             AND cursor < ? ORDER BY cursor DESC LIMIT 1",
        )
        .bind(chain)
        .bind(finality.as_str())
        .bind(before)
        .fetch_optional(&self.shared.readers)
        .await?;
        Ok(to.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// The canonical (not removed) block hashes of `chain` at heights `from..=to`, by height:
    /// what the range sync compares a provider's chain with to find a reorg's common ancestor.
    pub async fn canonical_blocks(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, alloy_primitives::B256)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT block_number, block_hash FROM events \
             WHERE chain = (SELECT id FROM names WHERE name = ?) AND block_number BETWEEN ? AND ? AND log_index = -1 AND removed = 0 \
             ORDER BY block_number",
        )
        .bind(chain)
        .bind(to_sql_int(from, "from")?)
        .bind(to_sql_int(to, "to")?)
        .fetch_all(&self.shared.readers)
        .await?;
        rows.into_iter()
            .map(|(n, hash)| {
                let corrupt = || StoreError::Corrupt(format!("block {n} of {chain}"));
                Ok((
                    u64::try_from(n).map_err(|_| corrupt())?,
                    alloy_primitives::B256::try_from(hash.as_slice()).map_err(|_| corrupt())?,
                ))
            })
            .collect()
    }
}
