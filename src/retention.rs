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
/// Rows one prune step deletes at most while the chain is within a batch of its limit. A step
/// of 1,000 rows with their index entries takes a few milliseconds (BENCHMARKS.md,
/// "retention"): short enough for the live tail.
pub const STEP_ROWS: u64 = 1_000;
/// Rows one prune step deletes at most when the chain is far behind its limit.
pub const MAX_STEP_ROWS: u64 = 16 * STEP_ROWS;
/// How long a chain may stay behind (over its limit by more than a batch and still growing)
/// before the log says so.
const BEHIND_AFTER: Duration = Duration::from_secs(30);
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

/// How hard the next prune step works: the rows it deletes at most, and the pause after it as a
/// multiple of the time it held the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    pub rows: u64,
    pub pace: u32,
}

impl Effort {
    /// The usual step: [`STEP_ROWS`], then a pause twice as long as the step, so pruning holds
    /// the writer a third of the time at most and the live tail's commits pass in between.
    pub const CALM: Effort = Effort {
        rows: STEP_ROWS,
        pace: 2,
    };

    /// The effort for a chain holding `held` events under a limit of `max`. Within a batch (a
    /// tenth of the limit) over it, [`Effort::CALM`]. Further over, ingest outruns the calm
    /// pace: steps grow with the excess (a 64th of it, 2,000 to 16,000 rows) and the pauses
    /// shrink, to none beyond three batches. Under a steady inflow a prune step gets the writer
    /// about once per ingest commit, so only steps larger than the commits catch up; the live
    /// tail then waits longer for the writer, rather than the disk growing without bound.
    pub fn for_backlog(held: Option<u64>, max: Option<u64>) -> Effort {
        let (Some(held), Some(max)) = (held, max) else {
            return Effort::CALM;
        };
        let batch = (max / 10).max(1);
        let over = held.saturating_sub(max);
        if over <= batch {
            return Effort::CALM;
        }
        Effort {
            rows: (over / 64).clamp(2 * STEP_ROWS, MAX_STEP_ROWS),
            pace: if over <= 3 * batch { 1 } else { 0 },
        }
    }
}

/// Watches whether pruning keeps pace with ingest: a chain over its limit by more than two
/// batches (where pruning already runs harder, [`Effort::for_backlog`]) whose held count still
/// rises over [`BEHIND_AFTER`] is behind, said once in the log (and again when it is back
/// within a batch of its limit).
#[derive(Debug, Default)]
pub struct Behind {
    /// The held count and when it was read, at the start of the window being judged.
    since: Option<(Instant, u64)>,
    reported: bool,
}

