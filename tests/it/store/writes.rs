//! The write path: exactly once per content, cursors, one transaction per batch, round trips and
//! finality.

use alloy_primitives::{Address, Bytes};
use livechain::domain::{BlockRef, Event, EventKind, Finality, LogFields};
use livechain::store::{NewEvent, Redelivery, StoreError, WriteBatch};

use super::{
    CHAIN, batch, block, block_on, checkpoint, cursors, fail_checkpoints, h, log_of, new, open,
    raw, stored, temp_db, write,
};

#[tokio::test]
async fn the_same_block_and_log_twice_in_one_batch_are_stored_once() {
    let db = temp_db();
    let store = open(&db.path).await;
    let b = block(10);
    let l = log_of(&b, 0);
    let done = write(
        &store,
        batch(vec![
            new(b.clone(), "alpha"),
            new(l.clone(), "alpha"),
            new(b.clone(), "beta"),
            new(l.clone(), "beta"),
        ]),
    )
    .await;
    assert_eq!(done.inserted.len(), 2);
    assert_eq!(done.duplicates, 2);
    assert_eq!(cursors(&done), [1, 2]);
    for event in &done.inserted {
        assert_eq!(event.providers_seen, 2);
        assert_eq!(event.first_provider, "alpha");
    }
    assert_eq!(stored(&store, 1).await.event, b);
    assert_eq!(stored(&store, 2).await.event, l);
    assert_eq!(stored(&store, 2).await.providers_seen, 2);
    assert_eq!(store.count_events(CHAIN).await.unwrap(), 2);
    store.close().await;
}

/// The insert ignores rows that conflict; one it ignored for anything but a duplicate (here a
/// trigger standing in for a broken constraint) must fail the batch, naming the event, and
/// leave nothing of it behind, never vanish.
#[tokio::test]
async fn an_event_ignored_for_anything_but_a_duplicate_fails_its_batch() {
    let db = temp_db();
    let store = open(&db.path).await;
    let mut conn = raw(&db.path).await;
    sqlx::query(
        "CREATE TRIGGER refuse_block_7 BEFORE INSERT ON events WHEN NEW.block_number = 7 \
         BEGIN SELECT RAISE(IGNORE); END",
    )
    .execute(&mut conn)
    .await
    .expect("trigger");
    let (b6, b7) = (block(6), block(7));
    let err = store
        .write_batch(batch(vec![
            new(b6.clone(), "alpha"),
            new(log_of(&b7, 0), "alpha"),
            new(b7.clone(), "alpha"),
        ]))
        .await
        .expect_err("a lost event must fail the batch");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Invalid(_)), "{message}");
    assert!(message.contains("block 7"), "{message}");
    assert_eq!(
        store.count_events(CHAIN).await.unwrap(),
        0,
        "nothing half-stored"
    );

    sqlx::query("DROP TRIGGER refuse_block_7")
        .execute(&mut conn)
        .await
        .expect("drop trigger");
    let done = write(&store, batch(vec![new(b6, "alpha"), new(b7, "alpha")])).await;
    assert_eq!((done.inserted.len(), done.duplicates), (2, 0));
    store.close().await;
}

#[tokio::test]
async fn duplicates_across_batches_and_a_reopen_count_providers_seen() {
    let db = temp_db();
    let store = open(&db.path).await;
    let b = block(20);
    let l = log_of(&b, 3);
    let first = write(
        &store,
        batch(vec![new(b.clone(), "alpha"), new(l.clone(), "alpha")]),
    )
    .await;
    assert_eq!((first.inserted.len(), first.duplicates), (2, 0));

    let again = write(
        &store,
        batch(vec![new(l.clone(), "beta"), new(b.clone(), "beta")]),
    )
    .await;
    assert_eq!((again.inserted.len(), again.duplicates), (0, 2));
    store.close().await;

    let store = open(&db.path).await;
    let third = write(&store, batch(vec![new(b.clone(), "gamma")])).await;
    assert_eq!((third.inserted.len(), third.duplicates), (0, 1));
    assert_eq!(store.count_events(CHAIN).await.unwrap(), 2);
    let block_row = stored(&store, 1).await;
    assert_eq!(block_row.event, b);
    assert_eq!(block_row.providers_seen, 3);
    assert_eq!(block_row.first_provider, "alpha");
    let log_row = stored(&store, 2).await;
    assert_eq!(log_row.event, l);
    assert_eq!(log_row.providers_seen, 2);
    store.close().await;
}

