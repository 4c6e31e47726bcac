//! A micro-measurement of the write path (ignored by default).

use std::time::Instant;

use alloy_primitives::Address;
use livechain::store::WriteBatch;

use super::{block, checkpoint, h, log_of, new, open, temp_db, write};

/// A micro-measurement of the write path; prints, never asserts on time. Run with
/// `cargo test --release --test it store::bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly"]
async fn write_throughput_100k_events() {
    const BLOCKS: u64 = 5_000;
    const LOGS_PER_BLOCK: u64 = 19;
    const PER_BATCH: u64 = 50; // blocks per batch: 1,000 events
    let db = temp_db();
    let store = open(&db.path).await;
    let batches: Vec<WriteBatch> = (0..BLOCKS / PER_BATCH)
        .map(|i| {
            let mut events = Vec::new();
            for n in i * PER_BATCH..(i + 1) * PER_BATCH {
                let b = block(n);
                for li in 0..LOGS_PER_BLOCK {
                    let mut l = log_of(&b, li);
                    if let Some(log) = l.log.as_mut() {
                        log.address = Address::with_last_byte((n % 50) as u8);
                        log.topics[1] = h(0x01, n * 100 + li);
                    }
                    events.push(new(l, "alpha"));
                }
                events.push(new(b, "alpha"));
            }
            let last = (i + 1) * PER_BATCH - 1;
            WriteBatch {
                chain_events: events,
                checkpoints: Vec::from_iter(Some(checkpoint(
                    last,
                    Some(last),
                    Some(last.saturating_sub(64)),
                ))),
                redeliveries: Vec::new(),
                canonical: Vec::new(),
            }
        })
        .collect();
    let total: usize = batches.iter().map(|b| b.chain_events.len()).sum();

    let started = Instant::now();
    let mut inserted = 0;
    for batch in batches {
        inserted += write(&store, batch).await.inserted.len();
    }
    let elapsed = started.elapsed();
    assert_eq!(inserted, total);
    println!(
        "store write_batch: {total} events in {:.3} s = {:.0} rows/s ({} events per batch)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        PER_BATCH * (LOGS_PER_BLOCK + 1),
    );
    store.close().await;
}
