//! `cargo bench --bench ingest`: end-to-end ingest throughput, measured against SQLite itself.
//!
//! Three processes' worth of work, kept apart so that each figure is the service's own:
//! - a devnet in its own process (`livechain devnet`, throughput mode: blocks as fast as they
//!   are read, three provider ports serving one chain, so every event arrives three times);
//! - the service under test, the real release binary in its own process (`livechain run`), with
//!   the three devnet ports configured as ordinary providers and its own SQLite file;
//! - this process, which reads the service's `/metrics` and `/proc/<pid>/status`, then replays
//!   the same rows into a fresh database through the store's write path alone.
//!
//! Printed (stdout, one line):
//! `ingest: in=<msg/s> stored=<ev/s> raw_sqlite=<rows/s> ratio=<stored/raw> rss_mb=<peak>
//! wal_peak_mb=<peak>`
//! - `in`: provider notifications the service received per second (sum of
//!   `livechain_events_received_total` over providers), over the measured window;
//! - `stored`: unique events committed per second (`livechain_events_stored_total`), same window;
//! - `raw_sqlite`: rows per second of a tight loop of `Store::write_batch` calls, each a full
//!   writer-sized batch (`ingest::writer::MAX_BATCH` events) of the devnet's own rows — same
//!   schema, same pragmas (`Store::open`), same SQL, one transaction per batch, nothing in front.
//!   The table is first filled, untimed, with as many rows as the service held when its window
//!   opened, then the timed loop inserts as many as the service stored during the window: the
//!   same rows into the same B-trees at the same sizes. It is the upper bound of our pipeline:
//!   the service can only be slower, since it commits through this very function;
//! - `ratio`: `stored / raw_sqlite`;
//! - `rss_mb`: the service process's peak resident memory (`VmHWM`), in MiB;
//! - `wal_peak_mb`: the largest size of the service's WAL file, sampled every 20 ms over the
//!   warm-up and the window.
//!
//! Diagnostics (CPU per process, checkpoint lag, provider traffic) go to stderr. The whole run
//! is bounded in time (about 30 s), uses 127.0.0.1 only, and kills its child processes on every
//! exit path (`kill_on_drop`, plus SIGINT/SIGTERM handling). Run by `cargo test --all-targets`
//! (without `--bench`) it only smoke-tests itself: a 2 s window, its line labelled as such.

mod common;

use common::{
    Proc, cpu_seconds, group_cpu_seconds, metric, metrics_text, peak_rss_kib, run_bounded,
    service_binary, start_service,
};

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::process::Command;

use livechain::devnet::{Devnet, DevnetConfig};
use livechain::domain::{BlockRef, Event, LogFields};
use livechain::ingest::writer::MAX_BATCH;
use livechain::store::{NewEvent, Store, WriteBatch};

