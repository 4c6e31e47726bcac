//! The plans of every filter shape the REST API accepts, and their rows, on a database with
//! skewed data: one address and one event signature dominate, others are rare, and half the
//! chain was written after the other half (as a backfill behind a live tail writes it).

use alloy_primitives::{Address, B256};
use sqlx::Row;

use super::plan;
use super::{EventQuery, Order};
use crate::domain::{
    BlockRef, ChainName, Event, EventFilter, EventKind, Finality, LogFields, StoredEvent,
};
use crate::store::rows::{self, EVENT_COLUMNS, EVENT_FROM};
use crate::store::{Canonical, Checkpoint, NewEvent, Store, WriteBatch};

const BLOCKS: u64 = 2_000;
const LOGS: u64 = 10;
const BETA_BLOCKS: u64 = 300;

fn hot_address() -> Address {
    Address::repeat_byte(0xaa)
}
fn rare_address(i: u64) -> Address {
    Address::left_padding_from(&(1_000 + i).to_be_bytes())
}
fn hot_topic() -> B256 {
    B256::repeat_byte(0xdd)
}
fn value(tag: u8, i: u64) -> B256 {
    let mut b = B256::left_padding_from(&i.to_be_bytes());
    b.0[0] = tag;
    b
}
fn block_hash(chain: &str, n: u64, version: u8) -> B256 {
    let mut b = value(version, n);
    b.0[1] = chain.as_bytes()[0];
    b
}

/// Block `n` of `chain` (version 0 is canonical) and its logs.
fn block(chain: &str, n: u64, logs: u64, version: u8) -> Vec<NewEvent> {
    let block = BlockRef {
        number: n,
        hash: block_hash(chain, n, version),
        parent_hash: block_hash(chain, n.saturating_sub(1), 0),
    };
    let mut out = vec![new_event(chain, block, None)];
    for i in 0..logs {
        let k = n * LOGS + i;
        // 70 % of logs from one address, 80 % with one signature; the rest spread thin.
        let address = if k % 10 < 7 {
            hot_address()
        } else {
            rare_address(k % 200)
        };
        let topic0 = if k % 10 < 8 {
            hot_topic()
        } else {
            value(0x70, k % 50)
        };
        let topics: Vec<B256> = (0..=(k % 4))
            .map(|t| {
                if t == 0 {
                    topic0
                } else {
                    value(0x71 + t as u8, k % 500)
                }
            })
            .collect();
        let log = LogFields {
            tx_hash: value(0x7a, k / 2),
            tx_index: i / 2,
            log_index: i,
            address,
            topics,
            data: vec![version; 32].into(),
        };
        out.push(new_event(chain, block, Some(log)));
    }
    out
}

fn new_event(chain: &str, block: BlockRef, log: Option<LogFields>) -> NewEvent {
    NewEvent {
        event: Event {
            chain: ChainName::from(chain),
            block,
            block_timestamp: 1_700_000_000 + block.number,
            log,
        },
        provider: "p0".into(),
        received_at_ms: 1,
        providers_mask: 1,
    }
}

async fn write(store: &Store, events: Vec<NewEvent>, canonical: Vec<Canonical>) {
    store
        .write_batch(WriteBatch {
            chain_events: events,
            canonical,
            ..WriteBatch::default()
        })
        .await
        .expect("write");
}

/// The upper half of `alpha` first (a live tail), then the lower half (its backfill), `beta`
/// interleaved, a reorg at height 1500, and settled heights.
async fn fill(store: &Store) {
    let halves = [(BLOCKS / 2, BLOCKS), (0, BLOCKS / 2)];
    for (lo, hi) in halves {
        for n in (lo..hi).step_by(50) {
            let mut batch = Vec::new();
            for m in n..(n + 50).min(hi) {
                batch.extend(block("alpha", m, LOGS, 0));
            }
            for m in (n * BETA_BLOCKS / BLOCKS)..((n + 50) * BETA_BLOCKS / BLOCKS) {
                batch.extend(block("beta", m, 3, 0));
            }
            write(store, batch, Vec::new()).await;
        }
    }
    // An orphan at 1500, removed by the canonical range that follows.
    write(store, block("alpha", 1500, LOGS, 1), Vec::new()).await;
    let canonical = Canonical {
        chain: "alpha".into(),
        first: 1500,
        hashes: vec![block_hash("alpha", 1500, 0)],
    };
    write(store, Vec::new(), vec![canonical]).await;
    for (chain, top, safe, finalized) in [
        ("alpha", BLOCKS - 1, Some(1800), Some(1700)),
        ("beta", BETA_BLOCKS - 1, None, Some(250)),
    ] {
        store
            .write_batch(WriteBatch {
                checkpoints: vec![Checkpoint {
                    chain: chain.into(),
                    block_number: top,
                    block_hash: block_hash(chain, top, 0),
                    safe_block: safe,
                    finalized_block: finalized,
                }],
                ..WriteBatch::default()
            })
            .await
            .expect("checkpoint");
    }
}

