//! Reorgs end to end on the devnet: reorganisations of depth 1, 3, 12 and 64 while the service
//! indexes, then the canonical rows against the devnet's own chain and against a fresh index of
//! it, and what stream subscribers saw: one `removed` per orphaned event received, and nothing
//! later removed for a `finality=finalized` subscriber.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use livechain::devnet::{Devnet, DevnetConfig};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::{
    self, all_events, checkpoint, parse_config, service_yaml, start_app, wait_for,
};

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
async fn canonical_rows(base: &str, to: u64) -> BTreeSet<Row> {
    let events = all_events(base, &format!("to_block={to}")).await;
    let rows: BTreeSet<Row> = events.iter().map(row).collect();
    assert_eq!(rows.len(), events.len(), "no row twice");
    rows
}

/// The devnet's own canonical chain up to `to`, as rows.
fn devnet_rows(net: &Devnet, to: u64) -> BTreeSet<Row> {
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

async fn wait_checkpoint(base: &str, at_least: u64, limit: Duration) {
    let reached = wait_for(limit, Duration::from_millis(50), || async {
        checkpoint(base, "devnet").await.filter(|c| *c >= at_least)
    })
    .await;
    assert!(
        reached.is_some(),
        "checkpoint did not reach {at_least} within {limit:?}"
    );
}

/// Reorgs of depth 1, 3, 12 and 64 while the service runs (the deeper ones well below its
/// checkpoint): the canonical rows end equal to the devnet's chain and to a fresh index of it;
/// a subscriber that took everything saw exactly one `removed` per orphaned event it had
/// received and none for the others; a `finality=finalized` subscriber never received an event
/// that was later removed.
#[tokio::test]
async fn reorgs_of_depth_1_3_12_and_64_leave_exactly_the_final_chain() {
    // Reorg depth 64 puts the devnet's `safe` tag 64 deep (and `finalized` 80): manual reorgs
    // are clamped above `safe`, and no reorg ever touches a finalized block.
    let config = DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 3,
        block_time_ms: 25,
        logs_per_block: 4,
        initial_blocks: 0,
        reorg_every: None,
        reorg_depth: 64,
        ..DevnetConfig::default()
    };
    let net = support::devnet_with(config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("a.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let everything = Collector::start(&ws_base, "");
    let finalized = Collector::start(&ws_base, "finality=finalized");

    assert!(net.wait_for_head(90, Duration::from_secs(30)).await);
    for depth in [1, 3, 12, 64] {
        // Let the service checkpoint the tip first, so the reorg lands below its checkpoint.
        wait_checkpoint(
            &app.base,
            net.head().saturating_sub(2),
            Duration::from_secs(20),
        )
        .await;
        let (before, head) = (net.reorgs(), net.head());
        let after = net.reorg(depth);
        assert_eq!(net.reorgs(), before + 1, "reorg of depth {depth} honoured");
        assert!(
            after + depth >= head,
            "depth {depth}: head {head} -> {after}"
        );
        // Regrow past the old head, so the next reorg is not clamped.
        assert!(net.wait_for_head(head + 10, Duration::from_secs(30)).await);
    }
    // The last reorged height is final once `finalized` (80 deep) passes it.
    let top = net.head() + 5;
    assert!(net.wait_for_head(top + 100, Duration::from_secs(60)).await);
    wait_checkpoint(&app.base, top + 90, Duration::from_secs(30)).await;
    let truth = devnet_rows(&net, top);

    let fresh = start_app(parse_config(&service_yaml(&net, &dir.path().join("b.db")))).await;
    wait_checkpoint(&fresh.base, top, Duration::from_secs(60)).await;
    let indexed = canonical_rows(&app.base, top).await;
    assert_eq!(indexed.len(), truth.len(), "canonical row count");
    assert!(indexed == truth, "canonical rows equal the devnet's chain");
    assert!(
        canonical_rows(&fresh.base, top).await == indexed,
        "and a fresh index of it"
    );
    fresh.stop().await;

    // Quiesce: no new blocks, then let the subscribers drain.
    net.shutdown();
    everything
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    finalized
        .settle(Duration::from_millis(1500), Duration::from_secs(30))
        .await;
    let stored = all_events(&app.base, "include_removed=true").await;
    let removed: HashSet<i64> = stored
        .iter()
        .filter(|e| e["removed"] == true)
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect();
    assert!(
        removed.len() >= 64,
        "the 64-deep reorg alone orphaned 64 stored blocks; {} rows removed",
        removed.len()
    );
    assert!(
        stored
            .iter()
            .filter(|e| e["removed"] == true)
            .all(|e| e["block_number"].as_u64().is_some_and(|n| n <= top)),
        "orphans only at reorganised heights"
    );

    let all = everything.finish().await;
    let received: HashSet<i64> = all.events.iter().copied().collect();
    assert_eq!(received.len(), all.events.len(), "each event received once");
    for cursor in &received {
        let expected = usize::from(removed.contains(cursor));
        assert_eq!(
            all.removed.get(cursor).copied().unwrap_or(0),
            expected,
            "removed messages for event {cursor}"
        );
    }
    assert!(
        removed.iter().all(|c| received.contains(c)),
        "every orphan had been received (since=0)"
    );

    let settled = finalized.finish().await;
    assert!(
        settled.events.len() > 100,
        "the finalized subscriber received {} events",
        settled.events.len()
    );
    let later_removed: Vec<&i64> = settled
        .events
        .iter()
        .filter(|c| removed.contains(c))
        .collect();
    assert!(
        later_removed.is_empty(),
        "a finalized subscriber received events later removed: {later_removed:?}"
    );
    assert!(settled.removed.is_empty(), "and no retraction");

    eprintln!(
        "reorgs: rows={} removed={} subscriber events={} removals={} lagged={} finalized events={}",
        stored.len(),
        removed.len(),
        all.events.len(),
        all.removed.values().sum::<usize>(),
        all.lagged,
        settled.events.len()
    );
    let text = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("livechain_reorgs") || l.starts_with("livechain_orphans"))
        .collect();
    eprintln!("{}", counted.join("\n"));
    assert!(
        counted
            .iter()
            .any(|l| l.starts_with("livechain_reorgs_total{")),
        "reorgs are counted:\n{text}"
    );
    app.stop().await;
}