/// `providers_seen` counts providers, not deliveries: the same provider's copy arriving again
/// (a reconnect, the re-read after a restart), as an event or as a redelivery, adds nothing.
#[tokio::test]
async fn a_provider_delivering_the_same_content_again_counts_once() {
    let db = temp_db();
    let store = open(&db.path).await;
    let b = block(30);
    let l = log_of(&b, 1);
    write(
        &store,
        batch(vec![new(b.clone(), "alpha"), new(l.clone(), "alpha")]),
    )
    .await;
    let again = write(
        &store,
        batch(vec![new(b.clone(), "alpha"), new(l.clone(), "alpha")]),
    )
    .await;
    assert_eq!((again.inserted.len(), again.duplicates), (0, 2));
    assert_eq!(stored(&store, 1).await.providers_seen, 1);

    let redelivery = |mask: u64| Redelivery {
        chain: CHAIN.into(),
        key: l.key(),
        block_number: 30,
        providers_mask: mask,
    };
    let mut twice = batch(Vec::new());
    twice.redeliveries = vec![redelivery(0b1), redelivery(0b10)];
    write(&store, twice).await;
    assert_eq!(stored(&store, 2).await.providers_seen, 2, "alpha and beta");
    store.close().await;

    // After a reopen nothing in memory remembers who delivered: the row does.
    let store = open(&db.path).await;
    write(
        &store,
        batch(vec![new(l.clone(), "beta"), new(l.clone(), "gamma")]),
    )
    .await;
    assert_eq!(stored(&store, 2).await.providers_seen, 3);
    let mut high = batch(Vec::new());
    high.redeliveries = vec![redelivery(1 << 63)];
    write(&store, high).await;
    assert_eq!(
        stored(&store, 2).await.providers_seen,
        4,
        "bit 63 counts too"
    );
    assert_eq!(stored(&store, 1).await.providers_seen, 1);
    store.close().await;
}

#[tokio::test]
async fn a_block_its_logs_and_equal_log_indexes_of_other_blocks_are_distinct() {
    let db = temp_db();
    let store = open(&db.path).await;
    let b1 = block(30);
    let b1_fork = block_on(CHAIN, 30, 1);
    let b2 = block(31);
    let other_chain = block_on("other", 30, 0);
    let events = vec![
        new(b1.clone(), "alpha"),
        new(log_of(&b1, 0), "alpha"),
        new(log_of(&b1, 1), "alpha"),
        new(b2.clone(), "alpha"),
        new(log_of(&b2, 0), "alpha"),
        // Same height, different hash: a competing block and its log are distinct content.
        new(b1_fork.clone(), "alpha"),
        new(log_of(&b1_fork, 0), "alpha"),
        // Same content on another chain is another chain's row.
        new(other_chain.clone(), "alpha"),
    ];
    let done = write(&store, batch(events)).await;
    assert_eq!(done.inserted.len(), 8);
    assert_eq!(done.duplicates, 0);
    assert_eq!(store.count_events(CHAIN).await.unwrap(), 7);
    assert_eq!(store.count_events("other").await.unwrap(), 1);
    let kinds: Vec<EventKind> = done.inserted.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == EventKind::Block).count(), 4);
    store.close().await;
}

