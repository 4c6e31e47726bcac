//! The API over a store the test filled itself (through `Store::write_batch`, the writer's own
//! path): rows a reorg retracted, and chains whose safe and finalized heights are known — what
//! the live pipeline does not produce on a still devnet. Expected answers come from what the
//! test wrote, the cursors from the store's commit receipts, never from the API.

use livechain::registry::{MemoryProcessStore, Supervisor, SupervisorConfig};
use std::net::SocketAddr;
use std::sync::Arc;

use livechain::api::{self, AppState};
use livechain::breaker::SystemClock;
use livechain::config::HealthConfig;
use livechain::domain::{BlockRef, ChainName, Event, LogFields};
use livechain::health::ChainHealth;
use livechain::ingest::race::RaceBoard;
use livechain::ingest::{ChainHandle, SyncProgress};
use livechain::store::{Canonical, Checkpoint, NewEvent, Store, WriteBatch};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;

/// Blocks of the generator devnet.
const BLOCKS: u64 = 12;
/// The heights the fork in chain `alpha` replaced.
const FORK: RangeInclusive<u64> = 10..=12;
const RECEIVED_AT_MS: i64 = 1_700_000_000_123;

/// One row the test wrote.
#[derive(Debug, Clone)]
struct Row {
    chain: &'static str,
    want: Want,
    removed: bool,
    providers_seen: u32,
}

fn event_of(chain: &str, want: &Want) -> Event {
    Event {
        chain: chain.into(),
        block: BlockRef {
            number: want.number,
            hash: want.hash,
            parent_hash: want.parent_hash,
        },
        block_timestamp: want.timestamp,
        log: want.log.as_ref().map(|l| LogFields {
            tx_hash: l.tx_hash,
            tx_index: l.tx_index,
            log_index: l.log_index,
            address: l.address,
            topics: l.topics.clone(),
            data: l.data.clone(),
        }),
    }
}

/// A replacement branch of `FORK` under `chain`'s block `FORK.start() - 1`: other hashes, the
/// first two logs of each canonical block.
fn fork_of(chain: &[Want]) -> Vec<Want> {
    let mut parent = chain
        .iter()
        .find(|w| w.number == FORK.start() - 1 && w.log.is_none())
        .expect("the fork's parent")
        .hash;
    let mut out = Vec::new();
    for n in FORK {
        let hash = B256::repeat_byte(0xf0 + (n - FORK.start()) as u8);
        for want in chain.iter().filter(|w| w.number == n) {
            if want.log.as_ref().is_some_and(|l| l.log_index >= 2) {
                continue;
            }
            out.push(Want {
                hash,
                parent_hash: parent,
                ..want.clone()
            });
        }
        parent = hash;
    }
    out
}

/// A chain the API knows (a `chain` filter may name it), with no ingestion behind it.
fn idle_chain(name: &str) -> ChainHandle {
    let name = ChainName::from(name);
    let health = ChainHealth::new(
        name.clone(),
        HealthConfig::default(),
        Arc::new(SystemClock),
        Vec::new(),
    );
    ChainHandle {
        name: name.clone(),
        chain_id: 1,
        provider_ids: Vec::new(),
        best_head: watch::channel(0).1,
        progress: watch::channel(SyncProgress::default()).1,
        providers: livechain::ingest::providers::ProviderSet::new(Vec::new(), health.clone()),
        health,
        filters: livechain::ingest::filters::ChainFilters::new(&name, Vec::new(), 0),
        reorgs: livechain::ingest::ReorgLog::default(),
        stored: Default::default(),
        backfill: Default::default(),
        listeners: Arc::from([]),
        race: Arc::new(RaceBoard::new(name, &[], &[])),
        subscriptions: Vec::new(),
    }
}

/// The API alone on `store` (no ingestion), on an ephemeral port, until `shutdown`; it knows
/// the chains the store was filled with.
async fn serve(store: Store, shutdown: CancellationToken) -> SocketAddr {
    let state = AppState {
        store,
        metrics: livechain::telemetry::prometheus(),
        chains: ["alpha", "beta", "gamma"].map(idle_chain).into(),
        writer: Arc::default(),
        supervisor: Supervisor::start(
            SupervisorConfig::default(),
            Arc::new(MemoryProcessStore::new()),
            &shutdown,
        )
        .await
        .expect("supervisor"),
        hub: livechain::publish::Hub::new(16),
        stream_slots: api::StreamSlots::new(api::slots::STREAMS, 64, 64),
        gateway_slots: api::StreamSlots::new(api::slots::GATEWAY_SOCKETS, 64, 64),
        shutdown: shutdown.clone(),
        gateways: Arc::from([]),
        access: api::access::Access::new(&Default::default()),
        body_timeout: Duration::from_secs(30),
        query_timeout: Duration::from_secs(10),
    };
    let listener = api::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(api::serve(
        listener,
        state,
        Duration::from_secs(10),
        shutdown,
    ));
    addr
}

