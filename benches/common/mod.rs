//! What the benchmarks share: the service under test started as a child process and read line
//! by line, a bounded run, and figures read from Prometheus text and `/proc`; `tail` holds the
//! live-tail setup, `soak` and `soak_record` the soak's clients and record. Included by each
//! bench with `mod common;` (not a bench itself: cargo only discovers `benches/*.rs` and
//! `benches/*/main.rs`).

#![allow(dead_code)] // each bench uses its own subset

pub mod soak;
pub mod soak_record;
pub mod tail;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A child process: killed when dropped; its stdout read line by line, its stderr in a file.
pub struct Proc {
    name: &'static str,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
    /// How long one expected line may take.
    step_timeout: Duration,
}

impl Proc {
    pub fn spawn(
        name: &'static str,
        command: &mut Command,
        dir: &Path,
        step_timeout: Duration,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Proc {
            name,
            child,
            // Kept open for the child's life: a closed pipe would fail its later prints.
            stdout: BufReader::new(stdout).lines(),
            log,
            step_timeout,
        })
    }

    pub async fn line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(self.step_timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            outcome => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the {} printed no line ({outcome:?}); its log ends with:\n{}",
                    self.name,
                    tail.join("\n")
                )
            }
        }
    }

    /// Sends SIGINT (the service's graceful shutdown, as an operator's Ctrl-C) and waits up to
    /// `limit` for the process to exit; returns how long it took.
    pub async fn interrupt(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let pid = self.pid()?;
        let started = std::time::Instant::now();
        // SAFETY: kill(2) on a child we own and have not yet reaped.
        if unsafe { libc::kill(pid as i32, libc::SIGINT) } != 0 {
            bail!("could not signal the {}", self.name);
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for the {}", self.name))?;
                Ok(started.elapsed())
            }
            Err(_) => bail!("the {} did not exit within {limit:?} of SIGINT", self.name),
        }
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("the {} has exited", self.name))
    }
}

/// The binary under test: `LIVECHAIN_BENCH_BIN` (another build, to compare two versions), or
/// this build's `livechain`.
pub fn service_binary() -> PathBuf {
    std::env::var_os("LIVECHAIN_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_livechain")))
}

/// Runs `bench` on a current-thread runtime for at most `limit`, or until SIGINT or SIGTERM.
/// Whatever ends it first, its future is dropped, and with it the children (`kill_on_drop`).
pub fn run_bounded<T>(
    limit: Duration,
    bench: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            outcome = tokio::time::timeout(limit, bench) => match outcome {
                Ok(result) => result,
                Err(_) => bail!("the bench took longer than {limit:?}"),
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = sigterm.recv() => bail!("terminated"),
        }
    })
}

/// Starts `binary run` on the configuration `yaml` (written into `dir`, where its stderr goes
/// too, `RUST_LOG=warn`); returns it and its API's base URL (`http://…`).
pub async fn start_service(
    binary: &Path,
    dir: &Path,
    yaml: &str,
    step_timeout: Duration,
) -> anyhow::Result<(Proc, String)> {
    let config = dir.join("bench.yaml");
    std::fs::write(&config, yaml).context("writing the service's configuration")?;
    let mut service = Proc::spawn(
        "service",
        Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn"),
        dir,
        step_timeout,
    )?;
    let api = loop {
        let line = service.line().await?;
        if let Some(at) = line.find("API on ") {
            break line[at + "API on ".len()..].trim().to_owned();
        }
    };
    Ok((service, api))
}

/// The service's `/metrics` text at `url`.
pub async fn metrics_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum of every series of `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A histogram's cumulative buckets in Prometheus text, summed over its series: `(le, count)`
/// in the order printed (ascending `le`, `+Inf` last).
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|line| line.starts_with(&prefix)) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|le| le.parse::<f64>().ok());
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(le), Some(count)) = (le, count) {
            match out.iter_mut().find(|(at, _)| *at == le) {
                Some(bucket) => bucket.1 += count,
                None => out.push((le, count)),
            }
        }
    }
    out
}

/// `VmHWM` of `pid`: its peak resident set, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// Bytes `pid` has caused to be written to storage (`write_bytes` of `/proc/<pid>/io`): its
/// WAL appends and checkpoints, as the page cache hands them to the disk.
pub fn written_bytes(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no write_bytes in /proc/<pid>/io")
}

/// User plus system CPU time of `pid`, in seconds (assuming the usual 100 clock ticks a second).
/// CPU seconds used so far by every live process of process group `pgid` (a browser's).
pub fn group_cpu_seconds(pgid: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        // After the command name: state, ppid, pgrp.
        let in_group = rest.split_whitespace().nth(2) == Some(pgid.to_string().as_str());
        if in_group {
            total += cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    total
}

pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) / 100.0),
        _ => bail!("unreadable /proc/{pid}/stat"),
    }
}
