//! Reads of what a chain holds and has pruned: for the coverage ledger, `/v1/chains`, the
//! retention passes and the `cursor_expired` check.

use alloy_primitives::B256;

use super::{Held, Mark};
use crate::domain::{ChainName, Cursor};
use crate::store::rows::to_sql_int;
use crate::store::{Store, StoreError};

impl Store {
    /// `chain`'s oldest stored block and its timestamp (Unix seconds), `None` when it has none.
    pub async fn oldest_block(&self, chain: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT block_number, block_timestamp FROM headers WHERE chain = (SELECT id FROM names WHERE name = ?) \
             ORDER BY block_number LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.shared.readers)
        .await?;
        Ok(row.and_then(|(n, ts)| Some((u64::try_from(n).ok()?, u64::try_from(ts).ok()?))))
    }

    /// The ends of what `chain` holds (one read snapshot).
    pub async fn held(&self, chain: &str) -> Result<Held, StoreError> {
        let mut tx = self.shared.readers.begin().await?;
        // Walks the identity key up from the lowest height (the partial index of blocks would
        // sort every block of the chain first: a scan per call, on a status page once a second).
        let first: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT block_number, block_hash FROM events INDEXED BY events_identity \
             WHERE chain = (SELECT id FROM names WHERE name = ?) AND log_index = -1 AND removed = 0 \
             ORDER BY block_number LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&mut *tx)
        .await?;
        let (oldest, newest): (Option<i64>, Option<i64>) =
            // Two subqueries: SQLite answers a lone min() or max() from the index's ends, both
            // in one aggregate by reading every row of the chain.
            sqlx::query_as(
                "SELECT (SELECT min(cursor) FROM events WHERE chain = c.id), \
                        (SELECT max(cursor) FROM events WHERE chain = c.id) \
                 FROM (SELECT (SELECT id FROM names WHERE name = ?) AS id) AS c",
            )
                .bind(chain)
                .fetch_one(&mut *tx)
                .await?;
        let mark: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT low_block, oldest_cursor, pruned_events FROM retention WHERE chain = ?",
        )
        .bind(chain)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let first_block = match first {
            Some((n, hash)) => {
                let corrupt = || StoreError::Corrupt(format!("block {n} of {chain}"));
                let n = u64::try_from(n).map_err(|_| corrupt())?;
                Some((n, B256::try_from(hash.as_slice()).map_err(|_| corrupt())?))
            }
            None => None,
        };
        Ok(Held {
            first_block,
            cursors: oldest.zip(newest),
            mark: mark.map(|(low, oldest, pruned)| Mark {
                low_block: u64::try_from(low).unwrap_or_default(),
                oldest_cursor: oldest,
                pruned_events: u64::try_from(pruned).unwrap_or_default(),
            }),
        })
    }

    /// The canonical hash of `chain`'s block `n`, when stored.
    pub async fn block_hash_at(&self, chain: &str, n: u64) -> Result<Option<B256>, StoreError> {
        let hash: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT block_hash FROM events \
             WHERE chain = (SELECT id FROM names WHERE name = ?) AND block_number = ? AND log_index = -1 AND removed = 0",
        )
        .bind(chain)
        .bind(to_sql_int(n, "block_number")?)
        .fetch_optional(&self.shared.readers)
        .await?;
        hash.map(|h| {
            B256::try_from(h.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("block {n} of {chain}: hash")))
        })
        .transpose()
    }

    /// Every chain's mark, by chain name.
    pub async fn retention_marks(&self) -> Result<Vec<(ChainName, Mark)>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT chain, low_block, oldest_cursor, pruned_events FROM retention ORDER BY chain",
        )
        .fetch_all(&self.shared.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(chain, low, oldest, pruned)| {
                let mark = Mark {
                    low_block: u64::try_from(low).unwrap_or_default(),
                    oldest_cursor: oldest,
                    pruned_events: u64::try_from(pruned).unwrap_or_default(),
                };
                (ChainName::from(chain.as_str()), mark)
            })
            .collect())
    }

    /// The lowest cursor a reader of `chain` (of every chain: `None`) may resume after without
    /// missing a pruned change; 0 when nothing was ever pruned.
    pub async fn oldest_cursor(&self, chain: Option<&str>) -> Result<Cursor, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT max(oldest_cursor) FROM retention WHERE ? IS NULL OR chain = ?",
        )
        .bind(chain)
        .bind(chain)
        .fetch_one(&self.shared.readers)
        .await?;
        Ok(oldest.unwrap_or(0))
    }
}
