//! Integration tests: the REST API over real HTTP, every answer checked against data computed
//! independently of the API — the devnet's own blocks and logs (`Devnet::block`, `Devnet::logs`,
//! `Devnet::contracts`), or rows written to the store by the test itself.
//!
//! Most tests run the service in-process over a *still* devnet ([`still`]): its history exists
//! at start and no new block comes during the test, so once the checkpoint reaches the head every
//! filter has one exact expected answer. Live ingestion is covered where it matters, by
//! pagination during ingestion (`paging.rs`). `fixture.rs` serves a store the test filled itself,
//! for what the live pipeline does not produce yet (reorged rows, safe and finalized heights).
//!
//! This file holds the shared helpers; the tests live in the submodules, one per concern.
//! Every wait is bounded ([`WAIT`]); nothing asserts on wall-clock speed.

mod access;
mod coverage;
mod errors;
mod filters;
mod fixture;
mod paging;
mod schema;
mod shape;
mod timeouts;

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes};
use serde_json::Value;
use tempfile::TempDir;

use livechain::devnet::Devnet;

use crate::support::{self, TestApp, TestDevnet};

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);
/// The chain name `support::service_yaml` configures.
const CHAIN: &str = "devnet";
/// Blocks a still devnet has at start.
const HISTORY: u64 = 40;
/// Block time of a still devnet: far longer than any test, so its head never moves.
const STILL_BLOCK_TIME_MS: u64 = 3_600_000;
/// The most pages any walk may take.
const MAX_PAGES: usize = 2_000;

/// An event's identity: block number, block hash, log index (`None` for the block itself).
type Id = (u64, B256, Option<u64>);
/// Which of the devnet's events a query must return.
type Selects = Box<dyn Fn(&Want) -> bool>;

/// A block or log as the devnet serves it, with the cursor the service stored it under once known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    number: u64,
    hash: B256,
    parent_hash: B256,
    timestamp: u64,
    log: Option<WantLog>,
    /// Filled from a listing checked equal to the devnet's chain ([`still`]).
    cursor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct WantLog {
    tx_hash: B256,
    tx_index: u64,
    log_index: u64,
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
}

impl Want {
    fn id(&self) -> Id {
        (
            self.number,
            self.hash,
            self.log.as_ref().map(|l| l.log_index),
        )
    }

    fn address(&self) -> Option<Address> {
        self.log.as_ref().map(|l| l.address)
    }

    fn topic(&self, i: usize) -> Option<B256> {
        self.log.as_ref().and_then(|l| l.topics.get(i).copied())
    }
}

/// The devnet's canonical blocks and logs for `blocks`, block first, then its logs.
fn model(devnet: &Devnet, blocks: RangeInclusive<u64>) -> Vec<Want> {
    let mut out = Vec::new();
    for n in blocks {
        let block = devnet
            .block(n)
            .unwrap_or_else(|| panic!("devnet has block {n}"));
        let header = &block.header;
        let base = Want {
            number: n,
            hash: header.hash,
            parent_hash: header.parent_hash,
            timestamp: header.timestamp,
            log: None,
            cursor: 0,
        };
        out.push(base.clone());
        for log in devnet.logs(n).unwrap_or_default() {
            out.push(Want {
                log: Some(WantLog {
                    tx_hash: log.transaction_hash.expect("devnet logs carry a tx hash"),
                    tx_index: log.transaction_index.expect("devnet logs carry a tx index"),
                    log_index: log.log_index.expect("devnet logs carry their index"),
                    address: log.address(),
                    topics: log.topics().to_vec(),
                    data: log.data().data.clone(),
                }),
                ..base.clone()
            });
        }
    }
    out
}

/// An API event's identity.
fn id_of(event: &Value) -> Id {
    let hash = |key: &str| -> B256 {
        event[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} is not a hash in {event}"))
    };
    (
        event["block_number"]
            .as_u64()
            .unwrap_or_else(|| panic!("no block_number in {event}")),
        hash("block_hash"),
        event["log_index"].as_u64(),
    )
}

fn cursor_of(event: &Value) -> i64 {
    event["cursor"]
        .as_i64()
        .unwrap_or_else(|| panic!("no cursor in {event}"))
}

/// The identities of `events`, refusing any listed twice.
fn id_set(events: &[Value], what: &str) -> BTreeSet<Id> {
    let mut ids = BTreeSet::new();
    for event in events {
        assert!(ids.insert(id_of(event)), "{what}: {event} listed twice");
    }
    ids
}

/// One page of `/v1/events?{query}`: its events and `next_cursor`. Panics unless 200.
async fn page(base: &str, query: &str) -> (Vec<Value>, Option<i64>) {
    let (status, body) = support::get_json(&format!("{base}/v1/events?{query}")).await;
    assert_eq!(status, 200, "/v1/events?{query}: {body}");
    let events = body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("/v1/events?{query}: no events array in {body}"))
        .clone();
    let next = &body["next_cursor"];
    assert!(
        next.is_null() || next.is_i64(),
        "/v1/events?{query}: next_cursor {next}"
    );
    (events, next.as_i64())
}

