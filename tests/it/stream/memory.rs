//! What idle `/v1/stream` clients cost the real binary: clients that replay from `since=0` and
//! never read hold a bounded amount each while they are connected, and the service's resident
//! memory returns near where it was once they are gone. Also: sessions past
//! `server.max_stream_sessions` are refused.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, connect};
use crate::support::{self, get_json, parse_config, service_yaml, start_app, wait_for};

/// Idle clients per round.
const CLIENTS: usize = 100;
/// Blocks of history (20 logs each): a replay far larger than the sockets' buffers.
const HISTORY: u64 = 600;
/// What one idle client may add to the service's resident memory while it is connected. A
/// session holds its socket's write buffer (16 KiB and one frame) and a few small buffers;
/// before the bound it held a replay page too, ~0.6 MiB in all.
const PER_CLIENT_KIB: u64 = 200;
/// How far above its start the service may stay once the readers and clients are gone: what
/// the read connections' page caches and the runtime keep (~1.4 MiB when this was written;
/// before the fix, tens of MiB; without the heap trimmed, 14 MiB).
const AFTER_MARGIN_KIB: u64 = 8 * 1024;

/// The service's binary, killed on drop.
struct Service {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Service {
    fn start(yaml: &str, dir: &std::path::Path) -> Service {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        let yaml = yaml.replace(
            "listen: \"127.0.0.1:0\"",
            &format!("listen: \"127.0.0.1:{port}\""),
        );
        let config = dir.join("service.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.join("service.log");
        let child = Command::new(support::livechain_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn livechain");
        Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Resident memory (VmRSS), KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_else(|e| panic!("the service is gone: {e}\n{}", self.log()));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Open stream sessions, as `/metrics` counts them.
    async fn sessions(&self) -> Option<u64> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("livechain_stream_connections "))?;
        line.rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    }

    async fn wait_sessions(&self, want: u64) {
        let reached = wait_for(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async move { (self.sessions().await == Some(want)).then_some(()) },
        )
        .await;
        assert!(
            reached.is_some(),
            "never {want} open sessions\n{}",
            self.log()
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that replays from `since=0` and never reads: a small receive buffer, so the
/// service's writes block early.
async fn idle_client(base: &str) -> Ws {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("{}/v1/stream?since=0", base.replacen("http://", "ws://", 1));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake");
    ws
}

/// Reads a replay from `since=0` to `through` (the page caches of the store fill as in a round
/// of idle clients, before the baseline is taken).
async fn read_history(base: &str, through: i64) {
    let url = format!("{}/v1/stream?since=0", base.replacen("http://", "ws://", 1));
    let mut ws = connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..10_000_000 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("history read in time");
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let msg: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if msg["cursor"].as_i64().is_some_and(|c| c >= through) {
                    return;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the replay ended early: {other:?}"),
        }
    }
}

/// Peak resident memory over `window`, sampled every 100 ms.
async fn peak_kib(service: &Service, window: Duration) -> u64 {
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < window {
        peak = peak.max(service.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_a_bounded_amount_and_their_memory_is_given_back() {
    let net = support::devnet(2, 1000, 20, HISTORY).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = service_yaml(&net, &dir.path().join("s.db"));
    let service = Service::start(&yaml, dir.path());
    let health = format!("{}/health", service.base);
    let up = wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
        let health = health.clone();
        async move { reqwest::get(&health).await.ok().map(|_| ()) }
    })
    .await;
    assert!(up.is_some(), "the service did not start\n{}", service.log());
    let stored = wait_for(
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let (_, body) =
                get_json(&format!("{}/v1/events?order=desc&limit=1", service.base)).await;
            body["events"][0]["cursor"]
                .as_i64()
                .filter(|_| body["events"][0]["block_number"].as_u64() >= Some(HISTORY))
        },
    )
    .await
    .unwrap_or_else(|| panic!("the history was not ingested\n{}", service.log()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = service.rss_kib();
    // Two readers replay everything at once: the store's read connections cache its pages.
    tokio::join!(
        read_history(&service.base, stored),
        read_history(&service.base, stored)
    );
    service.wait_sessions(0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = service.rss_kib();

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(idle_client(&service.base).await);
    }
    service.wait_sessions(CLIENTS as u64).await;
    let peak = peak_kib(&service, Duration::from_secs(4)).await;
    drop(clients);
    service.wait_sessions(0).await;
    // The service trims its heap 2 s after sessions end.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Against the start: what the readers freed must have been given back too.
    let bound = start + AFTER_MARGIN_KIB;
    let after = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(250),
        || async { Some(service.rss_kib()).filter(|rss| *rss <= bound) },
    )
    .await;
    let last = service.rss_kib();
    eprintln!(
        "{CLIENTS} idle clients: RSS {start} KiB at the start, {baseline} KiB after two readers, \
         {peak} KiB while connected, {last} KiB after"
    );
    assert!(
        peak <= baseline + CLIENTS as u64 * PER_CLIENT_KIB,
        "{CLIENTS} idle clients took RSS from {baseline} to {peak} KiB: more than \
         {PER_CLIENT_KIB} KiB each"
    );
    assert!(
        after.is_some(),
        "RSS stayed at {last} KiB after the clients left, above {start} KiB + {AFTER_MARGIN_KIB}"
    );
}

/// One session past `server.max_stream_sessions` is answered 503 with the JSON error shape;
/// once a session ends, its slot is free again.
#[tokio::test]
async fn sessions_past_the_cap_are_refused_until_one_ends() {
    let net = support::devnet(1, 50, 2, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = service_yaml(&net, &dir.path().join("s.db")).replace(
        "server: { listen: \"127.0.0.1:0\" }",
        "server: { listen: \"127.0.0.1:0\", max_stream_sessions: 2 }",
    );
    let app = start_app(parse_config(&yaml)).await;
    let url = format!(
        "{}/v1/stream?since=0",
        app.base.replacen("http://", "ws://", 1)
    );
    let first = connect(&url).await;
    let _second = connect(&url).await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("a JSON body");
            assert_eq!(body["error"]["code"], "not_ready");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("max_stream_sessions"), "{body}");
        }
        other => panic!("a third session was not refused: {:?}", other.map(|_| ())),
    }
    drop(first);
    let third = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let url = url.clone();
        async move { tokio_tungstenite::connect_async(&url).await.ok() }
    })
    .await;
    assert!(third.is_some(), "a slot given back is free again");
    app.stop().await;
}

/// A client reading a long replay slowly through a small receive buffer: the session keeps
/// finding its socket full mid-page, drops the rest of the page and reads on after the last
/// item written. Every event arrives once, in cursor order, as `/v1/events` holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_whole_replay_once_in_order() {
    let net = support::devnet(2, 1000, 20, 400).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    // The whole history committed (the checkpoint past it), not merely a live event past it:
    // live blocks can commit before the backfill below them.
    let history = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            support::checkpoint(&app.base, "devnet")
                .await
                .filter(|cp| *cp >= 400)
        },
    )
    .await;
    assert!(history.is_some(), "the history is stored");
    let (_, body) = get_json(&app.url("/v1/events?order=desc&limit=1")).await;
    let through = body["events"][0]["cursor"]
        .as_i64()
        .expect("the newest event's cursor");
    let mut ws = idle_client(&app.base).await;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..1_000_000u32 {
        if received.last().is_some_and(|c| *c >= through) {
            break;
        }
        // A pause every 500 messages: the socket fills (once its ~2 MB of kernel buffers are),
        // and the session meets it full mid-page (6 times in 8,400 events when this was written).
        if n % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the replay arrives in time");
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let msg: Value = serde_json::from_str(text.as_str()).expect("JSON");
                match msg["type"].as_str() {
                    Some("event") => received.push(msg["cursor"].as_i64().expect("cursor")),
                    Some("finality" | "heartbeat") => {}
                    _ => panic!("unexpected message: {msg}"),
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the replay ended early: {other:?}"),
        }
    }
    let stored: Vec<i64> = support::all_events(&app.base, "include_removed=true")
        .await
        .iter()
        .filter_map(|e| e["cursor"].as_i64())
        .filter(|c| *c <= through)
        .collect();
    assert!(stored.len() > 8000, "{} events", stored.len());
    assert_eq!(received, stored, "every event once, in cursor order");
    app.stop().await;
}
