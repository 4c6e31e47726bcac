//! Integration tests: ingestion end to end, providers to SQLite, checked against the devnet's
//! own data.
//!
//! Every test runs the real pipeline (devnet providers over WebSocket and HTTP, the service
//! in-process or as the real binary, a real SQLite file in a temp dir) and ends with the same
//! verdict, [`verify`]: for every block from 0 to the *committed* checkpoint, the block and each
//! of its logs is stored exactly once with the devnet's content (hashes, log indexes, topics,
//! data), and nothing stored is foreign to the devnet's chain.
//!
//! The committed checkpoint is read from the database (`checkpoints`), not from `/v1/chains`:
//! the checkpoint's promise is about what is committed with it, and `/v1/chains` currently
//! announces a range's checkpoint before its transaction commits (see
//! `backfill::reported_checkpoint_is_always_committed`).
//!
//! This file holds the shared helpers; the tests live in the submodules, one per concern.
//! Every wait is bounded ([`WAIT`]); nothing asserts on wall-clock speed.

mod backfill;
mod crash;
mod exactly_once;
mod faults;
mod network;
mod race;
mod restart;
mod retention;
mod storage;
mod stuck;
mod supervised;
mod torture;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::hex;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use livechain::devnet::Devnet;

use crate::support::{self, TestApp, TestDevnet};

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);
/// The chain name `support::service_yaml` configures.
const CHAIN: &str = "devnet";

/// An event's identity: block number, block hash, log index (`None` for the block itself).
type Identity = (u64, String, Option<u64>);

/// What an event must carry, as the devnet serves it. Hex is lowercase, `0x`-prefixed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    parent_hash: String,
    timestamp: u64,
    tx_hash: Option<String>,
    tx_index: Option<u64>,
    address: Option<String>,
    topics: Vec<String>,
    data: Option<String>,
}

/// One stored row: identity, content and the service's bookkeeping.
#[derive(Debug, Clone)]
struct Stored {
    id: Identity,
    content: Content,
    cursor: i64,
    removed: bool,
    providers_seen: u64,
}

/// The devnet's canonical blocks and logs for `blocks`.
fn expected(devnet: &Devnet, blocks: RangeInclusive<u64>) -> BTreeMap<Identity, Content> {
    let mut out = BTreeMap::new();
    for n in blocks {
        let block = devnet
            .block(n)
            .unwrap_or_else(|| panic!("devnet has block {n}"));
        let header = &block.header;
        let hash = header.hash.to_string();
        let parent_hash = header.parent_hash.to_string();
        let timestamp = header.timestamp;
        out.insert(
            (n, hash.clone(), None),
            Content {
                parent_hash: parent_hash.clone(),
                timestamp,
                tx_hash: None,
                tx_index: None,
                address: None,
                topics: Vec::new(),
                data: None,
            },
        );
        for log in devnet.logs(n).unwrap_or_default() {
            let index = log.log_index.expect("devnet logs carry their index");
            out.insert(
                (n, hash.clone(), Some(index)),
                Content {
                    parent_hash: parent_hash.clone(),
                    timestamp,
                    tx_hash: log.transaction_hash.map(|h| h.to_string()),
                    tx_index: log.transaction_index,
                    address: Some(log.address().to_string().to_lowercase()),
                    topics: log.topics().iter().map(ToString::to_string).collect(),
                    data: Some(log.data().data.to_string()),
                },
            );
        }
    }
    out
}

/// The rows of `/v1/events` (`all_events` output) as [`Stored`].
fn from_api(events: &[Value]) -> Vec<Stored> {
    let text = |v: &Value| v.as_str().map(str::to_lowercase);
    events
        .iter()
        .map(|e| {
            let log_index = e["log_index"].as_u64();
            Stored {
                id: (
                    e["block_number"].as_u64().expect("block_number"),
                    text(&e["block_hash"]).expect("block_hash"),
                    log_index,
                ),
                content: Content {
                    parent_hash: text(&e["parent_hash"]).expect("parent_hash"),
                    timestamp: e["block_timestamp"].as_u64().expect("block_timestamp"),
                    tx_hash: text(&e["tx_hash"]),
                    tx_index: e["tx_index"].as_u64(),
                    address: text(&e["address"]),
                    topics: e["topics"]
                        .as_array()
                        .map(|t| t.iter().filter_map(text).collect())
                        .unwrap_or_default(),
                    data: text(&e["data"]),
                },
                cursor: e["cursor"].as_i64().expect("cursor"),
                removed: e["removed"].as_bool().expect("removed"),
                providers_seen: e["providers_seen"].as_u64().expect("providers_seen"),
            }
        })
        .collect()
}

