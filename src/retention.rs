//! Retention: each chain's stored history kept within `retention.max_events` and
//! `retention.max_age`, one supervised process per limited chain (`retention/<chain>`).
//!
//! A pass runs every [`PASS_INTERVAL`]. Over `max_events`, it prunes the oldest whole blocks
//! down to 90 % of the limit (so a chain is pruned in batches of a tenth of its window, not a
//! block at a time); past `max_age`, the blocks older than that. Each batch is deleted in steps
//! of at most [`STEP_ROWS`] rows, each its own transaction, so the writer and the live tail wait
//! for one short step at most. Nothing above the chain's final height is ever pruned (the store
//! enforces it), so a reorg always finds its window whole. Free pages beyond a quarter of the
//! file are then returned to the file system.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::{ChainConfig, RetentionConfig};
use crate::domain::ChainName;
use crate::registry::{Criticality, ProcessKey, RegistryError, Supervisor, TaskError};
use crate::store::{PruneTarget, Store, StoreError};
use crate::telemetry::metrics as m;

/// Time between two passes of a chain: the count it checks is kept in memory, so a pass that
/// finds nothing to do costs one small read.
pub const PASS_INTERVAL: Duration = Duration::from_millis(250);
/// Rows one prune step deletes at most. A step of 1,000 rows with their index entries takes a
/// few milliseconds here (BENCHMARKS.md, "retention"): short enough for the live tail.
pub const STEP_ROWS: u64 = 1_000;
/// After each step a pass waits this many times the step's own duration: pruning holds the
/// writer a third of the time at most, and the live tail's commits pass in between.
const STEP_PACE: u32 = 2;
/// Steps one pass runs at most before it lets the next pass look again (a first pass over a
/// database far over a lowered limit takes several passes).
const MAX_STEPS_PER_PASS: usize = 10_000;
/// Incremental vacuum steps one pass runs at most.
const MAX_VACUUM_STEPS: usize = 64;

/// One chain's limits, as the passes apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_events: Option<u64>,
    pub max_age: Option<Duration>,
    /// Without a finalized height, blocks this deep below the checkpoint count as final.
    pub confirmations: u64,
}

