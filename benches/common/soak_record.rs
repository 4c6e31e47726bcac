//! The soak's record: one sample of the service per minute (memory, descriptors, threads,
//! tasks, database size, ingest rate, clients), written as CSV and drawn as an SVG of small
//! panels, and the drift of a series over the end of the run. Used by `benches/soak.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::soak::Counters;
use super::{cpu_seconds, metric, metrics_text};

pub const MIB: f64 = 1024.0 * 1024.0;

/// The service and the client pool at one instant.
#[derive(Clone)]
pub struct Sample {
    pub at: Instant,
    /// Minutes since the first sample.
    pub minute: f64,
    /// `VmRSS`: the median of the one-second reads since the previous sample (a single read
    /// can land on a burst: a replay page, a commit), and the lowest and highest of them.
    pub rss_mib: f64,
    pub rss_min_mib: f64,
    pub rss_max_mib: f64,
    /// `livechain_sqlite_memory_bytes` in MiB (0 from a build without it).
    pub sqlite_mib: f64,
    pub fds: f64,
    pub threads: f64,
    /// `livechain_runtime_tasks`; `None` from a build without it.
    pub tasks: Option<f64>,
    pub db_mib: f64,
    pub wal_mib: f64,
    pub stored: f64,
    pub pruned: f64,
    pub retained: f64,
    /// Stored events per second since the previous sample (0 for the first).
    pub stored_per_s: f64,
    /// The chain's best head and how far the committed checkpoint is behind it (blocks).
    pub head: f64,
    pub lag_blocks: f64,
    /// CPU seconds so far of the service and of this process (devnet and clients), and the
    /// cores each used since the previous sample.
    pub cpu_service: f64,
    pub cpu_bench: f64,
    pub cores_service: f64,
    pub cores_bench: f64,
    /// `livechain_stream_connections`, and the pool's own count of open sessions.
    pub stream_connections: f64,
    pub clients_connected: u64,
    pub sessions: u64,
    pub spans_verified: u64,
    pub mismatches: u64,
}

impl Sample {
    pub async fn take(
        http: &reqwest::Client,
        metrics_url: &str,
        pid: u32,
        db: &Path,
        counters: &Counters,
        previous: Option<&Sample>,
        rss_reads: &[f64],
    ) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64;
        let text = metrics_text(http, metrics_url).await?;
        let stored = metric(&text, "livechain_events_stored_total");
        let (cpu_service, cpu_bench) = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
        let (minute, stored_per_s, cores_service, cores_bench) = match previous {
            Some(p) => {
                let seconds = at.duration_since(p.at).as_secs_f64().max(1e-9);
                let per_s = |now: f64, then: f64| (now - then) / seconds;
                (
                    p.minute + seconds / 60.0,
                    per_s(stored, p.stored),
                    per_s(cpu_service, p.cpu_service),
                    per_s(cpu_bench, p.cpu_bench),
                )
            }
            None => (0.0, 0.0, 0.0, 0.0),
        };
        let now = status_kib(&status, "VmRSS:")? / 1024.0;
        let mut reads = rss_reads.to_vec();
        reads.push(now);
        reads.sort_by(f64::total_cmp);
        Ok(Sample {
            at,
            minute,
            rss_mib: reads[reads.len() / 2],
            rss_min_mib: reads[0],
            rss_max_mib: reads[reads.len() - 1],
            sqlite_mib: metric(&text, "livechain_sqlite_memory_bytes") / MIB,
            fds,
            threads: status_kib(&status, "Threads:")?,
            tasks: text
                .contains("\nlivechain_runtime_tasks ")
                .then(|| metric(&text, "livechain_runtime_tasks")),
            db_mib: file_bytes(db) / MIB,
            wal_mib: file_bytes(&wal_of(db)) / MIB,
            stored,
            pruned: metric(&text, "livechain_pruned_events_total"),
            retained: metric(&text, "livechain_retained_events"),
            stored_per_s,
            head: metric(&text, "livechain_chain_head"),
            lag_blocks: metric(&text, "livechain_chain_lag_blocks"),
            cpu_service,
            cpu_bench,
            cores_service,
            cores_bench,
            // `+ 0.0` turns a gauge's -0 (decremented back to zero) into 0.
            stream_connections: metric(&text, "livechain_stream_connections") + 0.0,
            clients_connected: Counters::get(&counters.connected),
            sessions: Counters::get(&counters.sessions),
            spans_verified: Counters::get(&counters.spans_verified),
            mismatches: Counters::get(&counters.mismatches),
        })
    }

    /// The sample's stderr line.
    pub fn line(&self) -> String {
        format!(
            "soak sample: minute={:.2} rss_mb={:.1} (reads {:.1}-{:.1}) sqlite_mb={:.1} fds={:.0} threads={:.0} tasks={} db_mb={:.1} \
             wal_mb={:.1} stored_per_s={:.0} head={:.0} lag_blocks={:.0} retained={:.0} pruned={:.0} \
             cores_service={:.2} cores_bench={:.2} clients_connected={} stream_connections={:.0} \
             sessions={} spans_verified={} mismatches={}",
            self.minute,
            self.rss_mib,
            self.rss_min_mib,
            self.rss_max_mib,
            self.sqlite_mib,
            self.fds,
            self.threads,
            self.tasks.map_or("-".into(), |t| format!("{t:.0}")),
            self.db_mib,
            self.wal_mib,
            self.stored_per_s,
            self.head,
            self.lag_blocks,
            self.retained,
            self.pruned,
            self.cores_service,
            self.cores_bench,
            self.clients_connected,
            self.stream_connections,
            self.sessions,
            self.spans_verified,
            self.mismatches,
        )
    }
}