/// Every event of the chain through the API (removed ones included: there must be none).
async fn api_rows(app_base: &str) -> Vec<Stored> {
    from_api(&support::all_events(app_base, &format!("chain={CHAIN}&include_removed=true")).await)
}

/// A read-only connection to the service's database (safe while the service writes: WAL).
async fn open_db(db: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new().filename(db).read_only(true);
    SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()))
}

/// The checkpoint committed in the database: the last block whose events are all committed.
async fn committed_checkpoint(db: &Path) -> Option<u64> {
    if !db.exists() {
        return None;
    }
    let mut conn = open_db(db).await;
    let row = sqlx::query("SELECT block_number FROM checkpoints WHERE chain = ?")
        .bind(CHAIN)
        .fetch_optional(&mut conn)
        .await
        .expect("read the checkpoint");
    let _ = conn.close().await;
    row.map(|r| u64::try_from(r.get::<i64, _>(0)).expect("block_number >= 0"))
}

/// Every event row of the chain, read straight from SQLite (what a restart will find).
async fn db_rows(db: &Path) -> Vec<Stored> {
    let mut conn = open_db(db).await;
    let rows = sqlx::query(
        "SELECT e.cursor, e.block_number, e.block_hash, e.log_index, h.parent_hash, \
         h.block_timestamp, e.tx_hash, e.tx_index, e.address, e.topic0, e.topic1, e.topic2, \
         e.topic3, e.data, e.removed, e.providers_seen FROM events e \
         JOIN headers h ON h.chain = e.chain AND h.block_number = e.block_number \
             AND h.block_hash = e.block_hash \
         WHERE e.chain = (SELECT id FROM names WHERE name = ?) ORDER BY e.cursor",
    )
    .bind(CHAIN)
    .fetch_all(&mut conn)
    .await
    .expect("read the events");
    let _ = conn.close().await;
    let hex_of = |r: &sqlx::sqlite::SqliteRow, i: usize| -> Option<String> {
        r.get::<Option<Vec<u8>>, _>(i).map(hex::encode_prefixed)
    };
    let int = |r: &sqlx::sqlite::SqliteRow, i: usize| -> Option<u64> {
        r.get::<Option<i64>, _>(i)
            .map(|v| u64::try_from(v).expect("non-negative"))
    };
    rows.iter()
        .map(|r| {
            let log_index = r.get::<i64, _>(3);
            Stored {
                id: (
                    int(r, 1).expect("block_number"),
                    hex_of(r, 2).expect("block_hash"),
                    u64::try_from(log_index).ok(),
                ),
                content: Content {
                    parent_hash: hex_of(r, 4).expect("parent_hash"),
                    timestamp: int(r, 5).expect("block_timestamp"),
                    tx_hash: hex_of(r, 6),
                    tx_index: int(r, 7),
                    address: hex_of(r, 8),
                    topics: (9..13).filter_map(|i| hex_of(r, i)).collect(),
                    data: hex_of(r, 13),
                },
                cursor: r.get(0),
                removed: r.get::<i64, _>(14) != 0,
                providers_seen: int(r, 15).expect("providers_seen"),
            }
        })
        .collect()
}

/// What [`verify`] found, for further assertions.
#[derive(Debug)]
struct Verdict {
    /// Blocks and logs checked complete (blocks `0..=checkpoint`).
    complete: usize,
    /// Rows stored above the checkpoint (live deliveries ahead of the range sync), all checked
    /// against the devnet too.
    ahead: usize,
}

/// The verdict of every test: blocks `0..=checkpoint` are stored exactly once each, block and
/// logs, with the devnet's content; nothing is stored twice, removed, or foreign to the chain.
/// Panics naming the first differences.
fn verify(devnet: &Devnet, stored: &[Stored], checkpoint: u64) -> Verdict {
    verify_window(devnet, stored, 0, checkpoint)
}