const LOGS_PER_BLOCK: usize = 20;
const PROVIDERS: usize = 3;
const CHAIN: &str = "bench";
const CHAIN_ID: u64 = 31337;
const SEED: u64 = 1;
/// Ingest runs this long before the window opens (connections, first batches, caches).
const WARM_UP: Duration = Duration::from_secs(3);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(15);
/// Under `cargo test --all-targets` (no `--bench` argument) the same steps run briefly, to keep
/// the bench working, and the line says it is no measurement.
const SMOKE_WARM_UP: Duration = Duration::from_secs(1);
const SMOKE_WINDOW: Duration = Duration::from_secs(2);
/// Every step that waits on a child (startup, a metrics read) gives up after this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole bench, startup to the last row replayed.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(58);

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test` runs this target without it.
    let measured = std::env::args().any(|arg| arg == "--bench");
    run_bounded(TOTAL_TIMEOUT, run(measured))
}

async fn run(measured: bool) -> anyhow::Result<()> {
    let (warm_up, window, label) = if measured {
        (WARM_UP, WINDOW, "ingest:")
    } else {
        (
            SMOKE_WARM_UP,
            SMOKE_WINDOW,
            "ingest (smoke run, not a measurement):",
        )
    };
    // `LIVECHAIN_BENCH_BIN` runs another build of the devnet and service (to compare two).
    let binary = service_binary();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;

    let mut devnet = Proc::spawn(
        "devnet",
        Command::new(&binary).args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--providers",
            &PROVIDERS.to_string(),
            "--block-time-ms",
            "0",
            "--logs-per-block",
            &LOGS_PER_BLOCK.to_string(),
            "--seed",
            &SEED.to_string(),
            "--chain-id",
            &CHAIN_ID.to_string(),
        ]),
        dir.path(),
        STEP_TIMEOUT,
    )?;
    let mut endpoints = Vec::new();
    while endpoints.len() < PROVIDERS {
        let line = devnet.line().await?;
        // `provider <i>: http://<addr> ws://<addr>`
        let mut words = line.split_whitespace().skip(2);
        match (words.next(), words.next()) {
            (Some(http), Some(ws)) if http.starts_with("http://") && ws.starts_with("ws://") => {
                endpoints.push((http.to_owned(), ws.to_owned()))
            }
            _ => bail!("unexpected devnet output: {line}"),
        }
    }

    let yaml = service_yaml(&dir.path().join("bench.db"), &endpoints);
    let (service, api) = start_service(&binary, dir.path(), &yaml, STEP_TIMEOUT).await?;
    // The status page open and live in Chromium through the run, if asked (its cost budget).
    // `poll` and `tail` play one half of the page's traffic each, in this process.
    let mode = std::env::var("LIVECHAIN_BENCH_PAGE").ok();
    let page_http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .no_proxy()
        .build()?;
    let page = match mode.as_deref() {
        Some("poll") => {
            tokio::spawn(poll_like_the_page(api.clone()));
            None
        }
        Some("tail") => {
            tokio::spawn(tail_like_the_page(api.clone()));
            None
        }
        Some(_) => Some(open_page(&api, dir.path(), &page_http).await?),
        None => None,
    };
    let metrics_url = format!("{api}/metrics");
    let http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .no_proxy()
        .build()?;

    let wal = dir.path().join("bench.db-wal");
    let mut wal_peak = watch_wal(&wal, warm_up).await;
    let before = Sample::take(&http, &metrics_url, &service, &devnet, page.as_ref()).await?;
    wal_peak = wal_peak.max(watch_wal(&wal, window).await);
    let after = Sample::take(&http, &metrics_url, &service, &devnet, page.as_ref()).await?;
    let rss_mb = peak_rss_kib(service.pid()?)? as f64 / 1024.0;
    // Stop both before the replay, so that it has the machine to itself: the disk too. The
    // service leaves hundreds of MiB of dirty pages behind, which the kernel would otherwise
    // write back during the replay, at a moment that varies from run to run.
    drop(page);
    drop(service);
    drop(devnet);
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Err(err) = tokio::process::Command::new("sync").status().await {
        eprintln!("ingest diagnostics: sync failed ({err}); the replay may share the disk");
    }

    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let rate = |a: f64, b: f64| (b - a) / seconds;
    let received = rate(before.received, after.received);
    let stored = rate(before.stored, after.stored);
    let window_rows = (after.stored - before.stored) as usize;
    let raw = replay(dir.path(), before.stored as usize, window_rows).await?;
    let ratio = if raw > 0.0 { stored / raw } else { 0.0 };
    println!(
        "{label} in={received:.0} stored={stored:.0} raw_sqlite={raw:.0} ratio={ratio:.2} \
         rss_mb={rss_mb:.0} wal_peak_mb={:.0}{}",
        wal_peak as f64 / (1 << 20) as f64,
        match std::env::var("LIVECHAIN_BENCH_PAGE").as_deref() {
            Ok("poll") => " page=poll",
            Ok("tail") => " page=tail",
            Ok(_) => " page=open",
            Err(_) => "",
        }
    );
    eprintln!(
        "ingest diagnostics: window {seconds:.1}s: {window_rows} rows stored; cpu service={:.2} devnet={:.2} page={:.2} cores; stream catch-ups={}; \
         head={} checkpoint={} lag={}; http_requests={:.0}/s; batches={:.0}/s, writer in a commit {:.0}% of the time",
        (after.service_cpu - before.service_cpu) / seconds,
        (after.devnet_cpu - before.devnet_cpu) / seconds,
        (after.page_cpu - before.page_cpu) / seconds,
        after.catchups - before.catchups,
        after.head,
        after.checkpoint,
        after.head - after.checkpoint,
        rate(before.http_requests, after.http_requests),
        rate(before.batches, after.batches),
        100.0 * rate(before.batch_seconds, after.batch_seconds),
    );
    Ok(())
}