/// Every stored row, as the queries see them.
async fn all_rows(store: &Store) -> Vec<StoredEvent> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM {EVENT_FROM} ORDER BY e.cursor");
    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&store.shared.readers)
        .await
        .expect("all rows");
    found
        .iter()
        .map(|r| rows::stored_event(r).expect("row"))
        .collect()
}

/// The value filters the API accepts, each alone and a few together.
fn value_filters() -> Vec<(&'static str, EventFilter)> {
    let f = EventFilter::default;
    vec![
        ("none", f()),
        (
            "kind=block",
            EventFilter {
                kind: Some(EventKind::Block),
                ..f()
            },
        ),
        (
            "kind=log",
            EventFilter {
                kind: Some(EventKind::Log),
                ..f()
            },
        ),
        (
            "address=hot",
            EventFilter {
                addresses: vec![hot_address()],
                ..f()
            },
        ),
        (
            "address=rare",
            EventFilter {
                addresses: vec![rare_address(7)],
                ..f()
            },
        ),
        (
            "address=list",
            EventFilter {
                addresses: vec![rare_address(7), rare_address(9), hot_address()],
                ..f()
            },
        ),
        (
            "topic0=hot",
            EventFilter {
                topics: [Some(hot_topic()), None, None, None],
                ..f()
            },
        ),
        (
            "topic0=rare",
            EventFilter {
                topics: [Some(value(0x70, 3)), None, None, None],
                ..f()
            },
        ),
        (
            "topic1",
            EventFilter {
                topics: [None, Some(value(0x72, 13)), None, None],
                ..f()
            },
        ),
        (
            "topic2",
            EventFilter {
                topics: [None, None, Some(value(0x73, 14)), None],
                ..f()
            },
        ),
        (
            "topic3",
            EventFilter {
                topics: [None, None, None, Some(value(0x74, 15))],
                ..f()
            },
        ),
        (
            "tx_hash",
            EventFilter {
                tx_hash: Some(value(0x7a, 6_001)),
                ..f()
            },
        ),
        (
            "block_hash",
            EventFilter {
                block_hash: Some(block_hash("alpha", 1234, 0)),
                ..f()
            },
        ),
        (
            "address+topic0",
            EventFilter {
                addresses: vec![hot_address()],
                topics: [Some(value(0x70, 3)), None, None, None],
                ..f()
            },
        ),
    ]
}

/// Block ranges: none, narrow, wide, open at either end, and the finality levels.
fn ranges() -> Vec<(&'static str, EventFilter)> {
    let f = EventFilter::default;
    vec![
        ("all", f()),
        (
            "narrow",
            EventFilter {
                from_block: Some(1_200),
                to_block: Some(1_210),
                ..f()
            },
        ),
        (
            "wide",
            EventFilter {
                from_block: Some(100),
                to_block: Some(1_900),
                ..f()
            },
        ),
        (
            "from",
            EventFilter {
                from_block: Some(1_950),
                ..f()
            },
        ),
        (
            "to",
            EventFilter {
                to_block: Some(150),
                ..f()
            },
        ),
        (
            "finalized",
            EventFilter {
                finality: Some(Finality::Finalized),
                ..f()
            },
        ),
        (
            "safe",
            EventFilter {
                finality: Some(Finality::Safe),
                ..f()
            },
        ),
    ]
}

fn combine(value: &EventFilter, range: &EventFilter, chain: Option<&str>) -> EventFilter {
    EventFilter {
        chain: chain.map(str::to_owned),
        from_block: range.from_block,
        to_block: range.to_block,
        finality: range.finality,
        ..value.clone()
    }
}

fn expected(all: &[StoredEvent], q: &EventQuery) -> Vec<i64> {
    let settled = |e: &StoredEvent| match q.filter.finality {
        Some(Finality::Finalized) => e.finality == Finality::Finalized,
        Some(Finality::Safe) => e.finality != Finality::Latest,
        Some(Finality::Latest) | None => true,
    };
    let matching = all
        .iter()
        .filter(|e| q.filter.matches(e) && settled(e) && (q.include_removed || !e.removed));
    let cursors: Vec<i64> = match q.order {
        Order::Asc => matching
            .filter(|e| q.after.is_none_or(|a| e.cursor > a))
            .map(|e| e.cursor)
            .collect(),
        Order::Desc => matching
            .rev()
            .filter(|e| q.after.is_none_or(|a| e.cursor < a))
            .map(|e| e.cursor)
            .collect(),
    };
    cursors.into_iter().take(q.limit as usize).collect()
}

