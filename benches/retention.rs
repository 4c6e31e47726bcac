//! `cargo bench --bench retention`: the live-tail bench (`benches/stream.rs`, same devnet, same
//! rate, same 101 subscribers, shared through `common::tail`) with the service configured with
//! `retention: { max_events: N }`, N five seconds' worth of events, so that pruning runs all
//! through the window; then the identical run without retention, as the baseline.
//!
//! The retained history fills within the warm-up, so the window sees the steady state: the
//! retention pass (every 250 ms) finds the chain over N about every half second and deletes a
//! tenth of N in 1,000-row transactions, while the writer commits a block every 10 ms and the
//! subscribers measure emission-to-receipt latency. Every second the bench reads the database's
//! size from the file system (the main file plus its `-wal` file) and the service's `/metrics`.
//!
//! Printed (stdout, one line):
//! `retention: stored=<ev/s> pruned=<ev/s> db_mb_mid=<MiB> db_mb_end=<MiB> stream_p99_ms=<ms>`
//! - `stored`/`pruned`: `livechain_events_stored_total`/`livechain_pruned_events_total` over the
//!   window, per second;
//! - `db_mb_mid`/`db_mb_end`: main file plus WAL, MiB, at the window's midpoint and at its end;
//! - `stream_p99_ms`: p99 of emission-to-receipt latency over every event message of the window.
//!
//! stderr carries `retention diagnostics:` lines (the size series, retained counts, prune pass
//! durations, writer commits, CPU, bytes written) and the baseline's line,
//! `retention baseline: …` with the same fields. `LIVECHAIN_BENCH_BASELINE=0` skips the
//! baseline; `LIVECHAIN_BENCH_BIN` runs another build of the service. Bounded in time (about
//! 2.5 min), 127.0.0.1 only, the child killed on every exit path. Run by `cargo test
//! --all-targets` (without `--bench`) it only smoke-tests itself: a 1 s history, a 4 s window,
//! its line labelled as such.

mod common;

