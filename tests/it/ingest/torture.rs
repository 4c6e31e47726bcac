//! Crash torture: the real binary SIGKILLed at seeded random moments, again and again, while the
//! devnet produces a block every 10 ms with a reorg every 15 blocks and retention prunes.
//!
//! After every kill the file is checked as a restart will find it: the canonical rows of the
//! settled range are the devnet's chain, whole blocks only, nothing committed before was lost
//! or renumbered, and every cursor of the change feed (events and changes) is unique and above
//! every cursor of the previous run. A stream client resumes from its last cursor at every
//! restart; at the end it has seen each stored event exactly once, in cursor order, retractions
//! included. `LIVECHAIN_TORTURE_KILLS` (20 by default) and `LIVECHAIN_TORTURE_SEED` change the
//! run; BENCHMARKS.md records the 100-kill one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use livechain::devnet::DevnetConfig;

use super::crash::Service;
use super::*;

/// Depth of the devnet's reorgs: blocks this far below a committed checkpoint are settled.
const DEPTH: u64 = 3;

/// What one resuming `/v1/stream` client saw across every restart.
#[derive(Debug, Default)]
struct Client {
    /// Per event cursor: live (`event`) or retracted (`removed`), as last told.
    live: BTreeMap<i64, bool>,
    /// Problems found while receiving (a message out of order, an event told twice).
    problems: Vec<String>,
    /// The last message cursor: where the next connection resumes.
    last: i64,
    /// Connections made.
    connections: usize,
}

impl Client {
    fn record(&mut self, msg: &Value) {
        let kind = msg["type"].as_str().unwrap_or_default();
        if kind == "error" {
            self.problems.push(format!("the stream closed with {msg}"));
            return;
        }
        let (Some(cursor), Some(event)) = (msg["cursor"].as_i64(), msg["event"]["cursor"].as_i64())
        else {
            if kind == "finality" {
                self.last = msg["cursor"].as_i64().unwrap_or(self.last);
            }
            return;
        };
        if cursor <= self.last {
            self.problems
                .push(format!("message cursor {cursor} after {}", self.last));
        }
        self.last = cursor;
        let now = kind == "event";
        if self.live.insert(event, now) == Some(now) {
            self.problems.push(format!(
                "event {event} told {kind} twice (message {cursor})"
            ));
        }
    }
}

/// Keeps a client subscribed to `ws_base`, resuming from its last cursor whenever the socket
/// ends (the service was killed), until `stop`.
fn resume_forever(ws_base: String, client: Arc<Mutex<Client>>, stop: CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let since = client.lock().expect("not poisoned").last;
            let url = format!("{ws_base}/v1/stream?since={since}");
            let connect = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url));
            let Ok(Ok((mut ws, _))) = connect.await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            client.lock().expect("not poisoned").connections += 1;
            loop {
                let msg = tokio::select! {
                    () = stop.cancelled() => return,
                    msg = ws.next() => msg,
                };
                let Some(Ok(Message::Text(text))) = msg else {
                    break;
                };
                if let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) {
                    client.lock().expect("not poisoned").record(&msg);
                }
            }
        }
    });
}

/// The first stored event the client's view disagrees with (not seen, or seen in the wrong
/// state), counting from the first event it saw; `None` when it has seen everything.
fn disagreement(client: &Client, rows: &[Stored]) -> Option<String> {
    let Some(first) = client.live.keys().next().copied() else {
        return Some("the client saw no event".to_owned());
    };
    rows.iter()
        .filter(|r| r.cursor >= first)
        .find(|r| client.live.get(&r.cursor) != Some(&!r.removed))
        .map(|r| {
            format!(
                "the client's view of {:?} (cursor {}, removed {}): {:?}",
                r.id,
                r.cursor,
                r.removed,
                client.live.get(&r.cursor)
            )
        })
}

/// Every cursor of the change feed: events' and changes' (one sequence).
async fn feed_cursors(db: &Path) -> Vec<i64> {
    let mut conn = open_db(db).await;
    let cursors = sqlx::query_scalar(
        "SELECT cursor FROM events UNION ALL SELECT cursor FROM changes ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read the cursors");
    let _ = conn.close().await;
    cursors
}

/// The retention mark (lowest block kept), 0 before the first prune.
async fn mark(db: &Path) -> u64 {
    let mut conn = open_db(db).await;
    let mark: Option<i64> = sqlx::query_scalar("SELECT low_block FROM retention WHERE chain = ?")
        .bind(CHAIN)
        .fetch_optional(&mut conn)
        .await
        .expect("read the mark");
    let _ = conn.close().await;
    mark.map_or(0, |m| u64::try_from(m).expect("mark >= 0"))
}

/// What the previous kill left: each stored row's identity by cursor, and the highest cursor.
#[derive(Default)]
struct Before {
    rows: HashMap<i64, Identity>,
    top: i64,
    checkpoint: Option<u64>,
}

