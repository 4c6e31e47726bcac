//! Fixed statistics for SQLite's query planner, written at every open.
//!
//! The planner chooses between indexes by the row counts in `sqlite_stat1`. Measured ones
//! (`ANALYZE`, `PRAGMA optimize`) describe the data at one moment: on an empty database they say
//! nothing, sampled ones can be far off, and plans then change with a restart or after months of
//! growth. The service never analyses; it writes these rows instead, which describe the shape
//! every Livechain database has (a few chains, tens of events per block, addresses and topics
//! far more selective than a chain, a transaction hash nearly unique). Plans are then the same
//! on every database, at every size, before and after a restart, and the tests pin them
//! (`tests/it/store/plans.rs`). Changing an index means changing this table and those tests.

use sqlx::SqliteConnection;

use super::StoreError;

/// `(table, index, stat)` rows of `sqlite_stat1`: the rows in the table or index, then the
/// average rows per distinct value of its first 1, 2, … columns.
const STAT1: &[(&str, Option<&str>, &str)] = &[
    ("events", None, "10000000"),
    (
        "events",
        Some("events_identity"),
        "10000000 2000000 25 25 1 noskipscan",
    ),
    ("events", Some("events_chain"), "10000000 2000000"),
    ("events", Some("events_chain_blocks"), "400000 80000"),
    ("events", Some("events_address"), "9600000 2000"),
    ("events", Some("events_topic0"), "9600000 20000"),
    ("events", Some("events_topic1"), "7000000 200"),
    ("events", Some("events_topic2"), "5000000 200"),
    ("events", Some("events_topic3"), "2000000 200"),
    ("events", Some("events_tx_hash"), "9600000 4"),
    ("events", Some("events_removed"), "1000 200 10"),
    // A header is found by its whole key (or its hash), one row.
    (
        "headers",
        Some("sqlite_autoindex_headers_1"),
        "400000 80000 1 1",
    ),
    ("headers", Some("headers_hash"), "400000 1"),
    ("changes", None, "100000"),
    ("changes", Some("changes_event"), "10000 1"),
    ("changes", Some("changes_finality"), "90000 20000 1"),
];

/// Replaces whatever statistics the file holds with [`STAT1`], in one transaction, and makes
/// `conn` read them. Connections opened afterwards read them when they first prepare a query.
pub(crate) async fn pin(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let have = |table: &'static str| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)",
        )
        .bind(table)
    };
    if !have("sqlite_stat1").fetch_one(&mut *tx).await? {
        // Only ANALYZE creates the statistics tables; this one reads a single row.
        sqlx::query("ANALYZE cursor_sequence")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM sqlite_stat1")
        .execute(&mut *tx)
        .await?;
    for (table, index, stat) in STAT1 {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)")
            .bind(table)
            .bind(index)
            .bind(stat)
            .execute(&mut *tx)
            .await?;
    }
    // Samples an older version's ANALYZE left: they would refine the fixed counts per value.
    if have("sqlite_stat4").fetch_one(&mut *tx).await? {
        sqlx::query("DELETE FROM sqlite_stat4")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
