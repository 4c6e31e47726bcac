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
    // 1,000-event batches (a loaded writer), then 100-event ones (a live tail: one block).
    for per_batch in [50, 5] {
        measure(per_batch).await;
    }
}

async fn measure(per_batch: u64) {
    const BLOCKS: u64 = 5_000;
    const LOGS_PER_BLOCK: u64 = 19;
    let db = temp_db();
    let store = open(&db.path).await;
    let batches: Vec<WriteBatch> = (0..BLOCKS / per_batch)
        .map(|i| {
            let mut events = Vec::new();
            for n in i * per_batch..(i + 1) * per_batch {
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
            let last = (i + 1) * per_batch - 1;
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
    let mut each = Vec::with_capacity(batches.len());
    for batch in batches {
        let one = Instant::now();
        inserted += write(&store, batch).await.inserted.len();
        each.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    assert_eq!(inserted, total);
    each.sort_by(f64::total_cmp);
    let at = |q: f64| each[((each.len() - 1) as f64 * q) as usize];
    println!(
        "store write_batch: {total} events in {:.3} s = {:.0} rows/s ({} events per batch; \
         a batch p50={:.2} p99={:.2} max={:.2} ms)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        per_batch * (LOGS_PER_BLOCK + 1),
        at(0.5),
        at(0.99),
        at(1.0),
    );
    store.close().await;
}
