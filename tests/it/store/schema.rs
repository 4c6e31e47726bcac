//! Migrations, tables and connection settings, a newer schema refused, one SQLite library.

use std::path::Path;

use livechain::store::{Store, StoreError};
use sqlx::{Connection, Row};

use super::{open, raw, temp_db};

#[tokio::test]
async fn migrations_apply_on_a_fresh_file_and_are_a_no_op_on_reopen() {
    let db = temp_db();
    let store = open(&db.path).await;
    assert_eq!(
        store.applied_migrations(),
        [
            "V1__initial",
            "V2__providers_mask",
            "V3__removed_index",
            "V4__retention",
            "V5__compact_events"
        ]
    );
    let version = store.schema_version().await.unwrap();
    assert!(version >= 1);
    assert_eq!(store.max_cursor().await, 0);
    store.close().await;

    let store = open(&db.path).await;
    assert!(
        store.applied_migrations().is_empty(),
        "second open applied migrations"
    );
    assert_eq!(store.schema_version().await.unwrap(), version);
    store.close().await;
}

#[tokio::test]
async fn tables_columns_and_journal_mode_are_as_specified() {
    let db = temp_db();
    open(&db.path).await.close().await;
    let mut conn = raw(&db.path).await;

    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    // (table, strict, without_rowid)
    let expected = [
        ("events", true, false),
        ("changes", true, false),
        ("names", true, false),
        ("headers", true, true),
        ("header_groups", true, true),
        ("cursor_sequence", true, false),
        ("checkpoints", true, true),
        ("breakers", true, true),
        ("processes", true, true),
        ("provider_stats", true, true),
        ("provider_lateness", true, true),
    ];
    for (table, strict, without_rowid) in expected {
        let row = sqlx::query("SELECT strict, wr FROM pragma_table_list WHERE name = ?")
            .bind(table)
            .fetch_optional(&mut conn)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("table {table} missing"));
        assert_eq!(row.get::<i64, _>(0) == 1, strict, "{table} STRICT");
        assert_eq!(
            row.get::<i64, _>(1) == 1,
            without_rowid,
            "{table} WITHOUT ROWID"
        );
    }

    let columns = |table: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .bind(table)
    };
    let events: Vec<String> = columns("events").fetch_all(&mut conn).await.unwrap();
    let want = "cursor chain block_number block_hash log_index tx_hash tx_index address topic0 \
                topic1 topic2 topic3 data removed first_provider providers_seen providers_mask \
                received_at";
    assert_eq!(
        events.join(" "),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let table_columns = [
        (
            "changes",
            "cursor chain kind event_cursor finality to_block created_at",
        ),
        ("names", "id name"),
        (
            "headers",
            "chain block_number block_hash parent_hash block_timestamp first_cursor last_cursor \
             events",
        ),
        ("header_groups", "chain grp first_cursor last_cursor events"),
        (
            "checkpoints",
            "chain block_number block_hash safe_block finalized_block updated_at",
        ),
        (
            "breakers",
            "chain provider state consecutive_failures consecutive_successes opened_at updated_at",
        ),
        (
            "processes",
            "kind id spec desired status restarts last_error started_at updated_at",
        ),
        (
            "provider_stats",
            "chain provider delivered_first delivered_late late_ms_total late_ms_max missed \
             updated_at",
        ),
    ];
    for (table, want) in table_columns {
        let got: Vec<String> = columns(table).fetch_all(&mut conn).await.unwrap();
        assert_eq!(
            got.join(" "),
            want.split_whitespace().collect::<Vec<_>>().join(" "),
            "{table}"
        );
    }

    let unique: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_index_info('events_identity') ORDER BY seqno")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(unique, ["chain", "block_number", "block_hash", "log_index"]);
}

#[tokio::test]
async fn a_newer_schema_is_refused_before_anything_runs() {
    let db = temp_db();
    let store = open(&db.path).await;
    let known = store.schema_version().await.unwrap();
    store.close().await;

    let mut conn = raw(&db.path).await;
    sqlx::query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (7, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let tables_before: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let err = match Store::open(&db.path).await {
        Ok(_) => panic!("a database at schema 7 was opened"),
        Err(err) => err,
    };
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 7, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database schema is at version 7 but this livechain knows only up to {known}: \
             upgrade livechain"
        )
    );
    assert!(!err.is_retryable());

    let mut conn = raw(&db.path).await;
    let tables_after: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        tables_after, tables_before,
        "the refused open changed the schema"
    );
}

#[test]
fn cargo_lock_has_no_rusqlite() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).expect("read Cargo.lock");
    assert!(
        !text.contains("name = \"rusqlite\""),
        "rusqlite in Cargo.lock: two SQLite libraries would be linked"
    );
    assert!(text.contains("name = \"sqlx-sqlite\""));
}
