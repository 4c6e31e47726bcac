//! Integration tests: the store on real SQLite files in temporary directories.
//!
//! - `schema`: migrations, tables and pragmas, refusing a newer schema, no rusqlite.
//! - `upgrade`: a database of the previous schema rebuilt by this one, every row kept.
//! - `writes`: exactly-once storage, cursors, transactions, round trips, finality.
//! - `writer`: the ingest writer retrying a failing batch.
//! - `bench`: an ignored micro-measurement of the write path.

mod bench;
mod reorg;
mod retention;
mod schema;
mod upgrade;
mod writer;
mod writes;

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, Bytes};
use livechain::domain::{BlockRef, Event, LogFields, StoredEvent};
use livechain::store::{Checkpoint, Committed, NewEvent, Store, WriteBatch};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

const CHAIN: &str = "devnet";

/// A temporary directory holding one database file; the directory goes when the test ends.
struct TempDb {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data").join("livechain.db");
    TempDb { _dir: dir, path }
}

async fn open(path: &Path) -> Store {
    Store::open(path).await.expect("open store")
}

/// A plain connection to the file, bypassing the store, to inspect or tamper with it.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw connection")
}

/// Makes every checkpoint write on the file fail (`injected failure`) until the trigger is
/// dropped (`DROP TRIGGER fail_checkpoint`): the checkpoint comes after the events in a batch's
/// transaction, so the whole batch fails.
async fn fail_checkpoints(conn: &mut SqliteConnection) {
    sqlx::query(
        "CREATE TRIGGER fail_checkpoint BEFORE INSERT ON checkpoints \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(conn)
    .await
    .expect("trigger");
}

/// A deterministic 32-byte value distinct per (tag, n).
fn h(tag: u8, n: u64) -> B256 {
    let mut bytes = [tag; 32];
    bytes[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(bytes)
}

fn block(number: u64) -> Event {
    block_on(CHAIN, number, 0)
}

/// Block `number` of `chain`; `fork` > 0 gives a competing block at the same height.
fn block_on(chain: &str, number: u64, fork: u8) -> Event {
    Event {
        chain: chain.into(),
        block: BlockRef {
            number,
            hash: h(0xb0 + fork, number),
            parent_hash: h(0xb0 + fork, number.wrapping_sub(1)),
        },
        block_timestamp: 1_700_000_000 + number,
        log: None,
    }
}

fn log_of(block: &Event, log_index: u64) -> Event {
    let mut event = block.clone();
    event.log = Some(LogFields {
        tx_hash: h(0x70, block.block.number * 1000 + log_index / 4),
        tx_index: log_index / 4,
        log_index,
        address: Address::repeat_byte(0x42),
        topics: vec![h(0xdd, 1), h(0x01, log_index)],
        data: Bytes::from(vec![0xab; 64]),
    });
    event
}

fn new(event: Event, provider: &str) -> NewEvent {
    NewEvent {
        event,
        provider: provider.to_owned(),
        received_at_ms: 1_764_000_000_123,
        providers_mask: provider_mask(provider),
    }
}

/// A distinct mask bit per provider name the tests use (the last one for any other name).
fn provider_mask(provider: &str) -> u64 {
    const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
    let bit = NAMES.iter().position(|n| *n == provider).unwrap_or(63);
    1u64 << bit
}

fn batch(events: Vec<NewEvent>) -> WriteBatch {
    WriteBatch {
        chain_events: events,
        checkpoints: Vec::new(),
        redeliveries: Vec::new(),
        canonical: Vec::new(),
    }
}

fn checkpoint(number: u64, safe: Option<u64>, finalized: Option<u64>) -> Checkpoint {
    Checkpoint {
        chain: CHAIN.into(),
        block_number: number,
        block_hash: block(number).block.hash,
        safe_block: safe,
        finalized_block: finalized,
    }
}

async fn write(store: &Store, batch: WriteBatch) -> Committed {
    store.write_batch(batch).await.expect("write batch")
}

async fn stored(store: &Store, cursor: i64) -> StoredEvent {
    store
        .event_by_cursor(cursor)
        .await
        .expect("read event")
        .unwrap_or_else(|| panic!("no event at cursor {cursor}"))
}

fn cursors(committed: &Committed) -> Vec<i64> {
    committed.inserted.iter().map(|e| e.cursor).collect()
}