#[tokio::test]
async fn cursors_strictly_increase_across_batches_and_a_reopen() {
    let db = temp_db();
    let store = open(&db.path).await;
    let mut all = Vec::new();
    let b5 = block(5);
    let one = write(
        &store,
        batch(vec![new(b5.clone(), "a"), new(log_of(&b5, 0), "a")]),
    )
    .await;
    all.extend(cursors(&one));
    // A duplicate wastes its number: the next new event still gets a larger cursor.
    let two = write(
        &store,
        batch(vec![new(b5.clone(), "b"), new(block(6), "a")]),
    )
    .await;
    assert_eq!(two.duplicates, 1);
    all.extend(cursors(&two));
    let last_before_reopen = store.max_cursor().await;
    assert_eq!(last_before_reopen, *all.last().unwrap());
    // A batch of nothing but duplicates consumes no cursor.
    let dups = write(
        &store,
        batch(vec![new(b5.clone(), "c"), new(block(6), "c")]),
    )
    .await;
    assert_eq!((dups.inserted.len(), dups.duplicates), (0, 2));
    assert_eq!(store.max_cursor().await, last_before_reopen);
    store.close().await;

    let store = open(&db.path).await;
    assert_eq!(store.max_cursor().await, last_before_reopen);
    let three = write(&store, batch(vec![new(block(7), "a"), new(block(8), "a")])).await;
    all.extend(cursors(&three));
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "cursors not increasing: {all:?}"
    );
    assert!(three.inserted[0].cursor > last_before_reopen);
    store.close().await;
}

#[tokio::test]
async fn concurrent_writers_on_clones_get_distinct_increasing_cursors() {
    let db = temp_db();
    let store = open(&db.path).await;
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..10 {
                    let done = write(&store, batch(vec![new(block(t * 100 + i), "a")])).await;
                    got.extend(cursors(&done));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        all.extend(got);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40);
    assert_eq!(store.max_cursor().await, *all.last().unwrap());
    store.close().await;
}

#[tokio::test]
async fn a_batch_failing_mid_transaction_leaves_neither_events_nor_checkpoint() {
    let db = temp_db();
    let store = open(&db.path).await;
    let kept = write(&store, batch(vec![new(block(1), "a")])).await;
    assert_eq!(cursors(&kept), [1]);

    // Make the checkpoint write, which comes after the events in the transaction, fail.
    let mut conn = raw(&db.path).await;
    fail_checkpoints(&mut conn).await;
    let b2 = block(2);
    let failing = WriteBatch {
        chain_events: vec![new(b2.clone(), "a"), new(log_of(&b2, 0), "a")],
        checkpoints: Vec::from_iter(Some(checkpoint(2, Some(1), Some(1)))),
        redeliveries: Vec::new(),
        canonical: Vec::new(),
    };
    let err = store.write_batch(failing.clone()).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.count_events(CHAIN).await.unwrap(), 1);
    assert_eq!(store.checkpoint(CHAIN).await.unwrap(), None);
    assert_eq!(store.max_cursor().await, 1);

    sqlx::query("DROP TRIGGER fail_checkpoint")
        .execute(&mut conn)
        .await
        .unwrap();
    let done = write(&store, failing).await;
    assert_eq!(done.inserted.len(), 2);
    assert!(done.inserted[0].cursor > 1);
    assert_eq!(
        store.checkpoint(CHAIN).await.unwrap(),
        Some(checkpoint(2, Some(1), Some(1)))
    );
    store.close().await;
}

