//! Retention on a real file: whole oldest blocks pruned in steps, never above the final height,
//! their changes with them; the low-water mark refuses late deliveries; free pages returned.

use livechain::store::{Canonical, PruneTarget};

use super::*;

/// Blocks `from..=to` with `logs` logs each, in one batch, with a checkpoint at `to` whose
/// finalized height is `finalized`.
async fn fill(store: &Store, from: u64, to: u64, logs: u64, finalized: Option<u64>) -> Committed {
    let mut events = Vec::new();
    for n in from..=to {
        let b = block(n);
        for i in 0..logs {
            events.push(new(log_of(&b, i), "alpha"));
        }
        events.push(new(b, "alpha"));
    }
    let mut batch = batch(events);
    batch.checkpoints = vec![checkpoint(to, finalized, finalized)];
    write(store, batch).await
}

fn by_count(keep: u64, max_rows: u64) -> PruneTarget {
    PruneTarget {
        keep_events: Some(keep),
        expire_before: None,
        confirmations: 12,
        max_rows,
    }
}

async fn count(path: &std::path::Path, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut raw(path).await)
        .await
        .expect("count")
}

async fn lowest_block(store: &Store) -> u64 {
    let page = store
        .query_events(&livechain::store::EventQuery {
            limit: 1,
            include_removed: true,
            ..Default::default()
        })
        .await
        .expect("query");
    page.first().map(|e| e.event.block.number).unwrap_or(0)
}

#[tokio::test]
async fn pruning_deletes_whole_oldest_blocks_in_steps_down_to_the_limit() {
    let db = temp_db();
    let store = open(&db.path).await;
    // 100 blocks of 4 logs: 500 events, all final.
    fill(&store, 1, 100, 4, Some(100)).await;
    assert_eq!(store.retained_events(CHAIN).await.unwrap(), 500);

    // Keep 300, at most 42 rows a step: each step deletes whole blocks (5 rows), 40 rows.
    let target = by_count(300, 42);
    let mut steps = 0;
    while let Some(pruned) = store.prune_step(CHAIN, &target).await.unwrap() {
        steps += 1;
        assert!(pruned.events <= 42, "a step deleted {} rows", pruned.events);
        assert_eq!(pruned.events % 5, 0, "half a block deleted: {pruned:?}");
        assert_eq!(pruned.events, pruned.heights * 5);
        assert!(steps < 20, "pruning does not end");
    }
    assert_eq!(steps, 5, "200 rows in steps of 40");
    assert_eq!(store.retained_events(CHAIN).await.unwrap(), 300);
    assert_eq!(count(&db.path, "SELECT count(*) FROM events").await, 300);
    assert_eq!(lowest_block(&store).await, 41);
    let marks = store.retention_marks().await.unwrap();
    assert_eq!(marks.len(), 1);
    let mark = marks[0].1;
    assert_eq!(mark.low_block, 41);
    assert_eq!(mark.pruned_events, 200);
    // Cursors 1..=500 in block order: the 200 oldest rows were 1..=200.
    assert_eq!(mark.oldest_cursor, 200);
    assert_eq!(store.oldest_cursor(Some(CHAIN)).await.unwrap(), 200);
    assert_eq!(store.oldest_cursor(None).await.unwrap(), 200);
    assert_eq!(store.oldest_cursor(Some("other")).await.unwrap(), 0);
}

#[tokio::test]
async fn pruning_never_goes_above_the_final_height() {
    let db = temp_db();
    let store = open(&db.path).await;
    // Finalized at 20 of 100: only blocks 1..=20 may go, however far above the limit.
    fill(&store, 1, 100, 1, Some(20)).await;
    let target = by_count(10, 1000);
    let pruned = store.prune_step(CHAIN, &target).await.unwrap().unwrap();
    assert_eq!(pruned.heights, 20);
    assert_eq!(pruned.mark.low_block, 21);
    assert!(store.prune_step(CHAIN, &target).await.unwrap().is_none());

    // Without finality tags: `confirmations` below the checkpoint.
    let db = temp_db();
    let store = open(&db.path).await;
    fill(&store, 1, 100, 1, None).await;
    let pruned = store.prune_step(CHAIN, &target).await.unwrap().unwrap();
    assert_eq!(
        pruned.mark.low_block, 89,
        "100 - 12 confirmations is the last to go"
    );
    // A chain without a checkpoint prunes nothing.
    let other = temp_db();
    let store = open(&other.path).await;
    write(&store, batch(vec![new(block(1), "alpha")])).await;
    assert!(store.prune_step(CHAIN, &target).await.unwrap().is_none());
}

#[tokio::test]
async fn pruning_by_age_deletes_exactly_the_expired_blocks() {
    let db = temp_db();
    let store = open(&db.path).await;
    // Block n has timestamp 1_700_000_000 + n.
    fill(&store, 1, 50, 2, Some(50)).await;
    let target = PruneTarget {
        keep_events: None,
        expire_before: Some(1_700_000_000 + 31),
        confirmations: 0,
        max_rows: 7,
    };
    let mut total = 0;
    for _ in 0..100 {
        match store.prune_step(CHAIN, &target).await.unwrap() {
            Some(p) => total += p.heights,
            None => break,
        }
    }
    assert_eq!(total, 30, "blocks 1..=30 are older than the cutoff");
    assert_eq!(lowest_block(&store).await, 31);
    let oldest = store.oldest_block(CHAIN).await.unwrap();
    assert_eq!(oldest, Some((31, 1_700_000_031)));
}

