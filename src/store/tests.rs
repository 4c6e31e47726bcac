//! Unit tests that need the store's internals: per-connection pragmas and query plans.

use sqlx::Row;

use super::*;

async fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("nested/dir/livechain.db"))
        .await
        .expect("open store");
    (dir, store)
}

async fn pragma(pool: &SqlitePool, name: &'static str) -> String {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("PRAGMA {name}: {e}"));
    // journal_mode answers text, the others integers.
    row.try_get::<String, _>(0)
        .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
        .expect("pragma value")
}

#[tokio::test]
async fn writer_and_readers_have_the_specified_pragmas() {
    let (_dir, store) = open_temp().await;
    let writer_cache = (-WRITER_CACHE_KIB).to_string();
    let reader_cache = (-READER_CACHE_KIB).to_string();
    let busy = BUSY_TIMEOUT.as_millis().to_string();
    for (pool, cache) in [
        (&store.shared.writer, writer_cache.as_str()),
        (&store.shared.readers, reader_cache.as_str()),
    ] {
        let checks = [
            ("journal_mode", "wal"),
            // 1 = NORMAL
            ("synchronous", "1"),
            ("foreign_keys", "1"),
            ("cache_size", cache),
            ("busy_timeout", busy.as_str()),
            // 2 = MEMORY
            ("temp_store", "2"),
        ];
        for (name, want) in checks {
            assert_eq!(pragma(pool, name).await, want, "PRAGMA {name}");
        }
    }
    assert_eq!(pragma(&store.shared.readers, "query_only").await, "0");
    let write = sqlx::query("INSERT INTO cursor_sequence (id, last_cursor) VALUES (2, 0)")
        .execute(&store.shared.readers)
        .await;
    assert!(write.is_err(), "read pool must be read-only");
    assert_eq!(store.shared.writer.options().get_max_connections(), 1);
    assert!(store.shared.readers.options().get_max_connections() > 1);
    store.close().await;
}

/// The memory gauge reads SQLite's own counter (on in the build sqlx links): an open store's
/// connections hold schemas and caches. The counter is the process's, shared with the other
/// tests running beside this one, so only its being counted at all is asserted.
#[tokio::test]
async fn sqlite_memory_counts_the_connections_heap() {
    let (_dir, store) = open_temp().await;
    let open = sqlite_memory_bytes();
    assert!(open > 0, "an open store's connections hold memory: {open}");
    store.close().await;
}

/// Late copies merge into their rows through the identity index, one search each, whatever the
/// number of rows: never a scan of `events`.
#[tokio::test]
async fn redeliveries_search_the_identity_index() {
    let (_dir, store) = open_temp().await;
    for rows in [1, 8, 64] {
        let sql = statements::redelivery_sql(rows);
        let rows_bound = sql.matches('?').count();
        let query = sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"));
        let mut query = sqlx::query(query);
        for _ in 0..rows_bound {
            query = query.bind(1i64);
        }
        let plan: Vec<String> = query
            .fetch_all(&store.shared.writer)
            .await
            .expect("plan")
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect();
        let plan = plan.join("; ");
        assert!(plan.contains("events_identity"), "{rows} rows: {plan}");
        assert!(!plan.contains("SCAN events"), "{rows} rows: {plan}");
    }
    store.close().await;
}