async fn plan_of(store: &Store, q: &EventQuery) -> Vec<String> {
    let mut conn = store.shared.readers.acquire().await.expect("conn");
    let Some(mut sql) = plan::build_after(&mut conn, q, "EXPLAIN QUERY PLAN ")
        .await
        .expect("plan")
    else {
        return Vec::new();
    };
    let found = sql.build().fetch_all(&mut *conn).await.expect("explain");
    found.iter().map(|r| r.get::<String, _>(3)).collect()
}

fn queries() -> Vec<(String, &'static str, EventQuery)> {
    let mut out = Vec::new();
    for (vname, v) in value_filters() {
        for (rname, r) in ranges() {
            for chain in [None, Some("alpha")] {
                for (order, after) in [
                    (Order::Asc, None),
                    (Order::Desc, None),
                    (Order::Asc, Some(9_000)),
                    (Order::Desc, Some(15_000)),
                ] {
                    let name = format!("{vname} {rname} chain={chain:?} {order:?} after={after:?}");
                    out.push((
                        name,
                        vname,
                        EventQuery {
                            filter: combine(&v, &r, chain),
                            include_removed: vname == "block_hash",
                            after,
                            limit: 50,
                            order,
                        },
                    ));
                }
            }
        }
    }
    out
}

/// The indexed part of a value tells apart what real chains put there: addresses padded to a
/// topic (12 zero bytes first), vanity addresses (zeros first), hashes, small numbers.
#[test]
fn index_keys_tell_real_values_apart() {
    let padded = |a: Address| B256::left_padding_from(a.as_slice());
    let vanity = Address::from_slice(&[[0u8; 6].as_slice(), &[0x5e; 14]].concat());
    // Values of one column: 32-byte topics, then 20-byte addresses.
    let topics: Vec<Vec<u8>> = vec![
        padded(hot_address()).to_vec(),
        padded(rare_address(7)).to_vec(),
        padded(vanity).to_vec(),
        B256::left_padding_from(&1u64.to_be_bytes()).to_vec(),
        B256::left_padding_from(&2u64.to_be_bytes()).to_vec(),
        hot_topic().to_vec(),
    ];
    let addresses: Vec<Vec<u8>> = vec![
        vanity.to_vec(),
        rare_address(7).to_vec(),
        hot_address().to_vec(),
        Address::ZERO.to_vec(),
    ];
    for values in [topics, addresses] {
        let keys: Vec<&[u8]> = values.iter().map(|v| plan::index_key(v).1).collect();
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a.len(), 8);
            for b in &keys[i + 1..] {
                assert_ne!(a, b, "two values of one column share an index key");
            }
        }
    }
    // The expression's start matches the columns' sizes.
    assert_eq!(plan::index_key(&[0u8; 32]).0, 25);
    assert_eq!(plan::index_key(&[0u8; 20]).0, 13);
}

/// The index a shape's page must walk.
fn index_of(shape: &str) -> &'static str {
    match shape {
        "none" | "kind=log" => "events_chain",
        "kind=block" => "events_chain_blocks",
        "address=hot" | "address=rare" | "address=list" | "address+topic0" => "events_address",
        "topic0=hot" | "topic0=rare" => "events_topic0",
        "topic1" => "events_topic1",
        "topic2" => "events_topic2",
        "topic3" => "events_topic3",
        "tx_hash" => "events_tx_hash",
        "block_hash" => "events_identity",
        other => panic!("no index named for {other}"),
    }
}

/// Why a page's plan is wrong, if it is: `events` read other than through `index` (or by
/// cursor range), or a sort of more than the arms' own pages.
fn fault(plan: &[String], shape: &str) -> Option<String> {
    let index = index_of(shape);
    let reads: Vec<&String> = plan
        .iter()
        .filter(|l| l.starts_with("SCAN e") || l.starts_with("SEARCH e "))
        .collect();
    if reads.is_empty() {
        return Some("events is not read".into());
    }
    let merged = plan.iter().any(|l| l == "MERGE (UNION ALL)");
    for read in &reads {
        // A merged page reads its rows by cursor once the arms chose them.
        if merged && read.as_str() == "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)" {
            continue;
        }
        let by_index = read.starts_with(&format!("SEARCH e USING INDEX {index} ("))
            || read.starts_with(&format!("SEARCH e USING COVERING INDEX {index} ("));
        if !by_index {
            return Some(format!("reads events by {read:?}, not {index}"));
        }
    }
    // A merge reads each arm lazily in its index's order (a sorted arm would be read to its
    // limit first), then sorts the page's own rows (at most `limit`, the last step); a block's
    // rows sort among themselves. Nothing else may sort.
    let sorts = plan.iter().enumerate().any(|(i, l)| {
        let page_sort = merged && i + 1 == plan.len();
        l.contains("TEMP B-TREE") && !page_sort
    });
    if sorts && shape != "block_hash" {
        return Some("sorts".into());
    }
    if !merged && !plan[0].starts_with("SEARCH e ") {
        return Some(format!("events is not the outer loop: {:?}", plan[0]));
    }
    None
}

