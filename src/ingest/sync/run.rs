//! The range sync's loop, a state machine over [`Run`]: each pass takes in the live head and a
//! due reorg hint, decides how far to read, asks for ranges, then waits for the first thing to
//! happen (the next answer, a hint, a head, a timer) and handles it.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fetch::Fetcher;
use super::heads::HeadClock;
use super::rewind::{Position, Rewind};
use super::schedule::{Ask, Hints, Schedule};
use super::stuck::{Change, Stuck, StuckWatch};
use super::{Failed, HEAD_POLL, RangeError, RangeSync, by_confirmations};
use crate::backoff::{Delays, RETRY};
use crate::breaker::startup_backoff;
use crate::ingest::{ChainInput, RangeData};
use crate::provider::ProviderError;
use crate::telemetry::metrics as m;

/// The loop stops: shut down, or the aggregator is gone.
pub(super) struct Stopped;

/// What a step of the loop leaves: carry on, or stop.
type Step<T = ()> = Result<T, Stopped>;

/// The head over HTTP, as last polled.
#[derive(Default)]
struct Polled {
    head: Option<u64>,
    at: Option<Instant>,
}

/// The delays before retrying what failed: the usual curve, and the short start-up curve for
/// the head while no provider of the chain has answered since start (one that comes up late is
/// asked within seconds).
struct Retry {
    delays: Delays,
    startup: Delays,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            delays: RETRY.delays(),
            startup: startup_backoff(),
        }
    }

    /// Something worked: the next failure starts the curve afresh.
    fn reset(&mut self) {
        self.delays = RETRY.delays();
    }

    fn next(&mut self) -> Duration {
        self.delays.next_delay()
    }

    fn next_for_head(&mut self, any_answered: bool) -> Duration {
        if any_answered {
            self.delays.next_delay()
        } else {
            self.startup.next_delay()
        }
    }
}

/// Everything the loop keeps between passes.
pub(super) struct Run {
    sync: RangeSync,
    shutdown: CancellationToken,
    fetcher: Fetcher,
    /// A child of `shutdown`, cancelled when the loop ends however it ends: the fetch tasks
    /// stop with it.
    tasks: CancellationToken,
    schedule: Schedule<Result<RangeData, Failed>>,
    hints: Hints,
    position: Position,
    clock: HeadClock,
    polled: Polled,
    retry: Retry,
    heads_open: bool,
    hints_open: bool,
    /// Whether the chain's nodes answer the `safe`/`finalized` tags.
    tags_seen: bool,
    stuck: StuckWatch,
    /// The range whose last fetch failed on every try so far (not a refusal being halved):
    /// cleared when a range is handed on.
    failing: Option<(u64, u64)>,
}

impl Run {
    pub(super) fn new(mut sync: RangeSync, shutdown: CancellationToken) -> Run {
        let position = Position::new(sync.checkpoint, &std::mem::take(&mut sync.recent));
        Run {
            fetcher: Fetcher {
                providers: sync.providers.clone(),
                filters: sync.filters.clone(),
            },
            tasks: shutdown.child_token(),
            schedule: Schedule::new(position.next()),
            hints: Hints::default(),
            position,
            clock: HeadClock::default(),
            polled: Polled::default(),
            retry: Retry::new(),
            heads_open: true,
            hints_open: true,
            tags_seen: false,
            stuck: StuckWatch::default(),
            failing: None,
            sync,
            shutdown,
        }
    }

    pub(super) async fn run(mut self) {
        let _stop_tasks = self.tasks.clone().drop_guard();
        while !self.shutdown.is_cancelled() {
            if self.pass().await.is_err() {
                return;
            }
        }
    }

