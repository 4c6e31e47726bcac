//! The live-tail setup the `stream` and `retention` benches share: a devnet in this process on
//! a thread of its own, the service's configuration for it, and 101 WebSocket subscribers that
//! measure emission-to-receipt latency (the method is described in `benches/stream.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use livechain::devnet::{Devnet, DevnetConfig};

use super::{metric, metrics_text};

pub const BLOCK_TIME_MS: u64 = 10;
/// 99 logs and the block itself: 100 events per 10 ms block, 10,000 events/s.
pub const LOGS_PER_BLOCK: usize = 99;
pub const PROVIDERS: usize = 3;
/// Subscribers filtering on one contract each; one more takes everything.
pub const FILTERED: usize = 100;
pub const CHAIN: &str = "bench";
pub const CHAIN_ID: u64 = 31337;
/// Every step that waits on the service (startup, a connection) gives up after this long.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A timed devnet on a runtime thread of its own: its producer must tick on time whatever the
/// subscribers are doing, or the emission instants would drift late and flatter the figures.
/// Stopped when dropped. Start it outside any runtime.
pub struct DevnetThread {
    devnet: Devnet,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl DevnetThread {
    /// The live-tail devnet: [`PROVIDERS`] ports, a block every [`BLOCK_TIME_MS`].
    pub fn start() -> anyhow::Result<DevnetThread> {
        DevnetThread::start_with(DevnetConfig {
            listen: "127.0.0.1:0".parse()?,
            providers: PROVIDERS,
            block_time_ms: BLOCK_TIME_MS,
            logs_per_block: LOGS_PER_BLOCK,
            chain_id: CHAIN_ID,
            ..DevnetConfig::default()
        })
    }

    pub fn start_with(config: DevnetConfig) -> anyhow::Result<DevnetThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the devnet's runtime")?;
        let stop = CancellationToken::new();
        let devnet = runtime.block_on(Devnet::start(config, stop.clone()))?;
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("devnet".into())
                .spawn(move || runtime.block_on(stop.cancelled()))?
        };
        Ok(DevnetThread {
            devnet,
            stop,
            thread: Some(thread),
        })
    }

    pub fn devnet(&self) -> &Devnet {
        &self.devnet
    }
}

impl Drop for DevnetThread {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The service's configuration: the devnet's ports as providers of chain [`CHAIN`], blocks and
/// every log subscribed; `root_extra` (whole YAML lines) is added at the root.
pub fn service_yaml(db: &Path, devnet: &Devnet, root_extra: &str) -> String {
    let mut providers = String::new();
    for (i, e) in devnet.endpoints().iter().enumerate() {
        providers.push_str(&format!(
            "      - {{ id: p{i}, url: \"{}\", ws_url: \"{}\", priority: {i} }}\n",
            e.http_url, e.ws_url
        ));
    }
    format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         {root_extra}\
         chains:\n  {CHAIN}:\n    chain_id: {CHAIN_ID}\n    providers:\n{providers}\
         \x20   subscriptions: [ {{ blocks: true }}, {{ logs: {{}} }} ]\n",
        db.display()
    )
}

/// The 101 subscribers: 100 on `/v1/stream?address=…` (round robin over the devnet's
/// contracts), one on `/v1/stream?chain=bench`. They count only while recording.
pub struct Subscribers {
    recording: Arc<AtomicBool>,
    stop: CancellationToken,
    clients: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Subscribers {
    /// Connects them all to the service at `api` (`http://…`).
    pub async fn connect(api: &str, devnet: &Devnet) -> anyhow::Result<Subscribers> {
        let ws_base = api.replacen("http://", "ws://", 1);
        let contracts = devnet.contracts();
        let recording = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let mut clients = Vec::with_capacity(FILTERED + 1);
        for i in 0..=FILTERED {
            let url = match contracts.get(i % contracts.len().max(1)) {
                Some(address) if i < FILTERED => format!("{ws_base}/v1/stream?address={address}"),
                _ => format!("{ws_base}/v1/stream?chain={CHAIN}"),
            };
            let (ws, _) =
                tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(&url))
                    .await
                    .context("connecting a subscriber in time")?
                    .with_context(|| format!("connecting {url}"))?;
            clients.push(tokio::spawn(subscriber(
                ws,
                devnet.clone(),
                recording.clone(),
                stop.clone(),
                i == FILTERED,
            )));
        }
        Ok(Subscribers {
            recording,
            stop,
            clients,
        })
    }

    /// Starts or stops counting what arrives.
    pub fn record(&self, on: bool) {
        self.recording.store(on, Ordering::Release);
    }