impl Behind {
    /// Notes `held` at `now`; `Some(true)` when the chain just fell behind, `Some(false)` when
    /// it just caught up, `None` when nothing changed.
    pub fn note(&mut self, now: Instant, held: u64, max: u64) -> Option<bool> {
        let batch = (max / 10).max(1);
        if held <= max.saturating_add(batch) {
            self.since = None;
            return std::mem::take(&mut self.reported).then_some(false);
        }
        if held <= max.saturating_add(2 * batch) {
            self.since = None;
            return None;
        }
        let (at, then) = *self.since.get_or_insert((now, held));
        if now.duration_since(at) < BEHIND_AFTER {
            return None;
        }
        self.since = Some((now, held));
        let rising = held > then;
        if rising && !self.reported {
            self.reported = true;
            return Some(true);
        }
        None
    }
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
    let mut behind = Behind::default();
    if let Some(max) = policy.max_events {
        metrics::gauge!(m::RETENTION_LIMIT_EVENTS, "chain" => chain.to_owned()).set(max as f64);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match pass(store, chain, &policy, &mut behind, &stop).await {
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
    behind: &mut Behind,
    stop: &CancellationToken,
) -> Result<Pass, StoreError> {
    let started = Instant::now();
    let held = match policy.max_events {
        Some(_) => Some(store.retained_events(chain).await?),
        None => None,
    };
    if let (Some(max), Some(held)) = (policy.max_events, held) {
        say_behind(chain, behind.note(Instant::now(), held, max), held, max);
    }
    let keep_events = match (policy.max_events, held) {
        // Down to 90 %: the tenth in between is the batch.
        (Some(max), Some(held)) if held > max => Some(max - max / 10),
        _ => None,
    };
    let expire_before = match policy.max_age {
        Some(age) => expired_before(store, chain, age).await?,
        None => None,
    };
    let mut done = Pass::default();
    if keep_events.is_some() || expire_before.is_some() {
        let mut target = PruneTarget {
            keep_events,
            expire_before,
            confirmations: policy.confirmations,
            max_rows: STEP_ROWS,
        };
        let mut effort = Effort::for_backlog(held, policy.max_events);
        while done.steps < MAX_STEPS_PER_PASS && !stop.is_cancelled() {
            target.max_rows = effort.rows;
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
                if let Some(max) = policy.max_events {
                    say_behind(chain, behind.note(Instant::now(), held, max), held, max);
                }
            }
            metrics::histogram!(m::PRUNE_STEP, &[label()]).record(step.held.as_secs_f64());
            effort = Effort::for_backlog(step.retained, policy.max_events);
            let pause = step.held * effort.pace;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
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

/// Logs a change of [`Behind`]'s verdict.
fn say_behind(chain: &str, change: Option<bool>, held: u64, max: u64) {
    match change {
        Some(true) => tracing::warn!(
            chain,
            held,
            max_events = max,
            "retention is behind ingest: the chain holds more events than its limit and the \
             count still rises while pruning runs flat out (the machine has too little CPU or \
             disk for this inflow, or the limit is too small for it)"
        ),
        Some(false) => tracing::info!(
            chain,
            held,
            max_events = max,
            "retention caught up with ingest"
        ),
        None => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_works_harder_the_further_a_chain_is_over_its_limit() {
        let max = Some(1_000_000);
        assert_eq!(Effort::for_backlog(None, max), Effort::CALM);
        assert_eq!(Effort::for_backlog(Some(5), None), Effort::CALM, "age only");
        assert_eq!(Effort::for_backlog(Some(900_000), max), Effort::CALM);
        assert_eq!(
            Effort::for_backlog(Some(1_100_000), max),
            Effort::CALM,
            "one batch over: the usual pass"
        );
        let further = Effort::for_backlog(Some(1_200_000), max);
        assert_eq!(
            (further.rows, further.pace),
            (3_125, 1),
            "a 64th of the excess"
        );
        let far = Effort::for_backlog(Some(1_500_000), max);
        assert_eq!((far.rows, far.pace), (7_812, 0), "back to back");
        let farther = Effort::for_backlog(Some(5_000_000), max);
        assert_eq!(farther.rows, MAX_STEP_ROWS, "bounded");
        let small = Effort::for_backlog(Some(5_000), Some(3_000));
        assert_eq!(
            (small.rows, small.pace),
            (2 * STEP_ROWS, 0),
            "at least 2,000 rows"
        );
    }

    #[test]
    fn a_chain_is_behind_when_its_count_keeps_rising_over_the_limit() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut behind = Behind::default();
        assert_eq!(behind.note(at(0), 1_050, 1_000), None, "within a batch");
        assert_eq!(behind.note(at(1), 1_150, 1_000), None, "within two batches");
        assert_eq!(
            behind.note(at(40), 1_190, 1_000),
            None,
            "within two batches"
        );
        assert_eq!(
            behind.note(at(41), 1_500, 1_000),
            None,
            "over, not for long"
        );
        assert_eq!(behind.note(at(60), 1_900, 1_000), None);
        assert_eq!(
            behind.note(at(72), 2_000, 1_000),
            Some(true),
            "rose for 30 s"
        );
        assert_eq!(behind.note(at(75), 1_150, 1_000), None, "said once");
        assert_eq!(behind.note(at(76), 3_000, 1_000), None, "said once");
        assert_eq!(behind.note(at(80), 1_000, 1_000), Some(false), "caught up");
        assert_eq!(behind.note(at(81), 1_000, 1_000), None);

        // Over the limit but shrinking: pruning is catching up, not behind.
        let mut shrinking = Behind::default();
        assert_eq!(shrinking.note(at(0), 5_000, 1_000), None);
        assert_eq!(shrinking.note(at(31), 4_000, 1_000), None);
        assert_eq!(shrinking.note(at(62), 3_000, 1_000), None);
    }
}