    async fn pass(&mut self) -> Step {
        let now = Instant::now();
        // Every pass reads the head: `changed()` in `next_answer` marks a new value seen
        // before this does.
        let head = *self.sync.best_head.borrow_and_update();
        if head > 0 {
            self.clock.observe(head, now.into_std());
        }
        if let Some(at) = self.hints.due(now) {
            let rewind = or_stop(&self.shutdown, self.sync.check_hint(&self.position, at)).await?;
            self.rewind(rewind);
        }
        let live = self.clock.is_live(now.into_std(), HEAD_POLL);
        if !live && self.poll_due(now) {
            // Raced with shutdown and with a streamed head (which makes the poll needless): a
            // provider that accepts and never answers would otherwise hold the whole range
            // sync, and its stop, for its HTTP timeout.
            let polled = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(Stopped),
                changed = self.sync.best_head.changed(), if self.heads_open => {
                    self.heads_open = changed.is_ok();
                    return Ok(());
                }
                polled = self.sync.providers.block_number() => polled,
            };
            match polled {
                Ok(head) => {
                    self.polled = Polled {
                        head: Some(head),
                        at: Some(now),
                    }
                }
                Err(err) => return self.head_unknown(err).await,
            }
        }
        let mut target = self.clock.settled(now.into_std());
        if !live {
            target = target.max(self.polled.head);
        }
        let verdict = self.check_stuck(now).await?;
        self.schedule.set_limit(self.sync.providers.range_limit());
        let mut wake = now + HEAD_POLL;
        if let Some(target) = target {
            self.start(target);
            self.report(self.best(), verdict);
            if let Some(linger) = self.ask(target, now, live) {
                wake = wake.min(linger);
            }
        }
        if let Some(settle) = self.clock.next_settle() {
            wake = wake.min(Instant::from_std(settle));
        }
        if let Some(hint) = self.hints.wake() {
            wake = wake.min(hint);
        }
        match self.next_answer(wake).await? {
            Some((ask, answer)) => self.on_answer(ask, answer).await,
            None => Ok(()),
        }
    }

    /// Whether the head is to be polled over HTTP (live heads are not arriving): the last poll
    /// is older than [`HEAD_POLL`] and every block it showed has been asked for.
    fn poll_due(&self, now: Instant) -> bool {
        let behind = self.polled.head.is_none_or(|h| {
            self.schedule
                .scheduled()
                .is_none_or(|scheduled| scheduled > h)
        });
        behind && self.polled.at.is_none_or(|at| now >= at + HEAD_POLL)
    }

    /// The head could not be polled: waits before the next pass. A head streamed meanwhile
    /// ends the wait: no need to poll then.
    async fn head_unknown(&mut self, err: ProviderError) -> Step {
        tracing::warn!(chain = %self.sync.chain, error = %err, "cannot read the head");
        let any_answered = self.sync.providers.health().any_answered();
        let sleep = tokio::time::sleep(self.retry.next_for_head(any_answered));
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Stopped),
            _ = sleep => {}
            changed = self.sync.best_head.changed(), if self.heads_open => {
                self.heads_open = changed.is_ok();
            }
        }
        Ok(())
    }

    /// A chain without a checkpoint starts at its subscriptions' lowest `from_block`, else at
    /// the first head known.
    fn start(&mut self, target: u64) {
        if self.position.next().is_some() {
            return;
        }
        let next = self.sync.start_block.unwrap_or(target).min(target);
        self.position.start_at(next);
        self.schedule.restart(next);
        tracing::info!(chain = %self.sync.chain, from = next, head = target, "no checkpoint: starting here");
    }

    /// Asks for ranges up to `target` (see [`Schedule::ask_all`]), a fetch task each.
    fn ask(&mut self, target: u64, now: Instant, live: bool) -> Option<Instant> {
        let (fetcher, tasks) = (&self.fetcher, &self.tasks);
        self.schedule.ask_all(target, now, live, |ask| {
            let (fetcher, stop) = (fetcher.clone(), tasks.clone());
            // Taken now, not in the task: a filter added from here on is asked with the ranges
            // after this one (see `ChainFilters::lease`).
            let filters = fetcher.filters.for_range(ask.to);
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => Err(Failed::from(RangeError::Task("stopped".into()))),
                    range = fetcher.fetch(ask, filters) => range,
                }
            })
        })
    }

    /// Waits for the first thing to happen: the answer of the range to hand on next, a reorg
    /// hint, a new head (while nothing is in flight: an answer is coming otherwise), or
    /// `wake`. The answer, if that was it.
    async fn next_answer(
        &mut self,
        wake: Instant,
    ) -> Step<Option<(Ask, Result<RangeData, Failed>)>> {
        let schedule = &mut self.schedule;
        // Biased: shutdown first; then answers, in the order they must be handed on.
        let answer = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(Stopped),
            answer = async { schedule.front()?.await.ok() }, if !schedule.is_empty() => answer,
            hint = self.sync.reorg_hints.recv(), if self.hints_open => {
                match hint {
                    Some(at) => self.hints.add(at),
                    None => self.hints_open = false,
                }
                return Ok(None);
            }
            changed = self.sync.best_head.changed(), if schedule.is_empty() && self.heads_open => {
                // An error means the aggregator is gone: the loop ends at its next send.
                self.heads_open = changed.is_ok();
                return Ok(None);
            }
            _ = tokio::time::sleep_until(wake) => return Ok(None),
        };
        let Some(ask) = self.schedule.pop() else {
            return Ok(None);
        };
        let answer =
            answer.unwrap_or_else(|| Err(Failed::from(RangeError::Task("panicked".into()))));
        Ok(Some((ask, answer)))
    }

    async fn on_answer(&mut self, ask: Ask, answer: Result<RangeData, Failed>) -> Step {
        match answer.and_then(|range| self.position.extends(range)) {
            Ok(range) => self.hand_on(ask, range).await,
            Err(failed) => self.on_failure(ask, failed).await,
        }
    }

    /// Hands a range that extends the checkpoint on to the aggregator.
    async fn hand_on(&mut self, ask: Ask, mut range: RangeData) -> Step {
        self.settle(&mut range);
        self.schedule.answered(ask.len(), range.bytes);
        self.sync.finalized = self.sync.finalized.max(range.finalized);
        metrics::counter!(m::BACKFILL_BLOCKS, "chain" => self.sync.chain.to_string())
            .increment(ask.len());
        self.position.hand_on(&range);
        let last = range.last.number;
        let sent = or_stop(
            &self.shutdown,
            self.sync.output.send(ChainInput::Range(range)),
        )
        .await?;
        if sent.is_err() {
            return Err(Stopped);
        }
        self.retry.reset();
        self.schedule.handed_on();
        self.failing = None;
        let head = self.best();
        self.report(head, self.stuck.current());
        if head.saturating_sub(ask.to) > self.schedule.span() {
            tracing::debug!(chain = %self.sync.chain, at = last, head, "backfilling");
        }
        Ok(())
    }

    /// Without the `safe`/`finalized` tags a range's blocks are final once `confirmations`
    /// deep below the best head known. Never once a node of the chain has shown tags: a fixed
    /// depth may be shallower than the chain's finality, and finality never moves back.
    fn settle(&mut self, range: &mut RangeData) {
        if range.safe.is_some() || range.finalized.is_some() {
            self.tags_seen = true;
        } else if !self.tags_seen {
            let last = range.last.number;
            let head = self.best().max(last);
            let settled = by_confirmations(head, self.sync.confirmations, last);
            (range.safe, range.finalized) = (settled, settled);
        }
    }

    /// A range failed: it and everything after it are asked for again once the failure is
    /// dealt with (a reorg walked back, the range limit halved, or a retry delay waited).
    async fn on_failure(&mut self, ask: Ask, failed: Failed) -> Step {
        let next = self.position.next().unwrap_or(ask.from);
        self.schedule.failed(&ask, failed.provider, next);
        match failed.error {
            RangeError::Fork { provider } => {
                let top = ask.from.saturating_sub(1);
                let on_fork = self.sync.on_fork(self.position.recent(), top, provider);
                let rewind = or_stop(&self.shutdown, on_fork).await?;
                if !self.rewind(rewind) {
                    let delay = self.retry.next();
                    or_stop(&self.shutdown, tokio::time::sleep(delay)).await?;
                }
            }
            RangeError::Provider(err) if err.is_range_error() && ask.to > ask.from => {
                let providers = &self.sync.providers;
                // Whose refusal it was is known when one answered; else every provider's limit.
                let refused: Vec<_> = match failed.provider {
                    Some(p) => vec![p],
                    None => providers.all().iter().map(|p| p.index).collect(),
                };
                for p in refused {
                    let Some(limit) = providers.refused_range(p, ask.len()) else {
                        continue;
                    };
                    tracing::info!(chain = %self.sync.chain, provider = %providers.id(p), limit, error = %err, "provider refused the range; halving its range limit");
                }
                self.schedule.set_limit(providers.range_limit());
            }
            err => {
                self.failing = Some((ask.from, ask.to));
                self.report(self.best(), self.stuck.current());
                let delay = self.retry.next();
                tracing::warn!(chain = %self.sync.chain, from = ask.from, to = ask.to, error = %err, retry_in_ms = delay.as_millis() as u64, "range fetch failed; retrying");
                or_stop(&self.shutdown, tokio::time::sleep(delay)).await?;
            }
        }
        Ok(())
    }

    /// Moves back as `rewind` says, dropping what is in flight; whether it moved.
    fn rewind(&mut self, rewind: Rewind) -> bool {
        let Some(next) = self.position.apply(rewind) else {
            return false;
        };
        self.schedule.restart(next);
        self.retry.reset();
        true
    }

    /// Whether every provider is far below the checkpoint (see [`super::stuck`]), logged when
    /// it starts, every minute while it lasts, and when it ends.
    async fn check_stuck(&mut self, now: Instant) -> Step<Option<Stuck>> {
        let now = now.into_std();
        let mut verdict = Stuck::check(self.best(), self.position.checkpoint());
        if let Some(Stuck::Behind { head, checkpoint }) = verdict {
            let other = if self.stuck.compare_due(verdict, now) {
                let votes = self.sync.serves_another_chain(self.position.recent(), head);
                or_stop(&self.shutdown, votes).await?
            } else {
                matches!(self.stuck.current(), Some(Stuck::OtherChain { .. }))
            };
            if other {
                verdict = Some(Stuck::OtherChain { head, checkpoint });
            }
        }
        let chain = &self.sync.chain;
        match self.stuck.observe(verdict, now) {
            Some(Change::Report(stuck)) => {
                tracing::warn!(chain = %chain, head = stuck.head(), checkpoint = stuck.checkpoint(), "{}", stuck.reason(chain));
            }
            Some(Change::Cleared) => {
                tracing::info!(chain = %chain, head = self.best(), "a provider is back at the checkpoint; the chain advances again");
            }
            None => {}
        }
        Ok(verdict)
    }

    /// The best head known, live or polled.
    fn best(&self) -> u64 {
        self.clock.latest().max(self.polled.head.unwrap_or(0))
    }

    fn report(&self, head: u64, stuck: Option<Stuck>) {
        let checkpoint = self.position.checkpoint();
        self.sync
            .report(checkpoint, head, self.schedule.span(), stuck, self.failing);
    }
}

/// `work`'s output, unless shut down first.
async fn or_stop<T>(shutdown: &CancellationToken, work: impl Future<Output = T>) -> Step<T> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(Stopped),
        output = work => Ok(output),
    }
}