/// Every shape the REST API accepts (value filters × block ranges × with and without a chain ×
/// both orders, from the start and after a cursor) walks the index meant for it in cursor
/// order, and returns exactly the rows a plain filter over every row returns.
#[tokio::test]
async fn every_filter_shape_walks_its_index_in_cursor_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("plans.db"))
        .await
        .expect("open");
    fill(&store).await;
    let all = all_rows(&store).await;
    let mut faults = Vec::new();
    for (name, shape, q) in queries() {
        let plan = plan_of(&store, &q).await;
        if let Some(fault) = fault(&plan, shape).filter(|_| !plan.is_empty()) {
            faults.push(format!("{name}: {fault}: {}", plan.join("; ")));
        }
        let got: Vec<i64> = store
            .query_events(&q)
            .await
            .expect("query")
            .iter()
            .map(|e| e.cursor)
            .collect();
        let want = expected(&all, &q);
        if got != want {
            faults.push(format!("{name}: rows {got:?}, want {want:?}"));
        }
    }
    assert!(
        faults.is_empty(),
        "{} faults:\n{}",
        faults.len(),
        faults.join("\n")
    );
    store.close().await;
}

/// The plans depend on the fixed statistics only: the same after the database grows and after
/// a restart, and nothing analyses the tables behind their back.
#[tokio::test]
async fn plans_are_the_same_after_growth_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plans.db");
    let store = Store::open(&path).await.expect("open");
    fill(&store).await;
    let plans = |store: Store| async move {
        let mut out = Vec::new();
        for (name, _, q) in queries() {
            out.push((name, plan_of(&store, &q).await));
        }
        (store, out)
    };
    let (store, before) = plans(store).await;
    for n in (BLOCKS..3 * BLOCKS).step_by(100) {
        let batch = (n..n + 100)
            .flat_map(|m| block("alpha", m, LOGS, 0))
            .collect();
        write(&store, batch, Vec::new()).await;
    }
    let (store, grown) = plans(store).await;
    store.close().await;
    let store = Store::open(&path).await.expect("reopen");
    let (store, reopened) = plans(store).await;
    let stat: Vec<(String, String)> =
        sqlx::query_as("SELECT coalesce(idx, tbl), stat FROM sqlite_stat1 ORDER BY 1")
            .fetch_all(&store.shared.readers)
            .await
            .expect("stat1");
    store.close().await;
    for ((name, a), ((_, b), (_, c))) in before.iter().zip(grown.iter().zip(&reopened)) {
        assert_eq!(a, b, "{name}: the plan changed as the database grew");
        assert_eq!(a, c, "{name}: the plan changed across a restart");
    }
    let identity = stat.iter().find(|(i, _)| i == "events_identity");
    assert!(
        identity.is_some_and(|(_, s)| s.starts_with("10000000 ")),
        "{stat:?}"
    );
}

/// A page that runs past its budget is stopped by SQLite, and the reader it ran on goes back
/// to the pool without the deadline: every later read on every reader succeeds.
#[tokio::test]
async fn a_page_past_its_budget_is_stopped_and_leaves_no_deadline_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("budget.db"))
        .await
        .expect("open");
    fill(&store).await;
    let q = EventQuery {
        limit: 1000,
        ..EventQuery::default()
    };
    // No page of a thousand rows is read in a nanosecond.
    let stopped = store
        .query_events_within(&q, std::time::Duration::from_nanos(1))
        .await;
    assert!(
        matches!(stopped, Err(crate::store::StoreError::TooCostly(_))),
        "{stopped:?}"
    );
    let all = all_rows(&store).await;
    for _ in 0..2 * crate::store::READ_CONNECTIONS {
        let page = store.query_events(&q).await.expect("a read after the stop");
        let got: Vec<i64> = page.iter().map(|e| e.cursor).collect();
        assert_eq!(got, expected(&all, &q));
    }
    let within = store
        .query_events_within(&q, std::time::Duration::from_secs(600))
        .await
        .expect("a page within its budget");
    assert_eq!(within.len(), 1000);
    store.close().await;
}
