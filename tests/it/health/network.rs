//! Network faults below JSON-RPC, through the TCP fault proxy (`support::proxy`): a slow,
//! narrow provider; a half-open WebSocket (open, nothing passes); a provider that accepts TCP
//! and never answers. Each ends with the exactly-once verdict against the devnet.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use crate::support::proxy::{FaultProxy, silent_listener};

use super::*;

/// The service indexing `devnet` with providers named `{prefix}-p0`, ..., `extra` YAML on top,
/// and each provider URL `from` of `swaps` replaced by its `to` (a proxy, a silent listener).
async fn start_swapped(
    devnet: &TestDevnet,
    db: &Path,
    prefix: &str,
    extra: &str,
    swaps: &[(String, String)],
) -> TestApp {
    let mut yaml =
        support::service_yaml(devnet, db).replace("- id: p", &format!("- id: {prefix}-p"));
    for (from, to) in swaps {
        let quoted = format!("\"{from}\"");
        assert!(yaml.contains(&quoted), "{from} is not in the config");
        yaml = yaml.replace(&quoted, &format!("\"{to}\""));
    }
    support::start_app(support::parse_config(&format!("{extra}{yaml}"))).await
}

/// Provider `i`'s HTTP and WebSocket URLs, each swapped for the proxy's.
fn via(devnet: &Devnet, i: usize, proxy: &FaultProxy) -> [(String, String); 2] {
    let e = &devnet.endpoints()[i];
    [
        (e.http_url.clone(), proxy.http_url()),
        (e.ws_url.clone(), proxy.ws_url()),
    ]
}