    /// Stops the subscribers and adds up what they saw.
    pub async fn finish(self) -> anyhow::Result<Tally> {
        self.stop.cancel();
        let mut tally = Tally::default();
        // Per event: the first and last receipt among the subscribers that took it.
        let mut spread: HashMap<i64, (Instant, Instant)> = HashMap::new();
        for (i, client) in self.clients.into_iter().enumerate() {
            let seen = client.await.context("a subscriber task failed")?;
            if i == FILTERED {
                tally.unfiltered = seen.latencies_ms.len() as u64;
                tally.inside_ms = seen.inside_ms;
            }
            for (cursor, at) in &seen.arrivals {
                let entry = spread.entry(*cursor).or_insert((*at, *at));
                entry.0 = entry.0.min(*at);
                entry.1 = entry.1.max(*at);
            }
            tally.unknown += seen.unknown;
            tally.disorder += seen.disorder;
            tally.ended += usize::from(seen.ended_early);
            tally.latencies_ms.extend(seen.latencies_ms);
        }
        tally.spread_ms = spread
            .values()
            .map(|(first, last)| last.duration_since(*first).as_secs_f64() * 1000.0)
            .collect();
        tally.latencies_ms.sort_by(f64::total_cmp);
        tally.inside_ms.sort_by(f64::total_cmp);
        tally.spread_ms.sort_by(f64::total_cmp);
        Ok(tally)
    }
}

/// What all subscribers saw while recording; the three lists sorted.
#[derive(Default)]
pub struct Tally {
    /// Emission to receipt, every event message of every subscriber (ms).
    pub latencies_ms: Vec<f64>,
    /// Events the unfiltered subscriber received.
    pub unfiltered: u64,
    /// Receipt minus the service's `received_at` (whole ms), unfiltered subscriber only.
    pub inside_ms: Vec<f64>,
    /// Last minus first receipt of one event across the subscribers taking it (ms).
    pub spread_ms: Vec<f64>,
    pub unknown: u64,
    pub disorder: u64,
    /// Subscribers the server closed before the bench did.
    pub ended: usize,
}

/// The `q` quantile of `sorted` (nearest rank), NaN when it is empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// What one subscriber saw during the window.
#[derive(Default)]
struct Seen {
    latencies_ms: Vec<f64>,
    /// Event messages whose block's emission instant was not (or no longer) recorded.
    unknown: u64,
    /// Messages whose cursor did not exceed the previous one.
    disorder: u64,
    /// The server closed the stream before the bench did.
    ended_early: bool,
    /// Receipt here minus the service's `received_at` (ms, wall clock, whole milliseconds):
    /// the part of the latency spent inside the service. Unfiltered subscriber only.
    inside_ms: Vec<f64>,
    /// When each event arrived, to measure how far apart subscribers receive the same event.
    arrivals: Vec<(i64, Instant)>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    cursor: Option<i64>,
    event: Option<WireEvent>,
}

#[derive(Deserialize)]
struct WireEvent {
    block_number: u64,
    /// When the service's aggregator took the event in (wall clock, ms precision).
    received_at: String,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscriber(
    mut ws: Ws,
    devnet: Devnet,
    recording: Arc<AtomicBool>,
    stop: CancellationToken,
    split: bool,
) -> Seen {
    let mut seen = Seen::default();
    let mut last_cursor = 0i64;
    // The block of the previous message and its emission instant: consecutive events share
    // their block, so the devnet's record is read once per block.
    let mut block: Option<(u64, Option<Instant>)> = None;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return seen,
            frame = ws.next() => frame,
        };
        let received = Instant::now();
        let received_wall = SystemTime::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                seen.ended_early = !stop.is_cancelled();
                return seen;
            }
        };
        let Ok(wire) = serde_json::from_str::<Wire>(text.as_str()) else {
            continue;
        };
        if wire.kind != "event" {
            continue;
        }
        let (Some(cursor), Some(event)) = (wire.cursor, wire.event) else {
            continue;
        };
        if cursor <= last_cursor {
            seen.disorder += 1;
        }
        last_cursor = cursor;
        if !recording.load(Ordering::Acquire) {
            continue;
        }
        if split && let Ok(at) = humantime::parse_rfc3339(&event.received_at) {
            let inside = received_wall.duration_since(at).unwrap_or_default();
            seen.inside_ms.push(inside.as_secs_f64() * 1000.0);
        }
        let emitted = match block {
            Some((n, at)) if n == event.block_number => at,
            _ => {
                let at = devnet.emitted_at(event.block_number);
                block = Some((event.block_number, at));
                at
            }
        };
        seen.arrivals.push((cursor, received));
        match emitted {
            Some(at) => seen
                .latencies_ms
                .push(received.saturating_duration_since(at).as_secs_f64() * 1000.0),
            None => seen.unknown += 1,
        }
    }
}

/// The writer's commits so far and the seconds they took (`/metrics`).
pub async fn writer_batches(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let text = metrics_text(http, url).await?;
    Ok((
        metric(&text, "livechain_writer_batch_duration_seconds_count"),
        metric(&text, "livechain_writer_batch_duration_seconds_sum"),
    ))
}
