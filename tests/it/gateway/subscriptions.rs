//! `eth_subscribe` over the gateway's WebSocket, served from the change feed: every head and
//! every log once, in order, across a provider going away mid-subscription and a reorg (the
//! orphaned logs sent again with `removed: true`, the new branch's heads after them);
//! `eth_unsubscribe` honoured; other methods proxied on the same socket; a caller that never
//! reads does not hold up the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, parse_config, start_app};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A caller: answers by id, notifications by subscription, in arrival order.
pub(super) struct Client {
    tx: futures_util::stream::SplitSink<Socket, Message>,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    notes: Arc<Mutex<Vec<Value>>>,
}

impl Client {
    pub(super) async fn connect(url: &str) -> Client {
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("connects in time")
        .expect("connects");
        let (tx, mut rx) = socket.split();
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let notes = Arc::new(Mutex::new(Vec::new()));
        let (a, n) = (answers.clone(), notes.clone());
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = rx.next().await {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["method"] == "eth_subscription" {
                    n.lock().expect("notes").push(v["params"].clone());
                } else {
                    a.lock().expect("answers").insert(v["id"].to_string(), v);
                }
            }
        });
        Client { tx, answers, notes }
    }

    pub(super) async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.tx
            .send(Message::Text(body.to_string().into()))
            .await
            .expect("send");
        let answers = self.answers.clone();
        support::wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
            let answers = answers.clone();
            async move { answers.lock().expect("answers").remove(&id.to_string()) }
        })
        .await
        .unwrap_or_else(|| panic!("no answer to {method}"))
    }

    /// Closes the socket (the reading task ends with it).
    pub(super) async fn close(mut self) {
        self.tx.send(Message::Close(None)).await.expect("close");
    }

    pub(super) fn of(&self, subscription: &Value) -> Vec<Value> {
        let notes = self.notes.lock().expect("notes");
        notes
            .iter()
            .filter(|p| &p["subscription"] == subscription)
            .map(|p| p["result"].clone())
            .collect()
    }
}

/// A caller that subscribes to every log and never reads; kept open while the socket lives.
async fn idle_subscriber(url: &str) -> Socket {
    let (mut idle, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("idle connects");
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", {}]});
    idle.send(Message::Text(body.to_string().into()))
        .await
        .expect("send");
    idle
}

pub(super) fn number(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0)
}

#[tokio::test]
async fn subscriptions_are_gapless_across_failover_and_reorgs() {
    let devnet = support::devnet(2, 100, 2, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&support::service_yaml(
        &devnet,
        &dir.path().join("s.db"),
    )))
    .await;
    let url = app.url("/rpc/devnet").replacen("http://", "ws://", 1);
    let mut client = Client::connect(&url).await;
    let heads = client.call(1, "eth_subscribe", json!(["newHeads"])).await["result"].clone();
    let logs = client.call(2, "eth_subscribe", json!(["logs", {}])).await["result"].clone();
    assert!(
        heads.is_string() && logs.is_string() && heads != logs,
        "{heads} {logs}"
    );
    let chain_id = client.call(3, "eth_chainId", json!([])).await;
    assert_eq!(
        chain_id["result"],
        format!("0x{:x}", devnet.config().chain_id),
        "proxied on the socket"
    );
    let uncovered = client
        .call(4, "eth_subscribe", json!(["newPendingTransactions"]))
        .await;
    assert_eq!(uncovered["error"]["code"], -32602, "{uncovered}");

    // A caller that subscribes and never reads: it must not hold anyone up.
    let _idle = idle_subscriber(&url).await;

    let end = fail_over_and_reorg(&devnet).await;
    // Wait until the feed has announced the head the devnet reached.
    let seen = support::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let got = client.of(&heads);
        async move {
            got.iter()
                .any(|h| number(&h["number"]) >= end)
                .then_some(())
        }
    })
    .await;
    assert!(seen.is_some(), "newHeads reached {end}");

    check_heads(&client.of(&heads), &devnet, end);
    check_logs(&client.of(&logs), &devnet, end);

    let gone = client.call(5, "eth_unsubscribe", json!([logs])).await;
    assert_eq!(gone["result"], true);
    let again = client.call(6, "eth_unsubscribe", json!([logs])).await;
    assert_eq!(again["result"], false);
    let before = client.of(&logs).len();
    assert!(devnet.wait_for_head(end + 5, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.of(&logs).len(),
        before,
        "nothing after eth_unsubscribe"
    );
    app.stop().await;
}

