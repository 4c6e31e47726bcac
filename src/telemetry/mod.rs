//! Telemetry: structured logs (`tracing`) and the Prometheus metrics recorder.
//!
//! Every metric name lives in [`metrics`]; the recorder's text is served by the API at
//! `/metrics`, so there is no second listener.

pub mod metrics;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global `tracing` subscriber: level from `RUST_LOG` (default `info`).
///
/// Colour only when stderr is a terminal. A log line that cannot be written (the reader of a
/// piped stderr is gone) is dropped: the subscriber would otherwise report it with `eprintln!`,
/// which panics on the same broken pipe, in whatever task was logging (the signal handler's
/// included). Calling it twice is harmless (the second call keeps the first subscriber), which
/// lets tests start several services in one process.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // An error only means a subscriber is already installed (tests); keep that one.
    drop(result);
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// The `metrics` facade is global by design (any module records without a handle being passed
/// down), so the recorder is installed once per process and its render handle is shared; this
/// is the one piece of global state, and it is write-once.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Durations by default; counts get buckets of their own.
        let recorder = PrometheusBuilder::new()
            .set_buckets(metrics::LATENCY_BUCKETS_SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(metrics::WRITER_BATCH_SIZE.to_owned()),
                    metrics::BATCH_SIZE_BUCKETS,
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_ok() {
            metrics::describe_all();
        }
        handle
    })
}

/// Runs the recorder's periodic upkeep (histogram compaction) until `shutdown` fires.
pub async fn run_upkeep(handle: &'static PrometheusHandle, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Refreshes the `process_*` gauges (memory, file descriptors, CPU, threads) from the
/// operating system, the runtime's task count and SQLite's heap; called on each scrape of
/// `/metrics`.
pub fn collect_process_metrics() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    // Tasks alive in the runtime serving the scrape (the service's only one): a leak of
    // per-connection tasks shows here first.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let tasks = runtime.metrics().num_alive_tasks();
        ::metrics::gauge!(self::metrics::RUNTIME_TASKS).set(tasks as f64);
    }
    ::metrics::gauge!(self::metrics::SQLITE_MEMORY).set(crate::store::sqlite_memory_bytes() as f64);
}
