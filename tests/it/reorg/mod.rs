//! Reorgs end to end on the devnet: reorganisations while the service indexes and while it is
//! stopped, providers that lag without a reorg, a chain replaced past the kept window; each
//! checked against the devnet's own chain, and what stream subscribers saw.
//!
//! - `depths`: depth 1, 3, 12 and 64 during a run, subscribers of every finality.
//! - `providers`: a lagging provider is not a reorg.
//! - `restart`: a reorg while stopped, a chain replaced deeper than the window.

mod depths;
mod providers;
mod restart;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use livechain::devnet::Devnet;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, all_events, checkpoint, wait_for};

/// What one `/v1/stream` subscriber saw, across its reconnections.
#[derive(Debug, Default)]
pub struct Seen {
    /// The cursor of each event received (`event.cursor`), in order of receipt.
    pub events: Vec<i64>,
    /// Per retracted event cursor, how many `removed` messages named it.
    pub removed: HashMap<i64, usize>,
    /// Times the service said `lagged` (the collector then resumed).
    pub lagged: usize,
    last_cursor: i64,
    last_message: Option<Instant>,
}

/// A subscriber collecting in the background; resumes with `since` when cut off.
pub struct Collector {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Collector {
    /// Subscribes to `{ws_base}/v1/stream?since=0&{query}`. A settled-only subscriber
    /// (`finality=safe|finalized`) resumes from its last `finality` message, others from the
    /// last cursor received.
    pub fn start(ws_base: &str, query: &str) -> Collector {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let settled = query.contains("finality=");
        let (url, query) = (format!("{ws_base}/v1/stream"), query.to_owned());
        let task = tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                for _ in 0..200 {
                    let since = seen.lock().expect("not poisoned").last_cursor;
                    let connect =
                        tokio_tungstenite::connect_async(format!("{url}?since={since}&{query}"));
                    let ws = tokio::select! {
                        _ = stop.cancelled() => return,
                        ws = tokio::time::timeout(Duration::from_secs(5), connect) => ws,
                    };
                    let Ok(Ok((mut ws, _))) = ws else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    loop {
                        let msg = tokio::select! {
                            _ = stop.cancelled() => return,
                            msg = ws.next() => msg,
                        };
                        let text = match msg {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => continue,
                        };
                        let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else {
                            continue;
                        };
                        record(&seen, &msg, settled);
                    }
                }
            }
        });
        Collector { seen, stop, task }
    }

    /// Waits until no event, retraction or finality message came for `quiet` (at most `limit`).
    pub async fn settle(&self, quiet: Duration, limit: Duration) {
        let settled = wait_for(limit, Duration::from_millis(100), || async {
            let last = self.seen.lock().expect("not poisoned").last_message;
            last.is_some_and(|t| t.elapsed() >= quiet).then_some(())
        })
        .await;
        assert!(settled.is_some(), "the stream kept talking for {limit:?}");
    }

    pub async fn finish(self) -> Seen {
        self.stop.cancel();
        let _ = self.task.await;
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().expect("not poisoned"))
            .unwrap_or_else(|_| panic!("collector still shared"))
    }
}

fn record(seen: &Mutex<Seen>, msg: &Value, settled: bool) {
    let mut seen = seen.lock().expect("not poisoned");
    let cursor = msg["cursor"].as_i64();
    let event_cursor = msg["event"]["cursor"].as_i64();
    match msg["type"].as_str() {
        Some("event") => {
            seen.events
                .push(event_cursor.expect("an event names its cursor"));
            if !settled {
                seen.last_cursor = cursor.expect("cursor");
            }
        }
        Some("removed") => {
            *seen
                .removed
                .entry(event_cursor.expect("a removal names the event"))
                .or_default() += 1;
            if !settled {
                seen.last_cursor = cursor.expect("cursor");
            }
        }
        Some("finality") => seen.last_cursor = cursor.expect("cursor"),
        Some("lagged") => {
            seen.lagged += 1;
            if let Some(resume) = msg["resume_from"].as_i64() {
                seen.last_cursor = resume;
            }
            return;
        }
        _ => return,
    }
    seen.last_message = Some(Instant::now());
}

/// An event's content identity and the fields a reorg may change, as `/v1/events` shows them.
pub type Row = (u64, String, i64, String, String);

pub fn row(event: &Value) -> Row {
    (
        event["block_number"].as_u64().expect("block_number"),
        event["block_hash"].as_str().expect("block_hash").to_owned(),
        event["log_index"].as_i64().unwrap_or(-1),
        event["tx_hash"].as_str().unwrap_or_default().to_owned(),
        event["data"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The canonical rows of `chain` at heights up to `to`.
pub async fn canonical_rows(base: &str, to: u64) -> BTreeSet<Row> {
    let events = all_events(base, &format!("to_block={to}")).await;
    let rows: BTreeSet<Row> = events.iter().map(row).collect();
    assert_eq!(rows.len(), events.len(), "no row twice");
    rows
}

/// The devnet's own canonical chain up to `to`, as rows.
pub fn devnet_rows(net: &Devnet, to: u64) -> BTreeSet<Row> {
    let mut rows = BTreeSet::new();
    for n in 0..=to {
        let block = net.block(n).expect("block at or below the head");
        let hash = block.header.hash.to_string();
        rows.insert((n, hash.clone(), -1, String::new(), String::new()));
        for log in net.logs(n).expect("logs at or below the head") {
            rows.insert((
                n,
                hash.clone(),
                log.log_index.expect("log index") as i64,
                log.transaction_hash.expect("tx hash").to_string(),
                log.data().data.to_string(),
            ));
        }
    }
    rows
}

pub async fn wait_checkpoint(base: &str, at_least: u64, limit: Duration) {
    let reached = wait_for(limit, Duration::from_millis(50), || async {
        checkpoint(base, "devnet").await.filter(|c| *c >= at_least)
    })
    .await;
    assert!(
        reached.is_some(),
        "checkpoint did not reach {at_least} within {limit:?}"
    );
}

/// The lines of the service's `/metrics` whose name starts with `prefix`.
pub async fn metric_lines(app: &TestApp, prefix: &str) -> Vec<String> {
    let text = crate::support::metrics_text(app).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}