/// Three chains with the same blocks: `alpha` with a reorg at `FORK` and safe 8 / finalized 4,
/// `beta` with finalized 6 and no safe height yet, `gamma` with no checkpoint at all.
async fn fill(store: &Store, devnet: &Devnet) -> Vec<Row> {
    let chain = model(devnet, 0..=BLOCKS);
    let fork = fork_of(&chain);
    let mut rows = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        for (i, want) in chain.iter().enumerate() {
            rows.push(Row {
                chain: name,
                want: want.clone(),
                removed: false,
                providers_seen: 1 + (i % 3) as u32,
            });
        }
    }
    rows.extend(fork.iter().map(|want| Row {
        chain: "alpha",
        want: want.clone(),
        removed: true,
        providers_seen: 1,
    }));
    // The fork's rows are written first, as if a provider had delivered them before the reorg;
    // then the canonical ones.
    rows.sort_by_key(|r| !r.removed);
    let batch = WriteBatch {
        chain_events: rows
            .iter()
            .map(|r| NewEvent {
                event: event_of(r.chain, &r.want),
                provider: "fixture".into(),
                received_at_ms: RECEIVED_AT_MS,
                // One bit per provider that delivered it: `providers_seen` is their number.
                providers_mask: (1u64 << r.providers_seen) - 1,
            })
            .collect(),
        ..WriteBatch::default()
    };
    let committed = store.write_batch(batch).await.expect("write the events");
    assert_eq!(committed.inserted.len(), rows.len(), "every row is new");
    for (row, stored) in rows.iter_mut().zip(&committed.inserted) {
        assert_eq!(stored.event, event_of(row.chain, &row.want));
        row.want.cursor = stored.cursor;
    }

    let head = chain
        .iter()
        .find(|w| w.number == BLOCKS && w.log.is_none())
        .expect("the head block")
        .hash;
    let checkpoint = |name: &str, safe, finalized| Checkpoint {
        chain: name.into(),
        block_number: BLOCKS,
        block_hash: head,
        safe_block: safe,
        finalized_block: finalized,
    };
    let canonical: Vec<B256> = FORK
        .map(|n| {
            chain
                .iter()
                .find(|w| w.number == n)
                .expect("canonical")
                .hash
        })
        .collect();
    let committed = store
        .write_batch(WriteBatch {
            canonical: vec![Canonical {
                chain: "alpha".into(),
                first: *FORK.start(),
                hashes: canonical,
            }],
            checkpoints: vec![
                checkpoint("alpha", Some(8), Some(4)),
                checkpoint("beta", None, Some(6)),
            ],
            ..WriteBatch::default()
        })
        .await
        .expect("write the reorg and the checkpoints");
    assert_eq!(
        committed.retractions.len(),
        fork.len(),
        "the fork is retracted"
    );
    rows
}

/// The finality rule for `number` given the chain's heights.
fn finality(number: u64, safe: Option<u64>, finalized: Option<u64>) -> &'static str {
    if finalized.is_some_and(|f| number <= f) {
        "finalized"
    } else if safe.is_some_and(|s| number <= s) {
        "safe"
    } else {
        "latest"
    }
}