/// Every event of `/v1/events?{query}` following `next_cursor` with pages of `limit`, checking
/// on the way that cursors move strictly in the query's order (no repeat, within or across
/// pages) and that only the last page is short. Returns the events and the number of pages.
async fn walk(base: &str, query: &str, limit: u32) -> (Vec<Value>, usize) {
    walk_from(base, query, limit, None).await
}

/// [`walk`] starting strictly after cursor `start` in the query's order.
async fn walk_from(base: &str, query: &str, limit: u32, start: Option<i64>) -> (Vec<Value>, usize) {
    let desc = query.contains("order=desc");
    let mut events: Vec<Value> = Vec::new();
    let mut after = start;
    for pages in 1..=MAX_PAGES {
        let from = after.map(|c| format!("&after={c}")).unwrap_or_default();
        let q = format!("{query}&limit={limit}{from}");
        let (got, next) = page(base, &q).await;
        assert!(got.len() <= limit as usize, "{q}: {} events", got.len());
        for event in got.iter() {
            let cursor = cursor_of(event);
            if let Some(previous) = events.last().map(cursor_of) {
                let moves = if desc {
                    cursor < previous
                } else {
                    cursor > previous
                };
                assert!(moves, "{q}: cursor {cursor} after {previous}");
            }
            events.push(event.clone());
        }
        let full = got.len() == limit as usize;
        match next {
            Some(next) => {
                assert!(full, "{q}: a short page has next_cursor {next}");
                assert_eq!(Some(next), events.last().map(cursor_of), "{q}");
                after = Some(next);
            }
            None => {
                assert!(!full, "{q}: a full page without next_cursor");
                return (events, pages);
            }
        }
    }
    panic!("/v1/events?{query}: more than {MAX_PAGES} pages");
}

/// The service in-process over a still devnet, caught up with the devnet's head.
struct Still {
    devnet: TestDevnet,
    app: TestApp,
    /// The devnet's chain, blocks `0..=HISTORY`, each with the cursor the service gave it.
    chain: Vec<Want>,
    /// Every event as `/v1/events` lists it (no filter), in cursor order.
    listing: Vec<Value>,
    _dir: TempDir,
}

/// Starts a still devnet (3 providers, 20 logs per block, [`HISTORY`] blocks) and the service
/// on it; returns once everything up to the head is committed and listed exactly as the devnet
/// serves it, so the tests can take the listing's cursors as known.
async fn still() -> Still {
    let devnet = support::devnet(3, STILL_BLOCK_TIME_MS, 20, HISTORY).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let config = support::parse_config(&support::service_yaml(&devnet, &db));
    let app = support::start_app(config).await;
    let store = app.running().store.clone();
    let head = devnet.head();
    assert_eq!(head, HISTORY, "a still devnet's head does not move");
    let reached = support::wait_for(WAIT, POLL, || {
        let store = store.clone();
        async move {
            let committed = store.checkpoint(CHAIN).await.ok()??;
            (committed.block_number >= head).then_some(())
        }
    })
    .await;
    assert!(
        reached.is_some(),
        "the committed checkpoint did not reach the head {head} within {WAIT:?}"
    );
    let reported = support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= head)
    })
    .await;
    assert_eq!(
        reported,
        Some(head),
        "/v1/chains reports the committed checkpoint"
    );

    let listing = support::all_events(&app.base, "").await;
    let mut chain = model(&devnet, 0..=head);
    let listed = id_set(&listing, "the full listing");
    let expected: BTreeSet<Id> = chain.iter().map(Want::id).collect();
    assert_eq!(
        listed.len(),
        listing.len(),
        "the full listing repeats an event"
    );
    assert!(
        listed == expected,
        "the full listing differs from the devnet's chain: {} listed, {} expected; missing {:?}; \
         foreign {:?}",
        listed.len(),
        expected.len(),
        expected.difference(&listed).take(5).collect::<Vec<_>>(),
        listed.difference(&expected).take(5).collect::<Vec<_>>(),
    );
    for want in &mut chain {
        want.cursor = listing
            .iter()
            .find(|e| id_of(e) == want.id())
            .map(cursor_of)
            .expect("listed");
    }
    chain.sort_by_key(|w| w.cursor);
    Still {
        devnet,
        app,
        chain,
        listing,
        _dir: dir,
    }
}

/// Asserts a 400 with exactly `{"error":{"code":"bad_request","message":…,"field":field}}`.
fn assert_bad_request(what: &str, status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_error_shape(what, body, "bad_request", Some(field));
}

/// Asserts the JSON error shape of `docs/api.md`: one `error` object with `code`, a
/// non-empty `message`, and `field` exactly when one is named.
fn assert_error_shape(what: &str, body: &Value, code: &str, field: Option<&str>) {
    let top = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: the error body is not a JSON object: {body}"));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{what}: {body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: error is not an object: {body}"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected: &[&str] = if field.is_some() {
        &["code", "field", "message"]
    } else {
        &["code", "message"]
    };
    assert_eq!(keys, expected, "{what}: {body}");
    assert_eq!(error["code"], code, "{what}: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: empty message in {body}"
    );
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{what}: {body}");
    }
}