/// The process's resident memory now, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_kib(&status, "VmRSS:")? / 1024.0)
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS:` in KiB, `Threads:` a count).
fn status_kib(status: &str, field: &str) -> anyhow::Result<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}

/// A file's length, 0 when it does not exist (no WAL yet, or just removed).
pub fn file_bytes(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64)
}

pub fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The largest distance of `values` from their mean, in % of the mean (0 when empty).
pub fn drift_pct(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let far = values.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
    far / mean.abs().max(1e-9) * 100.0
}

/// The samples of the last two thirds of the run (the stretch the bar judges): those whose
/// interval, from the sample before, lies within it. A sample summarises its interval (RSS is
/// the median of the reads taken over it), so the one taken as the stretch begins is not in it.
pub fn settled(samples: &[Sample]) -> &[Sample] {
    let end = samples.last().map_or(0.0, |s| s.minute);
    // A quarter of an interval absorbs the sampler's timing jitter around the stretch's start.
    let from = samples
        .windows(2)
        .position(|w| w[0].minute >= end / 3.0 - (w[1].minute - w[0].minute) / 4.0)
        .map_or(0, |before| before + 1);
    &samples[from..]
}

pub fn write_csv(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "minute,rss_mb,rss_min_mb,rss_max_mb,sqlite_mb,fds,threads,tasks,db_mb,wal_mb,stored_per_s,head,lag_blocks,retained,pruned,\
         cores_service,cores_bench,clients_connected,stream_connections,sessions,spans_verified,\
         mismatches\n",
    );
    for s in samples {
        let tasks = s.tasks.map_or(String::new(), |t| format!("{t:.0}"));
        writeln!(
            csv,
            "{:.2},{:.1},{:.1},{:.1},{:.1},{:.0},{:.0},{tasks},{:.1},{:.1},{:.0},{:.0},{:.0},{:.0},{:.0},{:.2},{:.2},{},{:.0},{},{},{}",
            s.minute,
            s.rss_mib,
            s.rss_min_mib,
            s.rss_max_mib,
            s.sqlite_mib,
            s.fds,
            s.threads,
            s.db_mib,
            s.wal_mib,
            s.stored_per_s,
            s.head,
            s.lag_blocks,
            s.retained,
            s.pruned,
            s.cores_service,
            s.cores_bench,
            s.clients_connected,
            s.stream_connections,
            s.sessions,
            s.spans_verified,
            s.mismatches,
        )?;
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

const WIDTH: f64 = 720.0;
const PANEL: f64 = 120.0;
const MARGIN: f64 = 60.0;

/// One panel of the plot: a series and how to label it.
struct Series {
    title: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    /// Draw the ±10 % band around the mean of the judged stretch.
    banded: bool,
}

/// Draws RSS, fds, tasks (threads without them), events held and database + WAL size over
/// minutes, one small panel each, every panel scaled to its own range; the last two thirds shaded.
pub fn write_svg(path: &Path, samples: &[Sample], title: &str) -> anyhow::Result<()> {
    let has_tasks = samples.iter().all(|s| s.tasks.is_some());
    let mut panels = vec![
        Series {
            title: "RSS",
            unit: "MiB",
            values: samples.iter().map(|s| s.rss_mib).collect(),
            banded: true,
        },
        Series {
            title: "open fds",
            unit: "",
            values: samples.iter().map(|s| s.fds).collect(),
            banded: true,
        },
    ];
    panels.push(if has_tasks {
        Series {
            title: "tokio tasks",
            unit: "",
            values: samples.iter().map(|s| s.tasks.unwrap_or(0.0)).collect(),
            banded: false,
        }
    } else {
        Series {
            title: "threads",
            unit: "",
            values: samples.iter().map(|s| s.threads).collect(),
            banded: false,
        }
    });
    panels.push(Series {
        title: "events held",
        unit: "millions",
        values: samples.iter().map(|s| s.retained / 1e6).collect(),
        banded: false,
    });
    panels.push(Series {
        title: "database + WAL",
        unit: "MiB",
        values: samples.iter().map(|s| s.db_mib + s.wal_mib).collect(),
        banded: false,
    });
    let minutes: Vec<f64> = samples.iter().map(|s| s.minute).collect();
    let height = 40.0 + panels.len() as f64 * (PANEL + 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN}\" y=\"22\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for (i, series) in panels.iter().enumerate() {
        let top = 40.0 + i as f64 * (PANEL + 30.0);
        panel(&mut svg, series, &minutes, top);
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// One panel at `top`: frame, shaded judged stretch, optional band, the polyline, labels.
fn panel(svg: &mut String, series: &Series, minutes: &[f64], top: f64) {
    let end = minutes.last().copied().unwrap_or(0.0).max(1e-9);
    let judged_from = minutes.iter().position(|m| *m >= end / 3.0).unwrap_or(0);
    let judged = &series.values[judged_from..];
    let mean = judged.iter().sum::<f64>() / judged.len().max(1) as f64;
    let (low, high) = scale(series, mean);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let x = |m: f64| MARGIN + m / end * plot_w;
    let y = |v: f64| top + PANEL - (v - low) / (high - low) * PANEL;
    let _ = writeln!(
        svg,
        "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{PANEL}\" fill=\"#eef3fb\"/>\n\
         <rect x=\"{MARGIN}\" y=\"{top:.1}\" width=\"{plot_w}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>",
        x(end / 3.0),
        plot_w * 2.0 / 3.0,
    );
    if series.banded {
        for bound in [mean * 0.9, mean * 1.1] {
            let _ = writeln!(
                svg,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c66\" stroke-dasharray=\"4 3\"/>",
                x(end / 3.0),
                x(end),
                y(bound),
                y(bound)
            );
        }
    }
    let points: Vec<String> = minutes
        .iter()
        .zip(&series.values)
        .map(|(m, v)| format!("{:.1},{:.1}", x(*m), y(*v)))
        .collect();
    let last = series.values.last().copied().unwrap_or(0.0);
    let unit = if series.unit.is_empty() {
        String::new()
    } else {
        format!(" ({})", series.unit)
    };
    let band = if series.banded {
        " (dashed: ±10 % of the mean over the shaded last two thirds)"
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\" points=\"{}\"/>\n\
         <text x=\"{MARGIN}\" y=\"{:.1}\">{}{}: last {}, mean of the shaded part {}{band}</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
         <text x=\"{MARGIN}\" y=\"{:.1}\">0</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{end:.1} min</text>",
        points.join(" "),
        top - 5.0,
        series.title,
        unit,
        figure(last),
        figure(mean),
        MARGIN - 4.0,
        top + 10.0,
        figure(high),
        MARGIN - 4.0,
        top + PANEL,
        figure(low),
        top + PANEL + 14.0,
        WIDTH - MARGIN,
        top + PANEL + 14.0,
    );
}

/// The panel's vertical range: the series' own, the band included, never empty.
fn scale(series: &Series, mean: f64) -> (f64, f64) {
    let values = series.values.iter().copied();
    let mut low = values.clone().fold(f64::INFINITY, f64::min);
    let mut high = values.fold(f64::NEG_INFINITY, f64::max);
    if series.banded {
        low = low.min(mean * 0.9);
        high = high.max(mean * 1.1);
    }
    if !low.is_finite() {
        (0.0, 1.0)
    } else if high - low < 1e-9 {
        (low - 1.0, high + 1.0)
    } else {
        (low, high)
    }
}

/// A value for a label: two decimals below 10, whole numbers above.
fn figure(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Lines of the service's log at level ERROR and at WARN, and the first few of them.
pub fn log_levels(log: &Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut errors, mut warns, mut first) = (0, 0, Vec::new());
    for line in text.lines() {
        // The text format's level is its second word, after the timestamp.
        let level = match line.split_whitespace().nth(1) {
            Some("ERROR") => Some(true),
            Some("WARN") => Some(false),
            _ => None,
        };
        match level {
            Some(true) => errors += 1,
            Some(false) => warns += 1,
            None => continue,
        }
        if first.len() < 10 {
            first.push(line.to_owned());
        }
    }
    (errors, warns, first)
}