/// [`verify`] for a window that retention cut at `from`: complete over `from..=checkpoint`.
fn verify_window(devnet: &Devnet, stored: &[Stored], from: u64, checkpoint: u64) -> Verdict {
    let mut problems = Vec::new();
    // Exactly once: one row per identity, one identity per cursor.
    let mut by_id: BTreeMap<&Identity, Vec<i64>> = BTreeMap::new();
    let mut cursors = BTreeSet::new();
    for row in stored {
        by_id.entry(&row.id).or_default().push(row.cursor);
        if !cursors.insert(row.cursor) {
            problems.push(format!("cursor {} appears twice", row.cursor));
        }
        if row.removed {
            problems.push(format!(
                "{:?} is marked removed (no reorg happened)",
                row.id
            ));
        }
        if row.providers_seen == 0 {
            problems.push(format!("{:?} has providers_seen 0", row.id));
        }
    }
    for (id, cursors) in &by_id {
        if cursors.len() > 1 {
            problems.push(format!(
                "{id:?} stored {} times (cursors {cursors:?})",
                cursors.len()
            ));
        }
    }
    // Nothing foreign: every stored row is a canonical block or log of the devnet, as served.
    let top = stored
        .iter()
        .map(|r| r.id.0)
        .max()
        .unwrap_or(0)
        .max(checkpoint);
    let head = devnet.head();
    assert!(
        top <= head,
        "stored block {top} is above the devnet's head {head}"
    );
    let truth = expected(devnet, 0..=top);
    for row in stored {
        match truth.get(&row.id) {
            None => problems.push(format!("{:?} is not on the devnet's chain", row.id)),
            Some(want) if *want != row.content => problems.push(format!(
                "{:?} differs:\n  stored {:?}\n  devnet {want:?}",
                row.id, row.content
            )),
            Some(_) => {}
        }
    }
    // Complete up to the checkpoint: every block and every log.
    let mut complete = 0;
    for id in truth
        .keys()
        .filter(|id| (from..=checkpoint).contains(&id.0))
    {
        if by_id.contains_key(id) {
            complete += 1;
        } else {
            problems.push(format!(
                "{id:?} is missing although the checkpoint is {checkpoint}"
            ));
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(20);
        panic!(
            "{total} problems in {} stored rows (checkpoint {checkpoint}):\n{}",
            stored.len(),
            problems.join("\n")
        );
    }
    let ahead = stored.iter().filter(|r| r.id.0 > checkpoint).count();
    Verdict { complete, ahead }
}

/// Waits (bounded) until the committed checkpoint reaches `block`; returns it.
async fn wait_committed(db: &Path, block: u64) -> u64 {
    let reached = support::wait_for(WAIT, POLL, || async {
        committed_checkpoint(db).await.filter(|cp| *cp >= block)
    })
    .await;
    match reached {
        Some(cp) => cp,
        None => panic!(
            "the committed checkpoint did not reach block {block} within {WAIT:?}: it is {:?}",
            committed_checkpoint(db).await
        ),
    }
}

/// Waits (bounded) until `/v1/chains` reports a checkpoint of at least `block`; returns it.
async fn wait_reported(app: &TestApp, block: u64) -> u64 {
    support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= block)
    })
    .await
    .unwrap_or_else(|| panic!("/v1/chains checkpoint did not reach block {block} within {WAIT:?}"))
}

/// A devnet with `providers` endpoints and 20 logs per block.
async fn devnet(providers: usize, block_time_ms: u64, initial_blocks: u64) -> TestDevnet {
    support::devnet(providers, block_time_ms, 20, initial_blocks).await
}

/// The service in-process on `db`, indexing `devnet` from block 0.
async fn start(devnet: &TestDevnet, db: &Path) -> TestApp {
    support::start_app(support::parse_config(&support::service_yaml(devnet, db))).await
}

/// The service in-process like [`start`], its providers named `{prefix}-p0`, `{prefix}-p1`, ...
/// (the metrics registry is shared by every test of this process; own labels keep them apart).
async fn start_as(devnet: &TestDevnet, db: &Path, prefix: &str) -> TestApp {
    let yaml = support::service_yaml(devnet, db).replace("- id: p", &format!("- id: {prefix}-p"));
    support::start_app(support::parse_config(&yaml)).await
}

/// `livechain_ws_reconnects_total` for `provider` (0 before the first reconnect).
async fn reconnects(app: &TestApp, provider: &str) -> u64 {
    support::provider_metric(app, "livechain_ws_reconnects_total", provider).await as u64
}