fn heights(chain: &str) -> (Option<u64>, Option<u64>) {
    match chain {
        "alpha" => (Some(8), Some(4)),
        "beta" => (None, Some(6)),
        _ => (None, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_rows_and_finality_levels_filter_as_stored() {
    let devnet = support::devnet(1, STILL_BLOCK_TIME_MS, 5, BLOCKS).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("fixture.db"))
        .await
        .expect("open the store");
    let rows = fill(&store, &devnet).await;
    let shutdown = CancellationToken::new();
    let base = format!("http://{}", serve(store.clone(), shutdown.clone()).await);

    // Every row as written: removed flag, finality by its chain's heights, bookkeeping.
    let (listing, _) = walk(&base, "include_removed=true", 1000).await;
    assert_eq!(listing.len(), rows.len());
    let mut by_cursor = rows.clone();
    by_cursor.sort_by_key(|r| r.want.cursor);
    for (event, row) in listing.iter().zip(&by_cursor) {
        let (safe, finalized) = heights(row.chain);
        assert_eq!(cursor_of(event), row.want.cursor, "{event}");
        assert_eq!(id_of(event), row.want.id(), "{event}");
        assert_eq!(event["chain"], row.chain, "{event}");
        assert_eq!(event["removed"], row.removed, "{event}");
        assert_eq!(
            event["finality"],
            finality(row.want.number, safe, finalized),
            "{event}"
        );
        assert_eq!(event["first_provider"], "fixture", "{event}");
        assert_eq!(event["providers_seen"], row.providers_seen, "{event}");
        assert_eq!(event["received_at"], "2023-11-14T22:13:20.123Z", "{event}");
    }

    type Wants = Box<dyn Fn(&Row) -> bool>;
    let canonical = |r: &Row| !r.removed;
    let fork_block = fork_of(&model(&devnet, 0..=BLOCKS))[0].hash;
    let cases: Vec<(String, Wants)> = vec![
        ("".into(), Box::new(canonical)),
        ("include_removed=false".into(), Box::new(canonical)),
        ("include_removed=true".into(), Box::new(|_| true)),
        (
            "chain=alpha".into(),
            Box::new(|r| r.chain == "alpha" && !r.removed),
        ),
        (
            "chain=alpha&include_removed=1".into(),
            Box::new(|r| r.chain == "alpha"),
        ),
        (
            "chain=alpha&include_removed=true&kind=block&from_block=10".into(),
            Box::new(|r| r.chain == "alpha" && r.want.log.is_none() && r.want.number >= 10),
        ),
        (format!("block_hash={fork_block}"), Box::new(|_| false)),
        (
            format!("block_hash={fork_block}&include_removed=true"),
            Box::new(move |r| r.want.hash == fork_block),
        ),
        ("chain=beta".into(), Box::new(|r| r.chain == "beta")),
        // finality, per chain, removed rows excluded unless asked for.
        ("finality=latest".into(), Box::new(canonical)),
        (
            "finality=finalized".into(),
            Box::new(|r| {
                let (safe, finalized) = heights(r.chain);
                !r.removed && finality(r.want.number, safe, finalized) == "finalized"
            }),
        ),
        (
            "finality=safe".into(),
            Box::new(|r| {
                let (safe, finalized) = heights(r.chain);
                !r.removed && finality(r.want.number, safe, finalized) != "latest"
            }),
        ),
        (
            "finality=safe&chain=alpha".into(),
            Box::new(|r| r.chain == "alpha" && !r.removed && r.want.number <= 8),
        ),
        // finalized without a safe height: safe includes finalized.
        (
            "finality=safe&chain=beta".into(),
            Box::new(|r| r.chain == "beta" && r.want.number <= 6),
        ),
        ("finality=safe&chain=gamma".into(), Box::new(|_| false)),
        ("finality=finalized&chain=gamma".into(), Box::new(|_| false)),
        // Above every safe height: nothing, removed rows included.
        (
            "finality=safe&include_removed=true&from_block=9".into(),
            Box::new(|_| false),
        ),
    ];
    let mut problems = Vec::new();
    for (query, wants) in &cases {
        let expected: Vec<i64> = by_cursor
            .iter()
            .filter(|r| wants(r))
            .map(|r| r.want.cursor)
            .collect();
        for (order, limit) in [("asc", 1000), ("asc", 7), ("desc", 7)] {
            let q = format!("{query}&order={order}");
            let (events, _) = walk(&base, &q, limit).await;
            let mut got: Vec<i64> = events.iter().map(cursor_of).collect();
            if order == "desc" {
                got.reverse();
            }
            if got != expected {
                problems.push(format!(
                    "{q} (pages of {limit}): {} events {:?}..., expected {} {:?}...",
                    got.len(),
                    &got[..got.len().min(5)],
                    expected.len(),
                    &expected[..expected.len().min(5)]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A retracted event is still found by its cursor, marked removed.
    let retracted = by_cursor.iter().find(|r| r.removed).expect("a fork row");
    let (status, body) =
        support::get_json(&format!("{base}/v1/events/{}", retracted.want.cursor)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], true, "{body}");
    assert_eq!(id_of(&body), retracted.want.id());

    shutdown.cancel();
    store.close().await;
}