/// The largest size of the service's WAL file seen over `period`, sampled every 20 ms.
async fn watch_wal(wal: &Path, period: Duration) -> u64 {
    let deadline = Instant::now() + period;
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

fn service_yaml(db: &Path, endpoints: &[(String, String)]) -> String {
    let mut providers = String::new();
    for (i, (http, ws)) in endpoints.iter().enumerate() {
        providers.push_str(&format!(
            "      - {{ id: p{i}, url: \"{http}\", ws_url: \"{ws}\", priority: {i} }}\n"
        ));
    }
    format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  {CHAIN}:\n    chain_id: {CHAIN_ID}\n    providers:\n{providers}\
         \x20   subscriptions: [ {{ blocks: true }}, {{ logs: {{}} }} ]\n",
        db.display()
    )
}

/// The counters read at one instant.
struct Sample {
    at: Instant,
    received: f64,
    stored: f64,
    http_requests: f64,
    batches: f64,
    batch_seconds: f64,
    head: f64,
    checkpoint: f64,
    service_cpu: f64,
    devnet_cpu: f64,
    /// The browser's, when the page is open.
    page_cpu: f64,
    catchups: f64,
}

impl Sample {
    async fn take(
        http: &reqwest::Client,
        url: &str,
        service: &Proc,
        devnet: &Proc,
        page: Option<&PageGuard>,
    ) -> anyhow::Result<Sample> {
        let text = metrics_text(http, url).await?;
        Ok(Sample {
            at: Instant::now(),
            received: metric(&text, "livechain_events_received_total"),
            stored: metric(&text, "livechain_events_stored_total"),
            http_requests: metric(&text, "livechain_rpc_requests_total"),
            batches: metric(&text, "livechain_writer_batch_size_count"),
            batch_seconds: metric(&text, "livechain_writer_batch_duration_seconds_sum"),
            head: metric(&text, "livechain_chain_head"),
            checkpoint: metric(&text, "livechain_chain_checkpoint"),
            service_cpu: cpu_seconds(service.pid()?)?,
            devnet_cpu: cpu_seconds(devnet.pid()?)?,
            page_cpu: page.map_or(0.0, |p| group_cpu_seconds(p.0.id())),
            catchups: metric(&text, "livechain_stream_catchups_total"),
        })
    }
}

/// Inserts `prefill` rows untimed, then `rows` more timed; returns the timed rows per second.
async fn replay(dir: &Path, prefill: usize, rows: usize) -> anyhow::Result<f64> {
    let store = Store::open(&dir.join("raw.db")).await?;
    // The devnet's own chain, generated in this process (the same seed gives the same rows).
    let shutdown = tokio_util::sync::CancellationToken::new();
    let blocks = (prefill + rows).div_ceil(LOGS_PER_BLOCK + 1) as u64 + 1;
    let devnet = Devnet::start(
        DevnetConfig {
            listen: "127.0.0.1:0".parse()?,
            providers: 1,
            block_time_ms: 3_600_000,
            logs_per_block: LOGS_PER_BLOCK,
            seed: SEED,
            chain_id: CHAIN_ID,
            initial_blocks: blocks,
            ..DevnetConfig::default()
        },
        shutdown.clone(),
    )
    .await?;
    let mut rows_of_chain = (1..=blocks).flat_map(|n| block_rows(&devnet, n));
    let mut left = prefill;
    while left > 0 {
        let batch: Vec<NewEvent> = rows_of_chain.by_ref().take(left.min(MAX_BATCH)).collect();
        left -= batch.len();
        write(&store, batch).await?;
    }
    // Every timed batch is made first: the loop is back-to-back writes, as a writer that never
    // waits for input. (Timing each write alone and making the next batch between them left
    // the WAL checkpointer, which runs beside the writer, gaps to catch up in for free.)
    let mut batches = Vec::with_capacity(rows.div_ceil(MAX_BATCH));
    let mut left = rows;
    while left > 0 {
        let batch: Vec<NewEvent> = rows_of_chain.by_ref().take(left.min(MAX_BATCH)).collect();
        left -= batch.len();
        batches.push(batch);
    }
    let cpu_before = cpu_seconds(std::process::id())?;
    let started = Instant::now();
    for batch in batches {
        write(&store, batch).await?;
    }
    let timed = started.elapsed();
    let cpu = cpu_seconds(std::process::id())? - cpu_before;
    eprintln!(
        "ingest diagnostics: raw_sqlite {rows} rows after {prefill} in {:.2}s, {:.2} cores",
        timed.as_secs_f64(),
        cpu / timed.as_secs_f64().max(1e-9)
    );
    shutdown.cancel();
    devnet.stopped().await;
    store.close().await;
    Ok(rows as f64 / timed.as_secs_f64().max(1e-9))
}

