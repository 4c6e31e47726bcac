//! The bench's database: ten million events written through the store's own write path, with
//! the skew of real chains, and the values the shapes draw their parameters from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy_primitives::{Address, B256, Bytes, keccak256};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use livechain::domain::{BlockRef, Event, LogFields};
use livechain::store::{Checkpoint, NewEvent, Store, WriteBatch};

pub const SEED: u64 = 7;
/// Bumped when the bench's data or the schema changes, so an old cached file is not reused.
pub const FORMAT: u32 = 6;
pub const LOGS_PER_BLOCK: u64 = 24;
pub const ADDRESSES: u64 = 5_000;
pub const SIGNATURES: u64 = 200;
pub const ACCOUNTS: u64 = 200_000;
/// Blocks per write transaction on `main` (a backfill's range).
pub const BATCH_BLOCKS: u64 = 40;
pub const MAX_WAL_MB: u64 = 256;

/// The database's blocks per chain, events, and the WAL's peak while it was built.
pub struct Built {
    pub events: u64,
    pub blocks: [u64; 2],
    pub wal_peak: u64,
}

pub const CHAINS: [&str; 2] = ["main", "side"];

/// What a previous build recorded beside its file: `events main_blocks side_blocks wal_peak`.
pub fn reuse(record: &Path) -> Option<Built> {
    let text = std::fs::read_to_string(record).ok()?;
    let n: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match n[..] {
        [events, main, side, wal_peak] => Some(Built {
            events,
            blocks: [main, side],
            wal_peak,
        }),
        _ => None,
    }
}

/// Builds the database at `path` unless a complete one is there (its record beside it).
pub async fn build(path: &Path, events: u64) -> anyhow::Result<Built> {
    let record = path.with_extension("built");
    if let Some(built) = reuse(&record) {
        eprintln!(
            "query: reusing {} ({} events)",
            path.display(),
            built.events
        );
        return Ok(built);
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    let store = Store::open(path)
        .await
        .context("opening the bench database")?;
    store.set_max_wal_bytes(MAX_WAL_MB << 20);
    let wal = {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    };
    let mut rng = StdRng::seed_from_u64(SEED);
    let started = Instant::now();
    let (mut written, mut wal_peak) = (0u64, 0u64);
    let mut blocks = [0u64; 2];
    while written < events {
        let mut batch = Vec::new();
        for _ in 0..BATCH_BLOCKS {
            batch.extend(block(&mut rng, 0, blocks[0]));
            blocks[0] += 1;
            // One `side` block per nine `main` blocks: a tenth of the events.
            if blocks[0] % 9 == 0 {
                batch.extend(block(&mut rng, 1, blocks[1]));
                blocks[1] += 1;
            }
        }
        written += batch.len() as u64;
        let checkpoints = (0..2)
            .filter(|&c| blocks[c] > 0)
            .map(|c| Checkpoint {
                chain: CHAINS[c].into(),
                block_number: blocks[c] - 1,
                block_hash: block_hash(c, blocks[c] - 1),
                safe_block: blocks[c].checked_sub(33),
                finalized_block: blocks[c].checked_sub(65),
            })
            .collect();
        store
            .write_batch(WriteBatch {
                chain_events: batch,
                checkpoints,
                ..WriteBatch::default()
            })
            .await
            .context("writing a batch")?;
        wal_peak = wal_peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    store.close().await;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "query: built {written} events in {secs:.0} s ({:.0} events/s), WAL peak {:.0} MiB",
        written as f64 / secs,
        wal_peak as f64 / (1 << 20) as f64
    );
    std::fs::write(
        &record,
        format!("{written} {} {} {wal_peak}\n", blocks[0], blocks[1]),
    )
    .context("recording the build")?;
    Ok(Built {
        events: written,
        blocks,
        wal_peak,
    })
}

pub fn block_hash(chain: usize, n: u64) -> B256 {
    keccak256([&[b'b', chain as u8][..], &n.to_be_bytes()].concat())
}

pub fn tx_hash(chain: usize, n: u64, tx: u64) -> B256 {
    keccak256(
        [
            &[b't', chain as u8][..],
            &n.to_be_bytes(),
            &tx.to_be_bytes(),
        ]
        .concat(),
    )
}

/// An index in `0..n` drawn with a power law: low indices (the popular contracts and events)
/// far more often than high ones.
pub fn skewed(rng: &mut StdRng, n: u64, power: i32) -> u64 {
    let u: f64 = rng.random();
    ((u.powi(power) * n as f64) as u64).min(n - 1)
}

pub fn address(i: u64) -> Address {
    Address::left_padding_from(&keccak256(i.to_be_bytes())[..20])
}

pub fn signature(i: u64) -> B256 {
    keccak256([b"signature".as_slice(), &i.to_be_bytes()].concat())
}

pub fn account(i: u64) -> B256 {
    B256::left_padding_from(&keccak256(i.to_be_bytes())[..20])
}

/// Block `n` of chain `c` and its logs, three logs per transaction.
pub fn block(rng: &mut StdRng, c: usize, n: u64) -> Vec<NewEvent> {
    let block = BlockRef {
        number: n,
        hash: block_hash(c, n),
        parent_hash: if n == 0 {
            B256::ZERO
        } else {
            block_hash(c, n - 1)
        },
    };
    let event = |log: Option<LogFields>| NewEvent {
        event: Event {
            chain: CHAINS[c].into(),
            block,
            block_timestamp: 1_700_000_000 + n * 12,
            log,
        },
        provider: "archive".into(),
        received_at_ms: 1_700_000_000_000,
        providers_mask: 1,
    };
    let mut out = vec![event(None)];
    for i in 0..LOGS_PER_BLOCK {
        // One topic in a tenth of the logs, two in a fifth, three in half, four in a fifth.
        let topics = match rng.random_range(0..10) {
            0 => 1,
            1 | 2 => 2,
            3..=7 => 3,
            _ => 4,
        };
        let mut all = vec![signature(skewed(rng, SIGNATURES, 4))];
        for _ in 1..topics {
            all.push(account(rng.random_range(0..ACCOUNTS)));
        }
        let data = vec![0xab; 32 * rng.random_range(1..=3usize)];
        out.push(event(Some(LogFields {
            tx_hash: tx_hash(c, n, i / 3),
            tx_index: i / 3,
            log_index: i,
            address: address(skewed(rng, ADDRESSES, 3)),
            topics: all,
            data: Bytes::from(data),
        })));
    }
    out
}

/// The main file and its WAL.
pub fn file_bytes(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Bytes per event of each table and index (SQLite's `dbstat`), to stderr.
pub async fn report_sizes(path: &Path, events: u64) {
    use sqlx::{ConnectOptions, Connection};
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let Ok(mut conn) = options.connect().await else {
        return;
    };
    let sizes: Result<Vec<(String, i64)>, _> = sqlx::query_as(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 16",
    )
    .fetch_all(&mut conn)
    .await;
    match sizes {
        Ok(sizes) => {
            let list: Vec<String> = sizes
                .iter()
                .map(|(name, bytes)| format!("{name}={:.1}", *bytes as f64 / events as f64))
                .collect();
            eprintln!(
                "query: bytes per event by table and index: {}",
                list.join(" ")
            );
        }
        Err(err) => eprintln!("query: no per-index sizes (dbstat: {err})"),
    }
    let _ = conn.close().await;
}