/// Commits never checkpoint; the checkpointer does, and once the log has grown past
/// `WAL_RESTART_PAGES` its checkpoint makes the next transaction start the log over.
#[tokio::test]
async fn the_checkpointer_copies_the_log_and_restarts_it_once_large() {
    let (dir, store) = open_temp().await;
    assert_eq!(
        pragma(&store.shared.writer, "wal_autocheckpoint").await,
        "0"
    );
    let path = dir.path().join("nested/dir/livechain.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let mut conn = wal::connect(&options)
        .await
        .expect("checkpointing connection");
    let bump = "UPDATE cursor_sequence SET last_cursor = last_cursor + 1 WHERE id = 1";
    for _ in 0..3 {
        sqlx::query(bump)
            .execute(&store.shared.writer)
            .await
            .expect("write");
    }
    let small = wal::checkpoint(&mut conn).await.expect("checkpoint");
    assert!(!small.busy, "{small:?}");
    assert!(small.log > 0 && small.copied == small.log, "{small:?}");
    // A log past the threshold (a blob the size of the threshold is that many pages and more).
    sqlx::query("CREATE TABLE filler (b BLOB)")
        .execute(&store.shared.writer)
        .await
        .expect("create");
    let page = 4096;
    let bytes = wal::WAL_RESTART_PAGES * page;
    sqlx::query("INSERT INTO filler VALUES (zeroblob(?))")
        .bind(bytes)
        .execute(&store.shared.writer)
        .await
        .expect("fill");
    let large = wal::checkpoint(&mut conn).await.expect("checkpoint");
    assert!(
        !large.busy && large.log >= wal::WAL_RESTART_PAGES,
        "{large:?}"
    );
    // The next transaction writes at the start of the log: it holds that transaction's pages only.
    sqlx::query(bump)
        .execute(&store.shared.writer)
        .await
        .expect("write");
    let after = wal::checkpoint(&mut conn).await.expect("checkpoint");
    assert!(after.log < 16, "the log did not start over: {after:?}");
    drop(conn);
    store.close().await;
}

/// A restarting checkpoint holds new transactions back while it waits for readers of older
/// snapshots; it gives up after its short busy timeout instead, and the writer goes on.
#[tokio::test]
async fn a_restart_gives_up_soon_on_a_reader_of_an_old_snapshot() {
    let (dir, store) = open_temp().await;
    let path = dir.path().join("nested/dir/livechain.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let mut checkpointing = wal::connect(&options)
        .await
        .expect("checkpointing connection");
    sqlx::query("CREATE TABLE filler (b BLOB)")
        .execute(&store.shared.writer)
        .await
        .expect("create");
    // A reader holding a snapshot from before the log grew.
    let mut reader = store.shared.readers.acquire().await.expect("reader");
    sqlx::query("BEGIN")
        .execute(&mut *reader)
        .await
        .expect("begin");
    sqlx::query("SELECT count(*) FROM events")
        .fetch_one(&mut *reader)
        .await
        .expect("read");
    sqlx::query("INSERT INTO filler VALUES (zeroblob(?))")
        .bind(wal::WAL_RESTART_PAGES * 4096)
        .execute(&store.shared.writer)
        .await
        .expect("fill");
    let outcome = wal::checkpoint(&mut checkpointing)
        .await
        .expect("checkpoint");
    assert!(
        outcome.busy,
        "the old snapshot cannot be restarted past: {outcome:?}"
    );
    // It waited a tenth of a second at most, not the writer's five.
    let waits: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut checkpointing)
        .await
        .expect("busy_timeout");
    assert_eq!(
        u128::try_from(waits).ok(),
        Some(wal::BUSY_TIMEOUT.as_millis())
    );
    assert!(wal::BUSY_TIMEOUT < BUSY_TIMEOUT / 10);
    // Once the reader is done, the next checkpoint restarts the log.
    sqlx::query("COMMIT")
        .execute(&mut *reader)
        .await
        .expect("end read");
    drop(reader);
    let outcome = wal::checkpoint(&mut checkpointing)
        .await
        .expect("checkpoint");
    assert!(!outcome.busy, "{outcome:?}");
    sqlx::query("UPDATE cursor_sequence SET last_cursor = last_cursor + 1 WHERE id = 1")
        .execute(&store.shared.writer)
        .await
        .expect("write");
    let after = wal::checkpoint(&mut checkpointing)
        .await
        .expect("checkpoint");
    assert!(after.log < 16, "the log did not start over: {after:?}");
    drop(checkpointing);
    store.close().await;
}

/// Under a writer that never pauses, the log stays within `database.max_wal_mb`: the writer
/// checkpoints itself when its next transaction would pass it. The ceiling here (2 MiB) is far
/// below the background checkpointer's restart threshold (64 MiB), so without the writer's own
/// checkpoint the log would grow to tens of MiB.
#[tokio::test]
async fn the_writer_holds_the_wal_under_its_ceiling() {
    let (dir, store) = open_temp().await;
    let ceiling: u64 = 2 << 20;
    store.set_max_wal_bytes(ceiling);
    let wal_path = wal::wal_path(&dir.path().join("nested/dir/livechain.db"));
    let mut peak = 0u64;
    let mut largest_batch = 0u64;
    for batch in 0..60u64 {
        let events = (0..500u64)
            .map(|i| {
                let n = batch * 500 + i;
                NewEvent {
                    event: crate::domain::Event {
                        chain: "devnet".into(),
                        block: crate::domain::BlockRef {
                            number: n,
                            hash: alloy_primitives::B256::left_padding_from(&n.to_be_bytes()),
                            parent_hash: alloy_primitives::B256::ZERO,
                        },
                        block_timestamp: n,
                        log: None,
                    },
                    provider: "p".into(),
                    received_at_ms: 0,
                    providers_mask: 1,
                }
            })
            .collect();
        let before = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
        store
            .write_batch(WriteBatch {
                chain_events: events,
                ..WriteBatch::default()
            })
            .await
            .expect("write");
        let after = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
        largest_batch = largest_batch.max(after.saturating_sub(before));
        peak = peak.max(after);
    }
    assert!(largest_batch > 0, "no batch grew the log");
    assert!(
        peak <= ceiling,
        "the log reached {peak} bytes (ceiling {ceiling}, largest batch {largest_batch})"
    );
    store.close().await;
}