async fn write(store: &Store, events: Vec<NewEvent>) -> anyhow::Result<()> {
    anyhow::ensure!(!events.is_empty(), "the replay ran out of rows");
    store
        .write_batch(WriteBatch {
            chain_events: events,
            ..WriteBatch::default()
        })
        .await?;
    Ok(())
}

/// Block `n` and its logs as the service would store them.
fn block_rows(devnet: &Devnet, n: u64) -> Vec<NewEvent> {
    let (Some(block), Some(logs)) = (devnet.block(n), devnet.logs(n)) else {
        return Vec::new();
    };
    let header = &block.header;
    let event = Event {
        chain: CHAIN.into(),
        block: BlockRef {
            number: header.number,
            hash: header.hash,
            parent_hash: header.parent_hash,
        },
        block_timestamp: header.timestamp,
        log: None,
    };
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let new = |event: Event| NewEvent {
        event,
        provider: "p0".to_owned(),
        received_at_ms,
        providers_mask: 1,
    };
    let mut rows = Vec::with_capacity(1 + logs.len());
    rows.push(new(event.clone()));
    for log in logs {
        let fields = LogFields {
            tx_hash: log.transaction_hash.unwrap_or_default(),
            tx_index: log.transaction_index.unwrap_or_default(),
            log_index: log.log_index.unwrap_or_default(),
            address: log.inner.address,
            topics: log.inner.data.topics().to_vec(),
            data: log.inner.data.data.clone(),
        };
        rows.push(new(Event {
            log: Some(fields),
            ..event.clone()
        }));
    }
    rows
}

/// The status page at `api` open in a plain headless Chromium (`LIVECHAIN_CHROMIUM` or
/// /usr/bin/chromium), niced, with nothing attached to it (an automation protocol would report
/// every WebSocket frame to its client and cost more than the page); open once the service
/// counts the page's stream. The browser's process group is killed when the guard is dropped.
async fn open_page(api: &str, dir: &Path, http: &reqwest::Client) -> anyhow::Result<PageGuard> {
    use std::os::unix::process::CommandExt;
    let chromium =
        std::env::var("LIVECHAIN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    // Niced: the browser stands for one on the operator's machine, not a second service on
    // this one; what is measured is what serving the page costs the service.
    let child = std::process::Command::new("nice")
        .args([
            "-n",
            "19",
            &chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Nothing of its own on the network (update checks, sync): the page's requests alone.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg("--window-size=1400,1100")
        .arg(format!("{api}/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {chromium}"))?;
    let guard = PageGuard(child);
    let deadline = Instant::now() + STEP_TIMEOUT * 4;
    while Instant::now() < deadline {
        let text = http
            .get(format!("{api}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let streams = text
            .lines()
            .find_map(|l| l.strip_prefix("livechain_stream_connections "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if streams.is_some_and(|n| n >= 1.0) {
            return Ok(guard);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the page did not open its stream within {:?}",
        STEP_TIMEOUT * 4
    )
}

/// Kills the browser's whole process group (its renderer, GPU and network processes).
struct PageGuard(std::process::Child);

impl Drop for PageGuard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on the process group of a child we spawned and have not reaped.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// The page's polling alone: the three routes it reads, every 2 s.
async fn poll_like_the_page(api: String) {
    let http = reqwest::Client::new();
    loop {
        for path in ["/v1/chains", "/v1/providers", "/v1/processes"] {
            let _ = http.get(format!("{api}{path}")).send().await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The page's live tail alone: a `/v1/stream` subscriber taking blocks, batched.
async fn tail_like_the_page(api: String) {
    use futures_util::{SinkExt, StreamExt};
    let url = format!("{}/v1/stream", api.replacen("http://", "ws://", 1));
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let subscribe = r#"{"type":"subscribe","kind":"block","batch":true}"#;
    if socket.send(subscribe.into()).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = socket.next().await {}
}