/// One class of a provider's `errors_by_class`.
fn errors(entry: &Value, class: &str) -> u64 {
    entry["errors_by_class"][class].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_narrow_provider_does_not_stall_ingestion() {
    let devnet = support::devnet(2, 100, 3, 30).await;
    let proxy = FaultProxy::start(devnet.endpoints()[0].addr).await;
    // Every chunk 50 ms late, answers and notifications at most 64 KiB/s: both its HTTP and its
    // WebSocket go through it.
    proxy.set(|f| {
        f.latency = Duration::from_millis(50);
        f.bytes_per_sec = 64 * 1024;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let extra = "health: { max_lag_blocks: 10, stall_timeout: 2000 }\n";
    let app = start_swapped(&devnet, &db, "netslow", extra, &via(&devnet, 0, &proxy)).await;

    // The slow provider is in use: its stream subscribed through the proxy.
    support::wait_for(WAIT, POLL, || async {
        (devnet.active_subscriptions(0) == 2).then_some(())
    })
    .await
    .expect("the slow provider subscribed through the proxy");
    wait_checkpoint(&app, 10).await;
    // Every connection through the proxy cut at once, a RST each (perhaps mid-answer): the
    // stream comes back through it, as slow as before.
    let reconnects = metric(&app, "livechain_ws_reconnects_total", "netslow-p0").await;
    proxy.cut();
    support::wait_for(WAIT, POLL, || async {
        let now = metric(&app, "livechain_ws_reconnects_total", "netslow-p0").await;
        (now > reconnects).then_some(())
    })
    .await
    .expect("the cut stream reconnected");
    let checkpoint = wait_checkpoint(&app, devnet.head() + 30).await;
    let slow = provider(&app, "netslow-p0").await;
    assert!(proxy.bytes_to_client() > 0, "nothing passed the proxy");
    let checked = verify_exactly_once(&app, &devnet, checkpoint).await;
    eprintln!(
        "slow provider: {} bytes through the proxy, checkpoint {checkpoint}, {checked} events \
         exactly once; slow provider: head {}, healthy {}, errors {}",
        proxy.bytes_to_client(),
        slow["head"],
        slow["healthy"],
        slow["errors_by_class"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_stream_is_noticed_and_recovers_once_it_passes_again() {
    let devnet = support::devnet(2, 100, 2, 0).await;
    let proxy = FaultProxy::start(devnet.endpoints()[0].addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let extra = "breaker: { failure_threshold: 3, recovery_timeout: 1000, success_threshold: 1 }\n\
                 health: { max_lag_blocks: 10, stall_timeout: 1000 }\n";
    // Only the WebSocket goes through the proxy; the HTTP is direct.
    let ws = [via(&devnet, 0, &proxy)[1].clone()];
    let app = start_swapped(&devnet, &db, "nethalf", extra, &ws).await;
    let id = "nethalf-p0";
    wait_provider(&app, id, "streaming", |p| {
        p["connected"] == true && p["healthy"] == true
    })
    .await;
    wait_checkpoint(&app, 10).await;
    let reconnects = metric(&app, "livechain_ws_reconnects_total", id).await;

    // Half-open: the sockets stay up, nothing passes either way (not even a close).
    proxy.set(|f| f.blackhole = true);
    // Noticed and recycled: the proxy keeps the old socket open, so only the service can have
    // dropped it; the reconnection through the blackhole then times out instead of hanging.
    // (`healthy` turns false only between the stall and the recycle: its HTTP still answers.)
    let noticed = wait_provider(
        &app,
        id,
        "the stream recycled, its reconnection timed out",
        |p| p["connected"] == false && errors(p, "timeout") > 0,
    )
    .await;
    // The other provider carries on meanwhile.
    wait_checkpoint(&app, devnet.head() + 10).await;

    proxy.clear();
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_ws_reconnects_total", id).await > reconnects).then_some(())
    })
    .await
    .expect("the provider's stream reconnected once the blackhole was lifted");
    wait_provider(&app, id, "streaming again", |p| {
        p["connected"] == true && p["healthy"] == true
    })
    .await;
    // The connections held during the blackhole closed once it lifted: no subscription leaked.
    support::wait_for(WAIT, POLL, || async {
        (devnet.active_subscriptions(0) == 2).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        let left = devnet.active_subscriptions(0);
        panic!("{left} subscriptions at provider 0, expected 2")
    });
    let checkpoint = wait_checkpoint(&app, devnet.head()).await;
    let checked = verify_exactly_once(&app, &devnet, checkpoint).await;
    eprintln!(
        "half-open: errors once noticed {}; {checked} events exactly once",
        noticed["errors_by_class"]
    );
    app.stop().await;
}

/// The service's HTTP timeout towards providers (`ingest::HTTP_TIMEOUT`).
const PROVIDER_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// A bound below [`PROVIDER_HTTP_TIMEOUT`]: a wait within it did not wait on the silent
/// provider's answer.
const BELOW_IT: Duration = PROVIDER_HTTP_TIMEOUT.saturating_sub(Duration::from_secs(2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_holds_up_neither_start_nor_backfill_nor_the_gateway() {
    let devnet = support::devnet(2, 100, 2, 10).await;
    let silent = silent_listener().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    // Provider 0 (first in priority) is the silent listener for both its URLs. A gateway
    // timeout far beyond the waits below: an answer within them did not wait on it.
    let extra = "health: { max_lag_blocks: 10, stall_timeout: 1000 }\n\
                 gateway: { timeout: \"60s\", provider_header: true }\n";
    let e = &devnet.endpoints()[0];
    let swaps = [
        (e.http_url.clone(), format!("http://{}", silent.addr())),
        (e.ws_url.clone(), format!("ws://{}", silent.addr())),
    ];
    let start = start_swapped(&devnet, &db, "netsilent", extra, &swaps);
    let app = tokio::time::timeout(BELOW_IT, start)
        .await
        .expect("the start waited on the silent provider");

    // The gateway at once, before the silent provider has failed anything: from the other.
    let request = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0x1", false]
    });
    let call = reqwest::Client::new()
        .post(app.url(&format!("/rpc/{CHAIN}")))
        .json(&request)
        .send();
    let response = tokio::time::timeout(BELOW_IT, call)
        .await
        .expect("the gateway waited on the silent provider")
        .expect("POST /rpc");
    let answered_by = response.headers()["x-livechain-provider"].clone();
    let body: Value = response.json().await.expect("a JSON body");
    let want = devnet.block(1).expect("block 1").header.hash.to_string();
    assert_eq!(body["result"]["hash"], want.as_str(), "{body}");
    assert_eq!(answered_by, "netsilent-p1");

    // Backfill from the other provider's heads, not after the silent one's head poll timed
    // out (it held the range sync for the whole HTTP timeout once).
    support::wait_for(BELOW_IT, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= 10)
    })
    .await
    .unwrap_or_else(|| panic!("no backfill within {BELOW_IT:?}: waiting on the silent provider?"));
    let id = "netsilent-p0";
    // Its error tally and its health are two records: waited for together.
    let silent_entry = wait_provider(&app, id, "timeouts counted, unhealthy", |p| {
        errors(p, "timeout") > 0 && p["healthy"] == false
    })
    .await;
    assert_eq!(
        silent_entry["unhealthy_reason"], "unreachable",
        "{silent_entry}"
    );
    assert!(silent.accepted() > 0, "the service never connected to it");
    let checkpoint = wait_checkpoint(&app, devnet.head()).await;
    let checked = verify_exactly_once(&app, &devnet, checkpoint).await;
    eprintln!(
        "silent provider: {} connections held, its errors {}; {checked} events exactly once",
        silent.accepted(),
        silent_entry["errors_by_class"]
    );
    app.stop().await;
}

/// `(kind, id, last_error)` of every supervised process the database records.
async fn process_errors(db: &Path) -> Vec<(String, String, Option<String>)> {
    let options = SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open the database read-only");
    let rows = sqlx::query("SELECT kind, id, last_error FROM processes")
        .fetch_all(&mut conn)
        .await
        .expect("read processes");
    let _ = conn.close().await;
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_stops_cleanly_while_its_only_provider_never_answers() {
    let silent = silent_listener().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let addr = silent.addr();
    let yaml = format!(
        "health: {{ max_lag_blocks: 10, stall_timeout: 1000 }}\n\
         server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: {}\n    providers:\n      \
         - id: netmute-p0\n        url: \"http://{addr}\"\n        ws_url: \"ws://{addr}\"\n    \
         subscriptions:\n      - blocks: true\n      - logs: {{ from_block: 0 }}\n",
        db.display(),
        livechain::devnet::DevnetConfig::default().chain_id,
    );
    let started = std::time::Instant::now();
    let app = support::start_app(support::parse_config(&yaml)).await;
    // A stream connection timed out (a second has passed): the range sync's head poll, sent
    // at start, is still waiting out the HTTP timeout when the service is asked to stop.
    wait_provider(&app, "netmute-p0", "a timeout counted", |p| {
        errors(p, "timeout") > 0
    })
    .await;
    assert!(silent.accepted() >= 2, "stream and head poll connected");
    assert!(
        started.elapsed() < BELOW_IT,
        "the head poll may have timed out already; the test proves nothing"
    );
    app.stop().await;
    // Every task returned when cancelled; none had to be aborted after its grace period.
    let processes = process_errors(&db).await;
    assert!(!processes.is_empty(), "no process recorded");
    for (kind, id, error) in &processes {
        assert_eq!(error, &None, "{kind} {id} did not stop cleanly");
    }
}