#[tokio::test]
async fn an_invalid_event_fails_the_whole_batch() {
    let db = temp_db();
    let store = open(&db.path).await;
    let b = block(3);
    let mut five_topics = log_of(&b, 0);
    if let Some(log) = five_topics.log.as_mut() {
        log.topics = vec![h(1, 1); 5];
    }
    let mut too_big = block(4);
    too_big.block.number = u64::MAX;
    for bad in [five_topics, too_big] {
        let err = store
            .write_batch(WriteBatch {
                chain_events: vec![new(b.clone(), "a"), new(bad, "a")],
                checkpoints: vec![checkpoint(3, None, None)],
                redeliveries: Vec::new(),
                canonical: Vec::new(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(store.count_events(CHAIN).await.unwrap(), 0);
    assert_eq!(store.checkpoint(CHAIN).await.unwrap(), None);
    let done = write(&store, batch(vec![new(b, "a")])).await;
    assert_eq!(done.inserted.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn every_field_of_a_log_and_a_block_round_trips() {
    let db = temp_db();
    let store = open(&db.path).await;
    let max = i64::MAX as u64;
    let b = Event {
        chain: "mainnet".into(),
        block: BlockRef {
            number: max,
            hash: h(0x11, 1),
            parent_hash: h(0x12, 2),
        },
        block_timestamp: max,
        log: None,
    };
    let full_log = Event {
        log: Some(LogFields {
            tx_hash: h(0x13, 3),
            tx_index: max,
            log_index: max,
            address: Address::repeat_byte(0xfe),
            topics: vec![h(0x21, 1), h(0x22, 2), h(0x23, 3), h(0x24, 4)],
            data: Bytes::from((0..=255u8).collect::<Vec<_>>()),
        }),
        ..b.clone()
    };
    let empty_log = Event {
        log: Some(LogFields {
            tx_hash: h(0x14, 4),
            tx_index: 0,
            log_index: 0,
            address: Address::ZERO,
            topics: vec![],
            data: Bytes::new(),
        }),
        ..b.clone()
    };
    let inputs = vec![
        NewEvent {
            event: b.clone(),
            provider: "infura".into(),
            received_at_ms: 1_764_000_000_001,
            providers_mask: 1,
        },
        NewEvent {
            event: full_log.clone(),
            provider: "alchemy".into(),
            received_at_ms: 1_764_000_000_002,
            providers_mask: 1 << 5,
        },
        NewEvent {
            event: empty_log.clone(),
            provider: "local".into(),
            received_at_ms: -5,
            providers_mask: 1 << 63,
        },
    ];
    let done = write(&store, batch(inputs.clone())).await;
    assert_eq!(done.inserted.len(), 3);
    for (input, committed) in inputs.iter().zip(&done.inserted) {
        let read = stored(&store, committed.cursor).await;
        assert_eq!(
            &read, committed,
            "read back differs from what the batch returned"
        );
        assert_eq!(read.event, input.event);
        assert_eq!(read.first_provider, input.provider);
        assert_eq!(read.received_at_ms, input.received_at_ms);
        assert_eq!(read.providers_seen, 1);
        assert!(!read.removed);
        assert_eq!(read.finality, Finality::Latest);
    }
    assert_eq!(store.event_by_cursor(999).await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn finality_comes_from_the_checkpoint_and_its_advances_enter_the_feed() {
    let db = temp_db();
    let store = open(&db.path).await;
    let first = write(
        &store,
        WriteBatch {
            chain_events: (1..=4).map(|n| new(block(n), "a")).collect(),
            checkpoints: Vec::from_iter(Some(checkpoint(4, Some(3), Some(2)))),
            redeliveries: Vec::new(),
            canonical: Vec::new(),
        },
    )
    .await;
    let finality: Vec<Finality> = first.inserted.iter().map(|e| e.finality).collect();
    use Finality::{Finalized, Latest, Safe};
    assert_eq!(finality, [Finalized, Finalized, Safe, Latest]);
    // Advances take cursors after the batch's events: safe first, then finalized.
    let advances: Vec<(i64, Finality, u64)> = first
        .finality
        .iter()
        .map(|a| (a.cursor, a.finality, a.to_block))
        .collect();
    assert_eq!(advances, [(5, Safe, 3), (6, Finalized, 2)]);
    assert_eq!(store.max_cursor().await, 6);

    // A lagging provider's lower heights do not move finality back nor record an advance.
    let lower = write(
        &store,
        WriteBatch {
            chain_events: vec![],
            checkpoints: Vec::from_iter(Some(checkpoint(4, Some(1), Some(1)))),
            redeliveries: Vec::new(),
            canonical: Vec::new(),
        },
    )
    .await;
    assert!(lower.finality.is_empty());
    assert_eq!(
        store.checkpoint(CHAIN).await.unwrap(),
        Some(checkpoint(4, Some(3), Some(2)))
    );

    // Finalizing everything changes what reads report, without touching event rows.
    let up = write(
        &store,
        WriteBatch {
            chain_events: vec![new(block(5), "a")],
            checkpoints: Vec::from_iter(Some(checkpoint(5, Some(5), Some(4)))),
            redeliveries: Vec::new(),
            canonical: Vec::new(),
        },
    )
    .await;
    assert_eq!(cursors(&up), [7]);
    assert_eq!(up.inserted[0].finality, Safe);
    assert_eq!(up.finality.len(), 2);
    assert!(up.finality.iter().all(|a| a.cursor > 7));
    assert_eq!(stored(&store, 4).await.finality, Finalized);
    assert_eq!(stored(&store, 7).await.finality, Safe);
    store.close().await;
}
