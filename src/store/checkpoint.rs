//! Per-chain checkpoints (ARCHITECTURE.md, "Restart safety") and the finality advances they
//! record in the change feed.

use alloy_primitives::B256;
use sqlx::{Row, SqliteConnection};

use crate::domain::{ChainName, Cursor, Finality};

use super::rows::to_sql_int;
use super::{Store, StoreError};

/// The last block of a chain fully processed, and how far the chain is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub chain: ChainName,
    pub block_number: u64,
    pub block_hash: B256,
    /// Highest block the chain considers `safe`; `None` until known.
    pub safe_block: Option<u64>,
    /// Highest block the chain considers `finalized`; `None` until known.
    pub finalized_block: Option<u64>,
}

/// A change-feed entry: every block of `chain` up to `to_block` reached `finality`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalityAdvance {
    pub cursor: Cursor,
    pub chain: ChainName,
    pub finality: Finality,
    pub to_block: u64,
}

/// A chain's settled heights as stored (SQLite integers).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Levels {
    pub safe: Option<i64>,
    pub finalized: Option<i64>,
}

impl Levels {
    pub(crate) fn as_blocks(self) -> (Option<u64>, Option<u64>) {
        let block = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
        (block(self.safe), block(self.finalized))
    }
}

impl Store {
    /// The stored checkpoint of `chain`, if it has one.
    pub async fn checkpoint(&self, chain: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT chain, block_number, block_hash, safe_block, finalized_block \
             FROM checkpoints WHERE chain = ?",
        )
        .bind(chain)
        .fetch_optional(&self.shared.readers)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str| StoreError::Corrupt(format!("checkpoint {chain}: {what}"));
        let number: i64 = row.try_get(1)?;
        let hash: &[u8] = row.try_get(2)?;
        let (safe_block, finalized_block) = Levels {
            safe: row.try_get(3)?,
            finalized: row.try_get(4)?,
        }
        .as_blocks();
        Ok(Some(Checkpoint {
            chain: ChainName::from(row.try_get::<&str, _>(0)?),
            block_number: u64::try_from(number).map_err(|_| corrupt("block_number"))?,
            block_hash: B256::try_from(hash).map_err(|_| corrupt("block_hash"))?,
            safe_block,
            finalized_block,
        }))
    }
}

/// The stored safe/finalized heights of `chain` (both `None` without a checkpoint).
pub(crate) async fn levels(conn: &mut SqliteConnection, chain: &str) -> Result<Levels, StoreError> {
    let row: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT safe_block, finalized_block FROM checkpoints WHERE chain = ?")
            .bind(chain)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row
        .map(|(safe, finalized)| Levels { safe, finalized })
        .unwrap_or_default())
}

/// Writes `cp` inside the caller's transaction. Safe and finalized heights never move back (a
/// lower value from a lagging provider is ignored); each advance becomes a `changes` row taking
/// the next cursor from `next_cursor`. Returns the advances, safe before finalized, and the
/// chain's levels as the write leaves them.
pub(crate) async fn write(
    conn: &mut SqliteConnection,
    cp: &Checkpoint,
    next_cursor: &mut Cursor,
    now_ms: i64,
) -> Result<(Vec<FinalityAdvance>, Levels), StoreError> {
    let block_number = to_sql_int(cp.block_number, "checkpoint block_number")?;
    let safe = cp
        .safe_block
        .map(|b| to_sql_int(b, "safe_block"))
        .transpose()?;
    let finalized = cp
        .finalized_block
        .map(|b| to_sql_int(b, "finalized_block"))
        .transpose()?;

    let old = levels(conn, &cp.chain).await?;
    let new = Levels {
        safe: old.safe.max(safe),
        finalized: old.finalized.max(finalized),
    };
    sqlx::query(
        "INSERT INTO checkpoints \
             (chain, block_number, block_hash, safe_block, finalized_block, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (chain) DO UPDATE SET \
             block_number = excluded.block_number, block_hash = excluded.block_hash, \
             safe_block = excluded.safe_block, finalized_block = excluded.finalized_block, \
             updated_at = excluded.updated_at",
    )
    .bind(cp.chain.clone())
    .bind(block_number)
    .bind(cp.block_hash.as_slice())
    .bind(new.safe)
    .bind(new.finalized)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;

    let mut advances = Vec::new();
    let steps = [
        (Finality::Safe, old.safe, new.safe),
        (Finality::Finalized, old.finalized, new.finalized),
    ];
    for (finality, before, after) in steps {
        let Some(to_block) = after.filter(|_| after > before) else {
            continue;
        };
        let cursor = *next_cursor;
        sqlx::query(
            "INSERT INTO changes (cursor, chain, kind, finality, to_block, created_at) \
             VALUES (?, ?, 'finality', ?, ?, ?)",
        )
        .bind(cursor)
        .bind(cp.chain.clone())
        .bind(finality.as_str())
        .bind(to_block)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        *next_cursor += 1;
        advances.push(FinalityAdvance {
            cursor,
            chain: cp.chain.clone(),
            finality,
            // Non-negative: it came from a u64 through `to_sql_int` or from a CHECKed column.
            to_block: u64::try_from(to_block).unwrap_or_default(),
        });
    }
    Ok((advances, new))
}