/// The chain's course while subscribed: blocks, the preferred provider refusing connections,
/// more blocks, a reorg of depth 3, more blocks, the provider back. The head it reached.
pub(super) async fn fail_over_and_reorg(devnet: &support::TestDevnet) -> u64 {
    let wait = Duration::from_secs(20);
    let start = devnet.head();
    assert!(devnet.wait_for_head(start + 10, wait).await);
    // The preferred provider goes away mid-subscription.
    devnet.faults(0).expect("p0").set_refuse_connections(true);
    assert!(devnet.wait_for_head(start + 20, wait).await);
    let reorged = devnet.reorg(3);
    assert!(devnet.wait_for_head(reorged + 8, wait).await);
    devnet.faults(0).expect("p0").set_refuse_connections(false);
    devnet.head()
}

/// Heads: every height from the first to `end` announced, each head's parent announced before
/// it (one chain, no gap), and the last head announced at each height the devnet's.
pub(super) fn check_heads(heads: &[Value], devnet: &support::TestDevnet, end: u64) {
    assert!(heads.len() >= 20, "only {} heads", heads.len());
    let first = number(&heads[0]["number"]);
    let mut hashes = HashSet::new();
    let mut last_at = HashMap::new();
    for (i, head) in heads.iter().enumerate() {
        let hash = head["hash"].as_str().expect("a hash").to_owned();
        if i > 0 {
            let parent = head["parentHash"].as_str().expect("a parent");
            assert!(
                hashes.contains(parent),
                "head {i} ({head}) follows no announced head"
            );
        }
        // A head the devnet still has is sent whole; one already orphaned there when it was
        // announced (the devnet forgets side blocks) is sent with the fields Livechain stores.
        let canonical = devnet
            .block(number(&head["number"]))
            .is_some_and(|b| b.header.hash.to_string() == hash);
        if canonical {
            assert!(
                head["stateRoot"].is_string() && head["logsBloom"].is_string(),
                "a whole header: {head}"
            );
        }
        assert!(hashes.insert(hash.clone()), "head announced twice: {hash}");
        last_at.insert(number(&head["number"]), hash);
    }
    for n in first..=end {
        let want = devnet.block(n).expect("canonical block").header.hash;
        assert_eq!(last_at.get(&n), Some(&want.to_string()), "height {n}");
    }
}

/// Logs: each canonical log from the first full block to `end` once and not removed; every log
/// of an orphaned block retracted once with `removed: true`.
pub(super) fn check_logs(logs: &[Value], devnet: &support::TestDevnet, end: u64) {
    check_logs_of(logs, devnet, end, &|_| true);
}