use common::tail::{self, DevnetThread, STEP_TIMEOUT, Subscribers, quantile};
use common::{
    buckets, cpu_seconds, metric, metrics_text, run_bounded, service_binary, written_bytes,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use livechain::devnet::Devnet;

/// Events per second the devnet emits (a block of `LOGS_PER_BLOCK` logs every `BLOCK_TIME_MS`).
const RATE: u64 = 1000 / tail::BLOCK_TIME_MS * (tail::LOGS_PER_BLOCK as u64 + 1);
/// `max_events` is this many seconds of events.
const RETAINED_SECONDS: u64 = 5;
/// Longer than the retained history takes to fill: the window opens on the steady state.
const WARM_UP: Duration = Duration::from_secs(10);
/// Whole seconds: the size is sampled once a second.
const WINDOW_SECS: u64 = 60;
const SMOKE_RETAINED_SECONDS: u64 = 1;
const SMOKE_WARM_UP: Duration = Duration::from_secs(2);
const SMOKE_WINDOW_SECS: u64 = 4;
/// One phase, startup to the subscribers' tally.
const PHASE_TIMEOUT: Duration = Duration::from_secs(110);

struct Setup {
    measured: bool,
    warm_up: Duration,
    window_secs: u64,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test` runs this target without it.
    let measured = std::env::args().any(|arg| arg == "--bench");
    let baseline = std::env::var("LIVECHAIN_BENCH_BASELINE").map_or(true, |v| v != "0");
    let (setup, retained_seconds, label) = if measured {
        let setup = Setup {
            measured,
            warm_up: WARM_UP,
            window_secs: WINDOW_SECS,
        };
        (setup, RETAINED_SECONDS, "retention:")
    } else {
        let setup = Setup {
            measured,
            warm_up: SMOKE_WARM_UP,
            window_secs: SMOKE_WINDOW_SECS,
        };
        let label = "retention (smoke run, not a measurement):";
        (setup, SMOKE_RETAINED_SECONDS, label)
    };
    let limited = phase(&setup, Some(RATE * retained_seconds))?;
    println!("{label} {}", limited.line(true));
    if baseline {
        let without = phase(&setup, None)?;
        eprintln!("retention baseline: {}", without.line(false));
        eprintln!(
            "retention diagnostics: stored with retention / without = {:.3}; stream p99 with / without = {:.2} / {:.2} ms",
            limited.stored / without.stored.max(1e-9),
            limited.p99_ms,
            without.p99_ms
        );
    }
    Ok(())
}

/// One run on a fresh devnet and a fresh database.
fn phase(setup: &Setup, max_events: Option<u64>) -> anyhow::Result<Outcome> {
    let devnet = DevnetThread::start()?;
    run_bounded(
        PHASE_TIMEOUT,
        measure(setup, devnet.devnet().clone(), max_events),
    )
}

/// The figures of the one-line summary.
struct Outcome {
    stored: f64,
    pruned: f64,
    db_mb_mid: f64,
    db_mb_end: f64,
    p99_ms: f64,
}

impl Outcome {
    fn line(&self, with_pruned: bool) -> String {
        let pruned = if with_pruned {
            format!(" pruned={:.0}", self.pruned)
        } else {
            String::new()
        };
        format!(
            "stored={:.0}{pruned} db_mb_mid={:.1} db_mb_end={:.1} stream_p99_ms={:.2}",
            self.stored, self.db_mb_mid, self.db_mb_end, self.p99_ms
        )
    }
}

async fn measure(
    setup: &Setup,
    devnet: Devnet,
    max_events: Option<u64>,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let db = dir.path().join("bench.db");
    let extra = max_events
        .map(|n| format!("retention: {{ max_events: {n} }}\n"))
        .unwrap_or_default();
    let yaml = tail::service_yaml(&db, &devnet, &extra);
    let (service, api) =
        common::start_service(&service_binary(), dir.path(), &yaml, STEP_TIMEOUT).await?;
    let subscribers = Subscribers::connect(&api, &devnet).await?;
    let http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .no_proxy()
        .build()?;
    let url = format!("{api}/metrics");

    tokio::time::sleep(setup.warm_up).await;
    let cpu_before = cpu_seconds(service.pid()?)?;
    let written_before = written_bytes(service.pid()?)?;
    let opened = Instant::now();
    let mut series = vec![Sample::take(&http, &url, &db).await?];
    subscribers.record(true);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(opened) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for _ in 0..setup.window_secs {
        tick.tick().await;
        series.push(Sample::take(&http, &url, &db).await?);
    }
    subscribers.record(false);
    let cpu = cpu_seconds(service.pid()?)? - cpu_before;
    let written = written_bytes(service.pid()?)?.saturating_sub(written_before) as f64;
    let seen = subscribers.finish().await?;
    drop(service);

    let (first, last) = match (series.first(), series.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => bail!("no sample taken"),
    };
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let rate = |f: fn(&Sample) -> f64| (f(last) - f(first)) / seconds.max(1e-9);
    let half = series.len() / 2;
    let outcome = Outcome {
        stored: rate(|s| s.stored),
        pruned: rate(|s| s.pruned),
        db_mb_mid: series[half].db_mib(),
        db_mb_end: last.db_mib(),
        p99_ms: quantile(&seen.latencies_ms, 0.99),
    };
    let prefix = match max_events {
        Some(_) => "retention diagnostics:",
        None => "retention baseline diagnostics:",
    };
    let list = |f: fn(&Sample) -> f64, digits: usize| {
        series
            .iter()
            .map(|s| format!("{:.digits$}", f(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "{prefix} db+wal MiB each second: {}",
        list(Sample::db_mib, 1)
    );
    eprintln!(
        "{prefix} main file MiB each second: {}",
        list(|s| s.main_bytes / MIB, 1)
    );
    eprintln!(
        "{prefix} wal MiB each second: {}",
        list(|s| s.wal_bytes / MIB, 1)
    );
    if let Some(max) = max_events {
        eprintln!(
            "{prefix} retained events each second (max_events {max}): {}",
            list(|s| s.retained, 0)
        );
        eprintln!(
            "{prefix} free pages each second: {}",
            list(|s| s.free_pages, 0)
        );
    }
    // The last half's spread, around the midpoint sample and around its median: one sample
    // taken while the WAL runs past its limit (before a restart) would skew the first alone.
    let last_half = &series[half..];
    let spread = |f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = last_half.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        let (low, high) = (quantile(&values, 0.0), quantile(&values, 1.0));
        (low, quantile(&values, 0.5), high)
    };
    let (low, median, high) = spread(Sample::db_mib);
    let mid = outcome.db_mb_mid.max(1e-9);
    let (main_low, _, main_high) = spread(|s| s.main_bytes / MIB);
    let (wal_low, _, wal_high) = spread(|s| s.wal_bytes / MIB);
    eprintln!(
        "{prefix} last half of the window: db+wal {low:.1}–{high:.1} MiB, {:+.1} % to {:+.1} % of \
         the midpoint, {:+.1} % to {:+.1} % of the median ({median:.1}); main file {main_low:.1}–{main_high:.1}, \
         wal {wal_low:.1}–{wal_high:.1} MiB; livechain_database_size_bytes at the end {:.1} MiB",
        (low / mid - 1.0) * 100.0,
        (high / mid - 1.0) * 100.0,
        (low / median.max(1e-9) - 1.0) * 100.0,
        (high / median.max(1e-9) - 1.0) * 100.0,
        last.size_metric / MIB,
    );
    let passes = last.prune_count - first.prune_count;
    let pass_buckets = delta_buckets(&first.prune_buckets, &last.prune_buckets);
    let batches = last.batches - first.batches;
    eprintln!(
        "{prefix} window {seconds:.1}s; prune passes {passes:.0} ({:.0} events each), mean {:.1} ms, \
         p50 ≤ {} ms, p99 ≤ {} ms, max ≤ {} ms; writer {:.0} commits/s, {:.2} ms each on average; \
         cpu service={:.2} cores; written to disk {:.1} MiB/s",
        (last.pruned - first.pruned) / passes.max(1.0),
        (last.prune_seconds - first.prune_seconds) * 1000.0 / passes.max(1.0),
        bucket_bound_ms(&pass_buckets, 0.5),
        bucket_bound_ms(&pass_buckets, 0.99),
        bucket_bound_ms(&pass_buckets, 1.0),
        batches / seconds.max(1e-9),
        (last.batch_seconds - first.batch_seconds) * 1000.0 / batches.max(1.0),
        cpu / seconds.max(1e-9),
        written / MIB / seconds.max(1e-9),
    );
    let (lat, inside) = (&seen.latencies_ms, &seen.inside_ms);
    eprintln!(
        "{prefix} stream p50={:.2} p90={:.2} p999={:.2} max={:.2} ms ({:.0} msgs/s, {:.0} ev/s unfiltered); \
         inside the service p50={:.0} p99={:.0} ms; without an emission instant={}; out of order={}; \
         subscribers that ended early={}",
        quantile(lat, 0.5),
        quantile(lat, 0.9),
        quantile(lat, 0.999),
        quantile(lat, 1.0),
        lat.len() as f64 / seconds.max(1e-9),
        seen.unfiltered as f64 / seconds.max(1e-9),
        quantile(inside, 0.5),
        quantile(inside, 0.99),
        seen.unknown,
        seen.disorder,
        seen.ended,
    );
    if lat.is_empty() {
        bail!("no subscriber received anything during the window");
    }
    // As in the stream bench: out of order is a bug whatever the build; a subscriber closed
    // early fails a measurement, while a debug build on a busy machine may lag legitimately.
    if seen.disorder > 0 || (setup.measured && seen.ended > 0) {
        bail!(
            "the stream misbehaved: {} out-of-order messages, {} closed subscribers",
            seen.disorder,
            seen.ended
        );
    }
    if setup.measured && max_events.is_some() && outcome.pruned <= 0.0 {
        bail!("nothing was pruned during the window: no measurement of retention");
    }
    Ok(outcome)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The database's size on disk and the service's counters at one instant.
struct Sample {
    at: Instant,
    main_bytes: f64,
    wal_bytes: f64,
    stored: f64,
    pruned: f64,
    retained: f64,
    free_pages: f64,
    size_metric: f64,
    batches: f64,
    batch_seconds: f64,
    prune_count: f64,
    prune_seconds: f64,
    prune_buckets: Vec<(f64, f64)>,
}

impl Sample {
    async fn take(http: &reqwest::Client, url: &str, db: &Path) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let (main_bytes, wal_bytes) = (file_bytes(db.to_path_buf()), file_bytes(wal_of(db)));
        let text = metrics_text(http, url).await?;
        const PRUNE: &str = "livechain_prune_duration_seconds";
        Ok(Sample {
            at,
            main_bytes,
            wal_bytes,
            stored: metric(&text, "livechain_events_stored_total"),
            pruned: metric(&text, "livechain_pruned_events_total"),
            retained: metric(&text, "livechain_retained_events"),
            free_pages: metric(&text, "livechain_database_free_pages"),
            size_metric: metric(&text, "livechain_database_size_bytes"),
            batches: metric(&text, "livechain_writer_batch_duration_seconds_count"),
            batch_seconds: metric(&text, "livechain_writer_batch_duration_seconds_sum"),
            prune_count: metric(&text, &format!("{PRUNE}_count")),
            prune_seconds: metric(&text, &format!("{PRUNE}_sum")),
            prune_buckets: buckets(&text, PRUNE),
        })
    }

    fn db_mib(&self) -> f64 {
        (self.main_bytes + self.wal_bytes) / MIB
    }
}

/// A file's length, 0 when it does not exist (no WAL yet, or just removed).
fn file_bytes(path: PathBuf) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64)
}

fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Cumulative bucket counts gained between two readings of a histogram.
fn delta_buckets(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, count)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, count - was)
        })
        .collect()
}

/// The upper bound (ms) of the bucket holding the `q` quantile, `-` without observations.
fn bucket_bound_ms(cumulative: &[(f64, f64)], q: f64) -> String {
    let total = cumulative.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return "-".into();
    }
    cumulative
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map_or("-".into(), |(le, _)| format!("{}", le * 1000.0))
}