impl Policy {
    /// The chain's policy, `None` when it has no limit.
    pub fn of(chain: &ChainConfig) -> Option<Policy> {
        let RetentionConfig {
            max_events,
            max_age,
        } = chain.retention;
        if max_events.is_none() && max_age.is_none() {
            return None;
        }
        Some(Policy {
            max_events,
            max_age,
            confirmations: chain.confirmations,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub events: u64,
    pub heights: u64,
    pub steps: usize,
    /// The lowest block held afterwards, when the chain has pruned at all.
    pub low_block: Option<u64>,
    /// Pages returned to the file system.
    pub returned_pages: u64,
}

/// Spawns `retention/<chain>` under `supervisor`.
pub fn spawn(
    supervisor: &Supervisor,
    store: Store,
    chain: ChainName,
    policy: Policy,
) -> Result<(), RegistryError> {
    let spec = serde_json::json!({
        "max_events": policy.max_events,
        "max_age_secs": policy.max_age.map(|d| d.as_secs()),
    });
    supervisor.spawn(
        ProcessKey::new("retention", chain.to_string()),
        spec,
        Criticality::Ordinary,
        move |token| {
            let (store, chain) = (store.clone(), chain.clone());
            Box::pin(async move { run(&store, &chain, policy, token).await })
        },
    )
}

/// Passes every [`PASS_INTERVAL`] until `stop`. A store error that trying again may fix (a busy
/// database) waits for the next pass; any other ends the run, and the supervisor restarts it.
pub async fn run(
    store: &Store,
    chain: &str,
    policy: Policy,
    stop: CancellationToken,
) -> Result<(), TaskError> {
    let mut tick = tokio::time::interval(PASS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut short = Shortfall::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match pass(store, chain, &policy, &stop).await {
            Ok(done) => short.check(store, chain, &policy, &done).await,
            Err(err) if err.is_retryable() => {
                tracing::warn!(chain, error = %err, "retention pass failed; trying again");
            }
            Err(err) => return Err(TaskError::new(format!("retention of {chain}: {err}"))),
        }
    }
}

/// One pass over `chain`: the batches its limits call for, then the free pages.
pub async fn pass(
    store: &Store,
    chain: &str,
    policy: &Policy,
    stop: &CancellationToken,
) -> Result<Pass, StoreError> {
    let started = Instant::now();
    let keep_events = match policy.max_events {
        // Down to 90 %: the tenth in between is the batch.
        Some(max) if store.retained_events(chain).await? > max => Some(max - max / 10),
        _ => None,
    };
    let expire_before = match policy.max_age {
        Some(age) => expired_before(store, chain, age).await?,
        None => None,
    };
    let mut done = Pass::default();
    if keep_events.is_some() || expire_before.is_some() {
        let target = PruneTarget {
            keep_events,
            expire_before,
            confirmations: policy.confirmations,
            max_rows: STEP_ROWS,
        };
        while done.steps < MAX_STEPS_PER_PASS && !stop.is_cancelled() {
            let began = Instant::now();
            let Some(step) = store.prune_step(chain, &target).await? else {
                break;
            };
            done.steps += 1;
            done.events += step.events;
            done.heights += step.heights;
            done.low_block = Some(step.mark.low_block);
            // A pass under steady inflow runs for seconds: the gauges follow each step.
            let label = || ("chain", chain.to_owned());
            metrics::gauge!(m::OLDEST_RETAINED_BLOCK, &[label()]).set(step.mark.low_block as f64);
            if let Some(held) = step.retained {
                metrics::gauge!(m::RETAINED_EVENTS, &[label()]).set(held as f64);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(began.elapsed() * STEP_PACE) => {}
            }
        }
        for _ in 0..MAX_VACUUM_STEPS {
            if stop.is_cancelled() {
                break;
            }
            match store.reclaim_free_pages().await? {
                0 => break,
                pages => done.returned_pages += pages,
            }
        }
    }
    if done.steps > 0 {
        metrics::histogram!(m::PRUNE_DURATION, "chain" => chain.to_owned())
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            chain,
            events = done.events,
            blocks = done.heights,
            low_block = done.low_block,
            returned_pages = done.returned_pages,
            "pruned the oldest stored blocks"
        );
    }
    record_gauges(store, chain, policy).await?;
    Ok(done)
}

/// The cutoff (Unix seconds) when `chain`'s oldest block is older than `age`.
async fn expired_before(
    store: &Store,
    chain: &str,
    age: Duration,
) -> Result<Option<u64>, StoreError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let Some(cutoff) = now.checked_sub(age.as_secs()) else {
        return Ok(None);
    };
    Ok(match store.oldest_block(chain).await? {
        Some((_, oldest)) if oldest < cutoff => Some(cutoff),
        _ => None,
    })
}

async fn record_gauges(store: &Store, chain: &str, policy: &Policy) -> Result<(), StoreError> {
    let label = || ("chain", chain.to_owned());
    if policy.max_events.is_some() {
        let held = store.retained_events(chain).await?;
        metrics::gauge!(m::RETAINED_EVENTS, &[label()]).set(held as f64);
    }
    if let Some((block, _)) = store.oldest_block(chain).await? {
        metrics::gauge!(m::OLDEST_RETAINED_BLOCK, &[label()]).set(block as f64);
    }
    Ok(())
}

/// Says once (and again when it clears) that a chain holds more than `max_events` because the
/// rest is not final yet: the limit waits for finality, it does not break it.
#[derive(Debug, Default)]
struct Shortfall {
    reported: bool,
}

impl Shortfall {
    async fn check(&mut self, store: &Store, chain: &str, policy: &Policy, done: &Pass) {
        let Some(max) = policy.max_events else {
            return;
        };
        let Ok(held) = store.retained_events(chain).await else {
            return;
        };
        // Over by more than a batch after a pass: the final height stopped it.
        let over = held > max.saturating_add(max / 10) && done.steps < MAX_STEPS_PER_PASS;
        if over && !self.reported {
            tracing::warn!(
                chain,
                held,
                max_events = max,
                "the chain holds more events than retention.max_events: the rest is above its \
                 final height (the reorg window), which is never pruned"
            );
        } else if !over && self.reported {
            tracing::info!(
                chain,
                held,
                max_events = max,
                "the chain is within its limit again"
            );
        }
        self.reported = over;
    }
}

/// Starts a retention process for every chain of `chains` that has a limit.
pub fn spawn_all<'a>(
    supervisor: &Supervisor,
    store: &Store,
    chains: impl IntoIterator<Item = (&'a String, &'a ChainConfig)>,
) -> Result<(), RegistryError> {
    for (name, chain) in chains {
        if let Some(policy) = Policy::of(chain) {
            spawn(supervisor, store.clone(), Arc::from(name.as_str()), policy)?;
        }
    }
    Ok(())
}