/// [`check_logs`] for a subscription that asked for the canonical logs `wanted` keeps.
pub(super) fn check_logs_of(
    logs: &[Value],
    devnet: &support::TestDevnet,
    end: u64,
    wanted: &dyn Fn(&Value) -> bool,
) {
    let key = |l: &Value| (l["blockHash"].to_string(), l["logIndex"].to_string());
    let mut live: HashMap<(String, String), usize> = HashMap::new();
    let mut removed: HashMap<(String, String), usize> = HashMap::new();
    for log in logs {
        let to = if log["removed"] == true {
            &mut removed
        } else {
            &mut live
        };
        *to.entry(key(log)).or_default() += 1;
    }
    let first = logs
        .first()
        .map(|l| number(&l["blockNumber"]))
        .expect("logs arrived");
    let mut canonical = HashSet::new();
    for n in first + 1..=end {
        for log in devnet.logs(n).expect("canonical logs") {
            let log = serde_json::to_value(&log).expect("a log as JSON");
            if !wanted(&log) {
                continue;
            }
            let k = key(&log);
            assert_eq!(
                live.get(&k),
                Some(&1),
                "canonical log {k:?} at {n} received once"
            );
            canonical.insert(k);
        }
    }
    let orphaned: HashSet<_> = logs
        .iter()
        .filter(|l| (first + 1..=end).contains(&number(&l["blockNumber"])))
        .filter(|l| !canonical.contains(&key(l)))
        .map(key)
        .collect();
    assert!(
        !orphaned.is_empty() || devnet.reorgs() == 0,
        "the reorg orphaned logs the caller had"
    );
    for k in orphaned {
        if let Some(n) = live.get(&k) {
            assert_eq!(*n, 1, "{k:?} sent once");
        }
        assert_eq!(
            removed.get(&k),
            Some(&1),
            "orphaned log {k:?} retracted once"
        );
    }
}

/// A caller that subscribes and never reads is cut off (counted), while a caller beside it that
/// reads keeps receiving.
#[tokio::test]
async fn a_caller_that_never_reads_is_cut_off_and_others_carry_on() {
    let devnet = support::devnet(1, 5, 20, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A chain name of its own: metrics are one registry for every test of this process.
    let yaml = support::service_yaml(&devnet, &dir.path().join("cut.db"))
        .replace("  devnet:\n", "  cut:\n");
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/cut").replacen("http://", "ws://", 1);
    let _idle = idle_subscriber(&url).await;
    let mut reader = Client::connect(&url).await;
    let logs = reader.call(1, "eth_subscribe", json!(["logs", {}])).await["result"].clone();
    let cut = support::wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let text = support::metrics_text(&app).await;
            text.lines()
                .any(|l| {
                    l.starts_with("livechain_gateway_ws_cut_off_total{")
                        && l.contains("chain=\"cut\"")
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
    )
    .await;
    assert!(cut.is_some(), "the caller that never reads was not cut off");
    let before = reader.of(&logs).len();
    let grew = support::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let now = reader.of(&logs).len();
        async move { (now > before).then_some(()) }
    })
    .await;
    assert!(
        grew.is_some(),
        "the reading caller carries on after the cut-off ({before} logs)"
    );
    app.stop().await;
}

/// Sessions subscribed to `newHeads` share one header fetch per block.
#[tokio::test]
async fn new_heads_fetch_each_header_once_for_all_sessions() {
    let devnet = support::devnet(1, 100, 1, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A chain name of its own: metrics are one registry for every test of this process.
    let yaml = support::service_yaml(&devnet, &dir.path().join("h.db"))
        .replace("  devnet:\n", "  heads:\n");
    let app = start_app(parse_config(&yaml)).await;
    let url = app.url("/rpc/heads").replacen("http://", "ws://", 1);
    let mut clients = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&url).await;
        subscriptions
            .push(client.call(1, "eth_subscribe", json!(["newHeads"])).await["result"].clone());
        clients.push(client);
    }
    let start = devnet.head();
    assert!(
        devnet
            .wait_for_head(start + 10, Duration::from_secs(20))
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heads: Vec<usize> = clients
        .iter()
        .zip(&subscriptions)
        .map(|(c, s)| c.of(s).len())
        .collect();
    assert!(
        heads.iter().all(|&n| n >= 8),
        "every session got the heads: {heads:?}"
    );
    let fetches = support::metrics_text(&app)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("livechain_rpc_requests_total{")
                && l.contains("chain=\"heads\"")
                && l.contains("method=\"eth_getBlockByHash\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    let most = heads.iter().max().copied().unwrap_or_default() as f64;
    assert!(
        fetches <= most + 2.0,
        "{fetches} header fetches for {most} heads and 3 sessions"
    );
    app.stop().await;
}
