//! Reorgs as data: orphans are marked removed (never deleted) with a cursor of their own, in the
//! same transaction as the replacements; a flip back restores them.

use livechain::store::Canonical;

use super::*;

fn canonical(first: u64, fork_of: impl Fn(u64) -> u8, count: u64) -> Canonical {
    Canonical {
        chain: CHAIN.into(),
        first,
        hashes: (first..first + count)
            .map(|n| block_on(CHAIN, n, fork_of(n)).block.hash)
            .collect(),
    }
}

#[tokio::test]
async fn orphans_are_removed_with_their_own_cursor_and_restored_on_a_flip_back() {
    let db = temp_db();
    let store = open(&db.path).await;
    // Branch 0: blocks 1..=5, two logs each.
    let mut events = Vec::new();
    for n in 1..=5 {
        let b = block_on(CHAIN, n, 0);
        events.push(new(log_of(&b, 0), "p0"));
        events.push(new(log_of(&b, 1), "p0"));
        events.push(new(b, "p0"));
    }
    let first = write(&store, batch(events)).await;
    assert_eq!(first.inserted.len(), 15);

    // Branch 1 replaces 4 and 5: its blocks and the canonical range in one transaction.
    let mut replacements = Vec::new();
    for n in 4..=5 {
        let b = block_on(CHAIN, n, 1);
        replacements.push(new(log_of(&b, 0), "p1"));
        replacements.push(new(b, "p1"));
    }
    let mut reorg = batch(replacements);
    reorg.canonical = vec![canonical(1, |n| u8::from(n >= 4), 5)];
    let done = write(&store, reorg).await;
    assert_eq!(done.inserted.len(), 4);
    assert_eq!(
        done.retractions.len(),
        6,
        "two blocks and their four logs orphaned"
    );
    assert!(
        done.retractions
            .iter()
            .all(|r| !r.restored && r.event.removed)
    );
    let last_insert = done.inserted.last().map(|e| e.cursor).unwrap();
    let mut previous = last_insert;
    for r in &done.retractions {
        assert!(
            r.cursor > previous,
            "removals take fresh, increasing cursors"
        );
        previous = r.cursor;
        assert!(r.event.event.block.number >= 4);
        assert_eq!(
            r.event.event.block.hash,
            block_on(CHAIN, r.event.event.block.number, 0).block.hash
        );
        // Never deleted: the row is still there, marked.
        assert!(stored(&store, r.event.cursor).await.removed);
    }
    // Applying the same canonical range again changes nothing.
    let mut again = batch(Vec::new());
    again.canonical = vec![canonical(1, |n| u8::from(n >= 4), 5)];
    assert!(write(&store, again).await.retractions.is_empty());

    // Flip back to branch 0: branch 1's rows are removed, branch 0's restored.
    let mut back = batch(Vec::new());
    back.canonical = vec![canonical(4, |_| 0, 2)];
    let flipped = write(&store, back).await;
    let restored: Vec<_> = flipped.retractions.iter().filter(|r| r.restored).collect();
    let removed: Vec<_> = flipped.retractions.iter().filter(|r| !r.restored).collect();
    assert_eq!(restored.len(), 6);
    assert_eq!(removed.len(), 4);
    for r in restored {
        assert!(!stored(&store, r.event.cursor).await.removed);
    }
    let cursors: Vec<i64> = flipped.retractions.iter().map(|r| r.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn breaker_snapshots_survive_a_reopen() {
    use livechain::breaker::{BreakerState, Snapshot};
    let db = temp_db();
    let store = open(&db.path).await;
    let open_one = Snapshot {
        state: BreakerState::Open,
        consecutive_failures: 5,
        consecutive_successes: 0,
        opened_at_wall_ms: Some(1_764_000_000_000),
    };
    store.save_breaker(CHAIN, "p1", &open_one, 1).await.unwrap();
    store
        .save_breaker(CHAIN, "p0", &Snapshot::default(), 1)
        .await
        .unwrap();
    store
        .save_breaker("other", "p0", &open_one, 1)
        .await
        .unwrap();
    store.close().await;
    let store = open(&db.path).await;
    let loaded = store.load_breakers(CHAIN).await.unwrap();
    assert_eq!(
        loaded,
        vec![
            ("p0".to_owned(), Snapshot::default()),
            ("p1".to_owned(), open_one)
        ]
    );
}

/// The feed read back a page at a time is every change in cursor order: additions (removed ones
/// too), retractions and finality advances, with nothing repeated or skipped at page seams.
#[tokio::test]
async fn the_feed_replays_in_cursor_order_across_pages() {
    use livechain::domain::EventFilter;
    use livechain::publish::FeedItem;
    use livechain::publish::replay;

    let db = temp_db();
    let store = open(&db.path).await;
    let mut expected: Vec<i64> = Vec::new();
    for n in 1..=6 {
        let b = block_on(CHAIN, n, 0);
        let mut one = batch(vec![new(b.clone(), "p0"), new(log_of(&b, 0), "p0")]);
        one.checkpoints = vec![checkpoint(n, Some(n.saturating_sub(1)), None)];
        let done = write(&store, one).await;
        expected.extend(done.inserted.iter().map(|e| e.cursor));
        expected.extend(done.finality.iter().map(|f| f.cursor));
    }
    let mut reorg = batch(vec![new(block_on(CHAIN, 6, 1), "p1")]);
    reorg.canonical = vec![canonical(6, |_| 1, 1)];
    let done = write(&store, reorg).await;
    expected.extend(done.inserted.iter().map(|e| e.cursor));
    expected.extend(done.retractions.iter().map(|r| r.cursor));
    assert_eq!(done.retractions.len(), 2);
    expected.sort_unstable();

    for limit in [1u32, 2, 3, 1000] {
        let mut seen = Vec::new();
        let mut after = 0;
        for _ in 0..200 {
            let page = replay::page(&store, &EventFilter::default(), after, limit)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(FeedItem::cursor));
            match page.through {
                Some(through) => after = through,
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
    }
    // A filter keeps its matches only, still in order.
    let blocks = EventFilter {
        kind: Some(livechain::domain::EventKind::Block),
        ..EventFilter::default()
    };
    let page = replay::page(&store, &blocks, 0, 1000).await.unwrap();
    let adds = page
        .items
        .iter()
        .filter(|i| matches!(i, FeedItem::Added(_)))
        .count();
    let removals = page
        .items
        .iter()
        .filter(|i| matches!(i, FeedItem::Removed { .. }))
        .count();
    assert_eq!((adds, removals), (7, 1));
}

#[tokio::test]
async fn the_process_table_round_trips_the_registry_view() {
    use livechain::registry::{ProcessInfo, ProcessStore, Status};
    let db = temp_db();
    let store = open(&db.path).await;
    let info = ProcessInfo {
        kind: "listener".into(),
        id: "devnet/p0".into(),
        status: Status::Restarting,
        restarts: 3,
        last_error: Some("socket closed".into()),
        started_at_ms: 1_764_000_000_000,
        desired: true,
        spec: serde_json::json!({"chain": "devnet", "provider": "p0"}),
    };
    ProcessStore::save(&store, &info).await.unwrap();
    let mut stopped = info.clone();
    stopped.id = "devnet/p1".into();
    stopped.status = Status::Stopped;
    stopped.desired = false;
    ProcessStore::save(&store, &stopped).await.unwrap();
    store.close().await;
    let store = open(&db.path).await;
    assert_eq!(
        ProcessStore::load(&store).await.unwrap(),
        vec![info, stopped]
    );
}