/// The checks after one kill.
async fn after_kill(devnet: &TestDevnet, db: &Path, before: &mut Before, kill: usize) {
    let rows = db_rows(db).await;
    let low = mark(db).await;
    let checkpoint = committed_checkpoint(db).await;
    // The change feed: unique cursors, all new ones above the previous run's.
    let cursors = feed_cursors(db).await;
    let unique: BTreeSet<i64> = cursors.iter().copied().collect();
    assert_eq!(unique.len(), cursors.len(), "kill {kill}: a cursor twice");
    let new: Vec<i64> = rows
        .iter()
        .map(|r| r.cursor)
        .filter(|c| !before.rows.contains_key(c))
        .collect();
    if let Some(first) = new.iter().min() {
        assert!(
            *first > before.top,
            "kill {kill}: new row at cursor {first}, not above the previous {}",
            before.top
        );
    }
    // Nothing committed is lost or renumbered, except what retention pruned below the mark.
    let now: HashMap<i64, &Identity> = rows.iter().map(|r| (r.cursor, &r.id)).collect();
    for (cursor, id) in &before.rows {
        if id.0 >= low {
            assert_eq!(
                now.get(cursor),
                Some(&id),
                "kill {kill}: {id:?} (cursor {cursor}) was lost or renumbered"
            );
        }
    }
    // The settled range is the devnet's chain, every block whole.
    if let Some(cp) = checkpoint.filter(|cp| *cp >= low + DEPTH) {
        let settled = low..=cp - DEPTH;
        let stored: BTreeSet<&Identity> = rows
            .iter()
            .filter(|r| !r.removed && settled.contains(&r.id.0))
            .map(|r| &r.id)
            .collect();
        let truth = expected(devnet, settled.clone());
        let missing = truth.keys().filter(|id| !stored.contains(id)).count();
        let foreign = stored.iter().filter(|id| !truth.contains_key(id)).count();
        assert!(
            missing == 0 && foreign == 0,
            "kill {kill}: blocks {settled:?}: {missing} canonical rows missing, {foreign} foreign"
        );
    }
    assert!(
        checkpoint >= before.checkpoint.map(|c| c.saturating_sub(DEPTH)),
        "kill {kill}: the checkpoint fell from {:?} to {checkpoint:?}",
        before.checkpoint
    );
    before.top = cursors
        .last()
        .copied()
        .unwrap_or(before.top)
        .max(before.top);
    before.rows = rows.into_iter().map(|r| (r.cursor, r.id)).collect();
    before.checkpoint = checkpoint;
}

/// A port free on 127.0.0.1 now, so every restart serves the client at the same address.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_torture_with_reorgs_and_pruning_loses_and_duplicates_nothing() {
    let kills = env_number("LIVECHAIN_TORTURE_KILLS", 20) as usize;
    let mut rng = StdRng::seed_from_u64(env_number("LIVECHAIN_TORTURE_SEED", 19));
    let devnet = support::devnet_with(DevnetConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 2,
        block_time_ms: 10,
        logs_per_block: 5,
        initial_blocks: 200,
        reorg_every: Some(15),
        reorg_depth: DEPTH,
        ..DevnetConfig::default()
    })
    .await;
    for i in 0..2 {
        let faults = devnet.faults(i).expect("provider exists");
        faults.set_max_logs_range(Some(40));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let config = dir.path().join("livechain.yaml");
    let port = free_port();
    let yaml = support::service_yaml(&devnet, &db)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + "    retention: { max_events: 6000 }\n";
    std::fs::write(&config, yaml).expect("write the config");
    let log = dir.path().join("livechain.log");

    let client = Arc::new(Mutex::new(Client::default()));
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    resume_forever(
        format!("ws://127.0.0.1:{port}"),
        client.clone(),
        stop.clone(),
    );
    let mut before = Before::default();
    for kill in 0..kills {
        let service = Service::spawn(&config, &log).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        service.kill().await;
        after_kill(&devnet, &db, &mut before, kill).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
    }

    // The last run catches up; then the devnet stops and everything is compared.
    let service = Service::spawn(&config, &log).await;
    wait_committed(&db, devnet.head()).await;
    devnet.shutdown();
    let agreed = support::wait_for(WAIT, POLL, || async {
        let rows = db_rows(&db).await;
        disagreement(&client.lock().expect("not poisoned"), &rows)
            .is_none()
            .then_some(())
    })
    .await;
    if agreed.is_none() {
        let rows = db_rows(&db).await;
        let client = client.lock().expect("not poisoned");
        panic!("{}", disagreement(&client, &rows).unwrap_or_default());
    }
    let checkpoint = committed_checkpoint(&db).await.expect("a checkpoint");
    let low = mark(&db).await;
    let rows = db_rows(&db).await;
    let canonical: BTreeSet<&Identity> = rows
        .iter()
        .filter(|r| !r.removed && (low..=checkpoint).contains(&r.id.0))
        .map(|r| &r.id)
        .collect();
    let truth = expected(&devnet, low..=checkpoint);
    assert!(
        canonical.len() == truth.len() && truth.keys().all(|id| canonical.contains(id)),
        "blocks {low}..={checkpoint}: {} canonical rows stored, the devnet has {}",
        canonical.len(),
        truth.len()
    );
    service.kill().await;
    stop.cancel();

    let client = client.lock().expect("not poisoned");
    assert!(client.problems.is_empty(), "{:?}", client.problems);
    let retracted = rows.iter().filter(|r| r.removed).count();
    eprintln!(
        "torture: {kills} kills survived, blocks {low}..={checkpoint} equal to the devnet's \
         ({} rows), {} reorgs, the client resumed {} times and saw {} events ({retracted} \
         retracted) exactly once; 0 lost, 0 duplicated",
        canonical.len(),
        devnet.reorgs(),
        client.connections,
        client.live.len()
    );
}
