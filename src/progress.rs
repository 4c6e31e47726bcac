//! Backfill progress for the person watching `livechain run`: while a chain is more than one
//! range behind its head, a bar per chain on a terminal (stderr), else a log line when the
//! backfill starts, every few seconds (`livechain run --progress-every`, 5 s), and when it is
//! done — blocks done and left, rate, ETA.
//! It reads what `/v1/chains` reads (the range sync's progress) and touches nothing else.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::ingest::ChainHandle;
use crate::ingest::tally::BackfillRate;

/// How often a progress line is logged without a terminal, in milliseconds: the process's
/// setting (`livechain run --progress-every`), 5 s unless set.
static EVERY_MS: AtomicU64 = AtomicU64::new(5_000);

/// Sets how often progress lines are logged, for the whole process.
pub fn set_every(every: Duration) {
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
    EVERY_MS.store(ms, Ordering::Relaxed);
}

fn every() -> Duration {
    Duration::from_millis(EVERY_MS.load(Ordering::Relaxed))
}
/// How often the chains' progress is read (at most: a shorter `--progress-every` reads faster).
const TICK: Duration = Duration::from_millis(500);

/// A chain's backfill under way.
struct Backfill {
    started: Instant,
    /// The sync's position when it started, and the blocks it then had to go.
    from: u64,
    total: u64,
    /// Logs committed since the service started, when it started.
    logs_from: u64,
    logged: Instant,
    bar: Option<ProgressBar>,
}

/// Where a chain stands: its sync position, the head, and whether that is a backfill.
struct Position {
    at: u64,
    head: u64,
    behind: bool,
}

fn position(chain: &ChainHandle) -> Position {
    let progress = *chain.progress.borrow();
    let head = progress.head.max(*chain.best_head.borrow());
    let at = progress.checkpoint.unwrap_or(0);
    let behind = head.saturating_sub(at) > progress.range_limit.max(1);
    Position { at, head, behind }
}

/// Follows every chain until `shutdown`.
pub async fn follow(chains: Vec<ChainHandle>, shutdown: CancellationToken) {
    let bars = std::io::stderr()
        .is_terminal()
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let mut running: Vec<Option<Backfill>> = chains.iter().map(|_| None).collect();
    let mut tick = tokio::time::interval(TICK.min(every()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (chain, state) in chains.iter().zip(running.iter_mut()) {
            step(chain, state, bars.as_ref());
        }
    }
    for backfill in running.into_iter().flatten() {
        if let Some(bar) = backfill.bar {
            bar.abandon();
        }
    }
}

fn step(chain: &ChainHandle, state: &mut Option<Backfill>, bars: Option<&MultiProgress>) {
    let now = position(chain);
    let name = &chain.name;
    match state {
        None if now.behind => {
            let total = now.head - now.at;
            tracing::info!(chain = %name, from = now.at, to = now.head, blocks = total, "backfill started");
            let bar = bars.map(|bars| bars.add(new_bar(name, total)));
            *state = Some(Backfill {
                started: Instant::now(),
                from: now.at,
                total,
                logs_from: chain.stored.get().logs,
                logged: Instant::now(),
                bar,
            });
        }
        None => {}
        Some(backfill) => {
            let done = now.at.saturating_sub(backfill.from);
            // The head moves on meanwhile: the total grows with it.
            backfill.total = backfill.total.max(done + now.head.saturating_sub(now.at));
            let elapsed = backfill.started.elapsed().as_secs_f64().max(1e-3);
            let rate = done as f64 / elapsed;
            let left = backfill.total.saturating_sub(done);
            let eta = (rate > 0.0).then(|| left as f64 / rate);
            let logs = chain.stored.get().logs.saturating_sub(backfill.logs_from);
            chain.backfill.set(now.behind.then_some(BackfillRate {
                done_blocks: done,
                total_blocks: backfill.total,
                blocks_per_second: rate,
                logs_per_second: logs as f64 / elapsed,
                eta_seconds: eta.map(|s| s.ceil() as u64),
            }));
            if let Some(bar) = &backfill.bar {
                bar.set_length(backfill.total);
                bar.set_position(done);
            }
            if !now.behind {
                tracing::info!(chain = %name, blocks = done, seconds = format!("{elapsed:.1}"), blocks_per_s = format!("{rate:.0}"), "backfill done");
                if let Some(bar) = &backfill.bar {
                    bar.finish();
                }
                *state = None;
            } else if backfill.bar.is_none() && backfill.logged.elapsed() >= every() {
                backfill.logged = Instant::now();
                tracing::info!(
                    chain = %name,
                    done,
                    total = backfill.total,
                    percent = format!("{:.1}", 100.0 * done as f64 / backfill.total.max(1) as f64),
                    blocks_per_s = format!("{rate:.0}"),
                    eta = eta.map_or_else(|| "unknown".to_owned(), |s| humantime::format_duration(Duration::from_secs(s as u64)).to_string()),
                    "backfill progress"
                );
            }
        }
    }
}

fn new_bar(chain: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:40}] {pos}/{len} blocks  {per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(chain.to_owned());
    bar
}
