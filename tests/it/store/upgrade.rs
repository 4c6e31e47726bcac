//! A database as the previous release (schema V4) left it, opened by this one: the V5 rebuild
//! keeps every row, its fields, removals and finality, and the rebuilt spans bound its ranges.

use alloy_primitives::B256;
use livechain::domain::{EventFilter, Finality};
use livechain::store::{EventQuery, Order, Store, migrate_until};

use super::{raw, temp_db};

/// Rows written with V4's columns: blocks 10..=14 of `devnet` with two logs each (block 12 also
/// has an orphaned twin, removed by a change row), a finality advance, a checkpoint.
const V4_ROWS: &str = "
INSERT INTO events (cursor, chain, kind, block_number, block_hash, parent_hash, block_timestamp,
    tx_hash, tx_index, log_index, address, topic0, topic1, topic2, topic3, data, removed,
    first_provider, providers_seen, received_at, providers_mask)
WITH RECURSIVE n(b) AS (SELECT 10 UNION ALL SELECT b + 1 FROM n WHERE b < 14),
     l(i) AS (SELECT -1 UNION ALL SELECT i + 1 FROM l WHERE i < 1)
SELECT (b - 10) * 3 + i + 2, 'devnet', CASE WHEN i = -1 THEN 'block' ELSE 'log' END, b,
    unhex(printf('%064x', b)), unhex(printf('%064x', b - 1)), 1700000000 + b,
    CASE WHEN i = -1 THEN NULL ELSE unhex(printf('%064x', 100 + b)) END,
    CASE WHEN i = -1 THEN NULL ELSE 0 END, i,
    CASE WHEN i = -1 THEN NULL ELSE unhex(printf('%040x', 7)) END,
    CASE WHEN i = -1 THEN NULL ELSE unhex(printf('%064x', 9)) END, NULL, NULL, NULL,
    CASE WHEN i = -1 THEN NULL ELSE x'c0ffee' END, 0,
    CASE WHEN b % 2 = 0 THEN 'alpha' ELSE 'beta' END, 2, 1000 + b, 3
FROM n, l;
INSERT INTO events (cursor, chain, kind, block_number, block_hash, parent_hash, block_timestamp,
    log_index, removed, first_provider, providers_seen, received_at, providers_mask)
VALUES (100, 'devnet', 'block', 12, unhex('ee' || printf('%062x', 0)), unhex(printf('%064x', 11)), 1700000012,
    -1, 1, 'gamma', 1, 5000, 4);
INSERT INTO changes (cursor, chain, kind, event_cursor, created_at)
    VALUES (101, 'devnet', 'removed', 100, 5001);
INSERT INTO changes (cursor, chain, kind, finality, to_block, created_at)
    VALUES (102, 'devnet', 'finality', 'finalized', 12, 5002);
INSERT INTO checkpoints (chain, block_number, block_hash, safe_block, finalized_block, updated_at)
    VALUES ('devnet', 14, unhex(printf('%064x', 14)), 13, 12, 5003);
UPDATE cursor_sequence SET last_cursor = 102;
";

fn hash(last: u8) -> B256 {
    B256::with_last_byte(last)
}

#[tokio::test]
async fn a_v4_database_keeps_every_row_through_the_rebuild() {
    let db = temp_db();
    std::fs::create_dir_all(db.path.parent().expect("dir")).expect("mkdir");
    migrate_until(&db.path, 4).await.expect("V4 schema");
    let mut conn = raw(&db.path).await;
    sqlx::raw_sql(V4_ROWS)
        .execute(&mut conn)
        .await
        .expect("V4 rows");
    drop(conn);

    let store = Store::open(&db.path).await.expect("open and migrate");
    assert_eq!(store.applied_migrations(), ["V5__compact_events"]);
    assert_eq!(store.max_cursor().await, 102);

    let page = |filter: EventFilter, include_removed: bool| EventQuery {
        filter,
        include_removed,
        after: None,
        limit: 100,
        order: Order::Asc,
    };
    let all = store
        .query_events(&page(EventFilter::default(), true))
        .await
        .expect("all");
    assert_eq!(all.len(), 16, "{all:#?}");
    let first = &all[0];
    assert_eq!(first.cursor, 1);
    assert_eq!(first.event.block.number, 10);
    assert_eq!(first.event.block.hash, hash(10));
    assert_eq!(first.event.block.parent_hash, hash(9));
    assert_eq!(first.event.block_timestamp, 1_700_000_010);
    assert_eq!(first.first_provider, "alpha");
    assert_eq!(first.providers_seen, 2);
    assert_eq!(first.finality, Finality::Finalized);
    let log = all[1].event.log.as_ref().expect("a log");
    assert_eq!(log.tx_hash, hash(110));
    assert_eq!(log.data.as_ref(), [0xc0, 0xff, 0xee]);
    assert_eq!(all[3].first_provider, "beta");
    let orphan = all.last().expect("the orphan");
    assert!(orphan.removed && orphan.cursor == 100 && orphan.first_provider == "gamma");

    // Canonical only by default; a range and a value filter still find their rows.
    let canonical = store
        .query_events(&page(EventFilter::default(), false))
        .await
        .expect("canonical");
    assert_eq!(canonical.len(), 15);
    let ranged = EventFilter {
        chain: Some("devnet".into()),
        from_block: Some(12),
        to_block: Some(13),
        ..EventFilter::default()
    };
    let ranged = store
        .query_events(&page(ranged, false))
        .await
        .expect("range");
    let cursors: Vec<i64> = ranged.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, [7, 8, 9, 10, 11, 12]);
    let safe = EventFilter {
        finality: Some(Finality::Safe),
        ..EventFilter::default()
    };
    let safe = store.query_events(&page(safe, false)).await.expect("safe");
    assert_eq!(safe.last().map(|e| e.event.block.number), Some(13));
    let by_block = EventFilter {
        block_hash: Some(hash(11)),
        ..EventFilter::default()
    };
    assert_eq!(
        store
            .query_events(&page(by_block, false))
            .await
            .expect("block")
            .len(),
        3
    );

    // The removal and the finality advance are still in the feed.
    let retractions = store
        .retractions_since(0, None, 10)
        .await
        .expect("retractions");
    assert_eq!(retractions.len(), 1);
    assert_eq!(retractions[0].cursor, 101);
    assert_eq!(retractions[0].event.cursor, 100);
    let finality = store.finality_since(0, None, 10).await.expect("finality");
    assert_eq!(finality.len(), 1);
    assert_eq!(store.retained_events("devnet").await.expect("count"), 16);
    store.close().await;
}
