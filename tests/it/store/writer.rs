//! The ingest writer over a real database: a failing transaction is retried with the very same
//! batch while the next one fills, and nothing is lost, duplicated or reordered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livechain::ingest::disk::WriterState;
use livechain::ingest::writer::{Writer, WriterInput};
use tokio::sync::{broadcast, mpsc};

use super::*;

/// `try_write_batch` hands back the batch it could not write, untouched.
#[tokio::test]
async fn a_failed_batch_comes_back_whole() {
    let db = temp_db();
    let store = open(&db.path).await;
    let mut conn = raw(&db.path).await;
    fail_checkpoints(&mut conn).await;
    let b1 = block(1);
    let sent = WriteBatch {
        chain_events: vec![new(b1.clone(), "alpha"), new(log_of(&b1, 0), "beta")],
        checkpoints: vec![checkpoint(1, None, None)],
        redeliveries: Vec::new(),
        canonical: Vec::new(),
    };
    let (err, back) = store
        .try_write_batch(sent.clone())
        .await
        .expect_err("the trigger fails the batch");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(back.chain_events, sent.chain_events);
    assert_eq!(back.checkpoints, sent.checkpoints);
    assert_eq!(store.count_events(CHAIN).await.expect("count"), 0);
    store.close().await;
}

/// While the checkpoint table refuses writes the writer is not ready and keeps retrying; the
/// events sent meanwhile wait in the next batch. Once the table accepts again every event is
/// stored once, announced once in cursor order, and the writer is ready.
#[tokio::test]
async fn the_writer_retries_a_failing_batch_and_loses_nothing() {
    let db = temp_db();
    let store = open(&db.path).await;
    let mut conn = raw(&db.path).await;
    fail_checkpoints(&mut conn).await;

    let ready = Arc::new(WriterState::default());
    let (committed_tx, mut committed_rx) = broadcast::channel(1024);
    let (input, rx) = mpsc::channel(1024);
    let writer =
        tokio::spawn(Writer::new(store.clone(), ready.clone(), committed_tx, None).run(rx));

    let send_block = |number: u64| {
        let input = input.clone();
        async move {
            let b = block(number);
            let events = [b.clone(), log_of(&b, 0), log_of(&b, 1)];
            input
                .send(WriterInput::Events(
                    events.into_iter().map(|e| new(e, "alpha")).collect(),
                ))
                .await
                .expect("writer running");
            input
                .send(WriterInput::Checkpoint(checkpoint(number, None, None)))
                .await
                .expect("writer running");
        }
    };
    send_block(1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the writer never reported the failure"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // More blocks while the first batch is being retried.
    for number in 2..=4 {
        send_block(number).await;
    }
    // Still retrying: nothing was stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.count_events(CHAIN).await.expect("count"), 0);
    assert!(!ready.is_ready());
    let fault = ready.fault().expect("the fault is told");
    assert!(fault.attempts >= 1 && fault.kind == "other", "{fault:?}");
    assert!(fault.error.contains("injected failure"), "{fault:?}");

    sqlx::query("DROP TRIGGER fail_checkpoint")
        .execute(&mut conn)
        .await
        .expect("drop trigger");
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer stops once its input closed")
        .expect("writer task");
    assert!(ready.is_ready() && ready.fault().is_none());
    assert_eq!(store.count_events(CHAIN).await.expect("count"), 12);
    assert_eq!(
        store.checkpoint(CHAIN).await.expect("checkpoint"),
        Some(checkpoint(4, None, None))
    );
    let mut announced = Vec::new();
    while let Ok(done) = committed_rx.try_recv() {
        announced.extend(
            done.inserted
                .iter()
                .map(|e| (e.cursor, e.event.block.number)),
        );
    }
    assert_eq!(announced.len(), 12, "{announced:?}");
    assert!(
        announced.windows(2).all(|w| w[0].0 < w[1].0),
        "{announced:?}"
    );
    assert!(
        announced.windows(2).all(|w| w[0].1 <= w[1].1),
        "{announced:?}"
    );
    store.close().await;
}