#[tokio::test]
async fn pruned_events_take_their_changes_with_them_and_nothing_dangles() {
    let db = temp_db();
    let store = open(&db.path).await;
    fill(&store, 1, 10, 2, None).await;
    // A reorg at 3..=4 leaves removals pointing at the old rows, then finality advances.
    let mut events = Vec::new();
    for n in 3..=4 {
        events.push(new(block_on(CHAIN, n, 1), "beta"));
    }
    let mut reorg = batch(events);
    reorg.canonical = vec![Canonical {
        chain: CHAIN.into(),
        first: 3,
        hashes: (3..=4).map(|n| block_on(CHAIN, n, 1).block.hash).collect(),
    }];
    let done = write(&store, reorg).await;
    assert_eq!(done.retractions.len(), 6);
    let mut advance = batch(Vec::new());
    advance.checkpoints = vec![checkpoint(10, Some(6), Some(6))];
    write(&store, advance).await;
    let changes_before = count(&db.path, "SELECT count(*) FROM changes").await;
    assert!(
        changes_before >= 8,
        "six removals and two finality advances"
    );

    let pruned = store
        .prune_step(CHAIN, &by_count(0, 1000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pruned.mark.low_block, 7, "finalized 6 is the last to go");
    assert_eq!(
        count(
            &db.path,
            "SELECT count(*) FROM changes WHERE kind != 'finality'"
        )
        .await,
        0,
        "the removals of pruned rows went with them"
    );
    assert_eq!(
        count(
            &db.path,
            "SELECT count(*) FROM changes x LEFT JOIN events e ON e.cursor = x.event_cursor \
             WHERE x.event_cursor IS NOT NULL AND e.cursor IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db.path, "SELECT count(*) FROM pragma_foreign_key_check").await,
        0
    );
    // The pruned cursor covers the removals, the latest changes of those rows.
    let last_removal = done.retractions.iter().map(|r| r.cursor).max().unwrap();
    assert!(pruned.mark.oldest_cursor >= last_removal);
}

#[tokio::test]
async fn events_below_the_mark_are_dropped_even_after_a_restart() {
    let db = temp_db();
    {
        let store = open(&db.path).await;
        fill(&store, 1, 30, 1, Some(30)).await;
        store
            .prune_step(CHAIN, &by_count(20, 1000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lowest_block(&store).await, 21);
        store.close().await;
    }
    let store = open(&db.path).await;
    // A late provider re-delivers block 5 and its log, and block 31 (above the mark).
    let b5 = block(5);
    let done = write(
        &store,
        batch(vec![
            new(log_of(&b5, 0), "beta"),
            new(b5, "beta"),
            new(block(31), "beta"),
        ]),
    )
    .await;
    assert_eq!(done.inserted.len(), 1, "only block 31 is stored");
    assert_eq!(done.inserted[0].event.block.number, 31);
    assert_eq!(
        count(
            &db.path,
            "SELECT count(*) FROM events WHERE block_number < 21"
        )
        .await,
        0
    );

    // `reset-chain` forgets the mark: the chain is indexed over from its start.
    store.reset_chain(CHAIN).await.unwrap();
    let again = write(&store, batch(vec![new(block(5), "beta")])).await;
    assert_eq!(again.inserted.len(), 1);
    assert_eq!(
        store.oldest_cursor(Some(CHAIN)).await.unwrap(),
        40,
        "two rows a block"
    );
}

#[tokio::test]
async fn a_new_file_returns_its_free_pages_and_an_old_one_reuses_them() {
    let db = temp_db();
    let store = open(&db.path).await;
    assert_eq!(
        count(&db.path, "PRAGMA auto_vacuum").await,
        2,
        "INCREMENTAL"
    );
    fill(&store, 1, 400, 20, Some(400)).await;
    while store
        .prune_step(CHAIN, &by_count(100, 5000))
        .await
        .unwrap()
        .is_some()
    {}
    let free = count(&db.path, "PRAGMA freelist_count").await;
    assert!(free > 100, "pruning freed only {free} pages");
    let mut returned = 0;
    for _ in 0..100 {
        match store.reclaim_free_pages().await.unwrap() {
            0 => break,
            n => returned += n,
        }
    }
    assert!(returned > 0);
    let pages = count(&db.path, "PRAGMA page_count").await;
    let free_after = count(&db.path, "PRAGMA freelist_count").await;
    assert!(
        free_after <= pages / 4,
        "{free_after} of {pages} pages still free"
    );
    store.close().await;

    // A file made without auto-vacuum keeps working; its free pages are reused, not returned.
    let old = temp_db();
    std::fs::create_dir_all(old.path.parent().unwrap()).unwrap();
    {
        let mut conn = SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&old.path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE before_auto_vacuum (x INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let store = open(&old.path).await;
    assert_eq!(count(&old.path, "PRAGMA auto_vacuum").await, 0, "NONE");
    fill(&store, 1, 100, 20, Some(100)).await;
    store
        .prune_step(CHAIN, &by_count(0, 5000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.reclaim_free_pages().await.unwrap(), 0);
    let pages = count(&old.path, "PRAGMA page_count").await;
    fill(&store, 101, 150, 20, Some(150)).await;
    assert!(
        count(&old.path, "PRAGMA page_count").await <= pages,
        "new rows went to fresh pages instead of the freed ones"
    );
}
