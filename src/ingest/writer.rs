//! The one writer per database: batches what the aggregators decided into transactions.
//!
//! A batch becomes due once the blocks of its events are complete (the aggregators' cue,
//! [`WriterInput::Quiet`], see [`super::bursts`]), [`FLUSH_INTERVAL`] after its first input
//! without a cue, or at [`MAX_BATCH`] rows, and commits as soon as it is due and the previous
//! commit has ended: one commit is in flight at a time (commit order is cursor order) while
//! the next batch fills, so SQLite never waits for a batch to be assembled and, under load,
//! batches grow to what arrived during one commit. A copy of an event still waiting in the
//! batch only adds its provider; copies of events already sent add their provider to the row's
//! providers mask. A failing or busy disk is retried with backoff, never dropped; readiness is
//! false meanwhile. The writer stops when every aggregator has stopped (its input closes), after
//! committing what is left.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::disk::WriterState;
use super::tally::Tallies;
use crate::backoff::RETRY;
use crate::domain::{ChainName, EventKey, EventKind};
use crate::store::{Canonical, Checkpoint, Committed, NewEvent, Redelivery, Store, WriteBatch};
use crate::telemetry::metrics as m;

/// Events per transaction at most. A batch only grows this large while inputs arrive faster
/// than commits end (a quiet chain commits every `FLUSH_INTERVAL`), and then the commit's fixed
/// cost decides throughput: every commit writes each page it dirtied to the WAL, and random-keyed
/// indexes (hashes, topics) dirty pages all over their trees, so larger commits store more
/// rows per second; a full batch commits in a few hundred milliseconds, the live tail's latency
/// under such a load.
pub const MAX_BATCH: usize = 16_384;
/// How long the first input of a batch may wait for company when no cue says its blocks are
/// complete: the copies of the other providers, and the rest of its block, usually arrive
/// within it (a late copy costs an extra row update). tokio's timer rounds it up to the next
/// millisecond, so it is 1-2 ms in practice; every millisecond more is the live tail's.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(1);
/// How long a batch without events (late copies, a range's canonical hashes and checkpoint)
/// waits for the next block's events to ride along with. Committed alone, such a batch holds
/// the writer while a block that arrives meanwhile waits for it; nothing in it is news to a
/// subscriber in a hurry.
pub const RIDE_ALONG: Duration = Duration::from_millis(20);

/// What aggregators send the writer.
#[derive(Debug)]
pub enum WriterInput {
    /// First copies of events, in the order decided.
    Events(Vec<NewEvent>),
    /// Other providers delivered these events, already sent (each mask the providers' bits).
    Seen(Vec<Redelivery>),
    /// The canonical hashes of a range the range sync proved: committed with the range's
    /// events, before its checkpoint, so that in the same transaction every other event stored
    /// at those heights is marked `removed` (and a removed one canonical again is restored).
    Canonical(Canonical),
    /// Every block of the chain up to this one has been sent: commit it with them.
    Checkpoint(Checkpoint),
    /// The chain's providers have delivered everything of its newest block: its events need
    /// not wait out the linger ([`super::bursts`]).
    Quiet(ChainName),
}

pub struct Writer {
    store: Store,
    state: Arc<WriterState>,
    committed: broadcast::Sender<Arc<Committed>>,
    /// Where commits run ([`super::commits`]); `None`: in the writer's own task.
    commits: Option<tokio::runtime::Handle>,
    /// Per chain, what was committed (for `/v1/chains`).
    tallies: Tallies,
}

#[derive(Default)]
struct Pending {
    events: Vec<NewEvent>,
    index: HashMap<(ChainName, EventKey), usize>,
    redeliveries: HashMap<(ChainName, EventKey), Redelivery>,
    canonical: Vec<Canonical>,
    checkpoints: Vec<Checkpoint>,
    /// When the first input arrived (tokio's clock, the one the linger timer runs on).
    opened: Option<tokio::time::Instant>,
    /// When the first event arrived: the linger runs from here (see [`RIDE_ALONG`]).
    first_event: Option<tokio::time::Instant>,
    /// Chains with events here that more of the same block may still follow: the batch
    /// commits without lingering once this is empty ([`WriterInput::Quiet`]).
    unsettled: Vec<ChainName>,
}

impl Pending {
    fn add(&mut self, input: WriterInput) {
        // A cue opens no batch: it is about inputs, not one.
        if !matches!(input, WriterInput::Quiet(_)) {
            self.opened.get_or_insert_with(tokio::time::Instant::now);
        }
        match input {
            WriterInput::Quiet(chain) => self.unsettled.retain(|c| *c != chain),
            WriterInput::Events(events) => {
                if !events.is_empty() {
                    self.first_event
                        .get_or_insert_with(tokio::time::Instant::now);
                }
                for new in events {
                    self.add_event(new);
                }
            }
            WriterInput::Seen(copies) => {
                for copy in copies {
                    self.add_copy(copy);
                }
            }
            WriterInput::Canonical(range) => add_canonical(&mut self.canonical, range),
            WriterInput::Checkpoint(cp) => {
                // A later checkpoint of the same chain supersedes an earlier one.
                self.checkpoints.retain(|c| c.chain != cp.chain);
                self.checkpoints.push(cp);
            }
        }
    }

    fn add_event(&mut self, new: NewEvent) {
        if !self.unsettled.contains(&new.event.chain) {
            self.unsettled.push(new.event.chain.clone());
        }
        let id = (new.event.chain.clone(), new.event.key());
        match self.index.get(&id) {
            Some(&i) => self.events[i].providers_mask |= new.providers_mask,
            None => {
                self.index.insert(id, self.events.len());
                self.events.push(new);
            }
        }
    }

    fn add_copy(&mut self, copy: Redelivery) {
        let id = (copy.chain.clone(), copy.key);
        match self.index.get(&id) {
            Some(&i) => self.events[i].providers_mask |= copy.providers_mask,
            None => match self.redeliveries.entry(id) {
                Entry::Occupied(mut row) => row.get_mut().providers_mask |= copy.providers_mask,
                Entry::Vacant(row) => {
                    row.insert(copy);
                }
            },
        }
    }

    /// Rows the batch will write: events, and rows whose count it raises. Bounded by
    /// [`MAX_BATCH`], so a flood of late copies cannot grow a batch either.
    fn len(&self) -> usize {
        self.events.len() + self.redeliveries.len()
    }

    fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    /// When the batch comes due without a cue: [`FLUSH_INTERVAL`] after its first event, or
    /// [`RIDE_ALONG`] after its first input while it has none.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        match self.first_event {
            Some(t) => Some(t + FLUSH_INTERVAL),
            None => self.opened.map(|t| t + RIDE_ALONG),
        }
    }

    /// Whether the batch should commit now: full, its events' blocks complete, lingered long
    /// enough, or the input closed.
    fn is_due(&self, closed: bool) -> bool {
        !self.is_empty()
            && (closed
                || self.len() >= MAX_BATCH
                || (self.unsettled.is_empty() && !self.events.is_empty())
                || self
                    .deadline()
                    .is_some_and(|d| tokio::time::Instant::now() >= d))
    }

    fn take(&mut self) -> WriteBatch {
        let pending = std::mem::take(self);
        WriteBatch {
            chain_events: pending.events,
            redeliveries: pending.redeliveries.into_values().collect(),
            canonical: pending.canonical,
            checkpoints: pending.checkpoints,
        }
    }
}

/// A commit in flight: the batch's transaction, retried until it succeeds; `None` if the commit
/// runtime stopped before it ended.
type InFlight = Pin<Box<dyn Future<Output = Option<Committed>> + Send>>;

impl Writer {
    pub fn new(
        store: Store,
        state: Arc<WriterState>,
        committed: broadcast::Sender<Arc<Committed>>,
        commits: Option<tokio::runtime::Handle>,
    ) -> Writer {
        Writer {
            store,
            state,
            committed,
            commits,
            tallies: Tallies::default(),
        }
    }

    /// Counts what is committed per chain into `tallies` too.
    pub fn with_tallies(self, tallies: Tallies) -> Writer {
        Writer { tallies, ..self }
    }

    /// Runs until `input` closes, then commits what is left.
    ///
    /// One commit is in flight at a time (commits are ordered), and the next batch fills while
    /// it runs: SQLite's thread never waits for a batch to be assembled, and a batch that came
    /// due meanwhile commits the moment the previous one ends.
    pub async fn run(self, mut input: mpsc::Receiver<WriterInput>) {
        let mut pending = Pending::default();
        let mut inflight: Option<InFlight> = None;
        let mut closed = false;
        loop {
            if inflight.is_none() && pending.is_due(closed) {
                inflight = Some(self.commit(pending.take()));
            }
            if closed && inflight.is_none() && pending.is_empty() {
                break;
            }
            // The linger deadline only matters while nothing is in flight: an ending commit
            // starts the next batch anyway.
            let deadline = match &inflight {
                None => pending.deadline(),
                Some(_) => None,
            };
            tokio::select! {
                done = finish(&mut inflight) => {
                    inflight = None;
                    let Some(done) = done else {
                        // Commits can no longer run: what is pending is re-read from the
                        // committed checkpoints at the next start.
                        break;
                    };
                    // No subscriber is fine: the publisher may not be running.
                    let _ = self.committed.send(Arc::new(done));
                }
                next = input.recv(), if !closed && pending.len() < MAX_BATCH => match next {
                    Some(item) => {
                        pending.add(item);
                        // Drain what is already queued without waiting: one wake-up, many events.
                        while pending.len() < MAX_BATCH {
                            match input.try_recv() {
                                Ok(item) => pending.add(item),
                                Err(_) => break,
                            }
                        }
                    }
                    None => closed = true,
                },
                // The batch came due: the next turn of the loop commits it.
                _ = sleep_until(deadline) => {}
            }
        }
        tracing::debug!("writer stopped");
    }

    /// Starts committing `batch`, retrying until it succeeds: nothing is ever dropped.
    fn commit(&self, batch: WriteBatch) -> InFlight {
        let store = self.store.clone();
        let state = self.state.clone();
        let tallies = self.tallies.clone();
        let commit = async move {
            let size = batch.chain_events.len();
            let checkpoints: Vec<(ChainName, u64)> = batch
                .checkpoints
                .iter()
                .map(|cp| (cp.chain.clone(), cp.block_number))
                .collect();
            let mut batch = batch;
            let mut delays = RETRY.delays();
            loop {
                let started = Instant::now();
                match store.try_write_batch(batch).await {
                    Ok(committed) => {
                        metrics::histogram!(m::WRITER_BATCH_SIZE).record(size as f64);
                        metrics::histogram!(m::WRITER_BATCH_DURATION)
                            .record(started.elapsed().as_secs_f64());
                        count_stored(&committed, &tallies);
                        for (chain, block) in checkpoints {
                            metrics::gauge!(m::CHAIN_CHECKPOINT, "chain" => chain.to_string())
                                .set(block as f64);
                        }
                        if let Some((lasted, attempts)) = state.succeeded() {
                            tracing::info!(
                                after_ms = lasted.as_millis() as u64,
                                attempts,
                                "the database takes writes again"
                            );
                        }
                        return committed;
                    }
                    Err((err, again)) => {
                        batch = again;
                        let fault = state.failed(&err);
                        let delay = delays.next().unwrap_or(Duration::from_secs(30));
                        tracing::error!(error = %err, kind = fault.kind, attempts = fault.attempts, events = size, retry_in_ms = delay.as_millis() as u64, "writing a batch failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        };
        match &self.commits {
            Some(runtime) => {
                let task = runtime.spawn(commit.in_current_span());
                Box::pin(async move {
                    match task.await {
                        Ok(committed) => Some(committed),
                        // A panicking commit dies in the writer's task: the supervisor sees it.
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        // The commit runtime stopped under it (only at shutdown).
                        Err(err) => {
                            tracing::warn!(error = %err, "a commit was cancelled; the range sync re-reads it at the next start");
                            None
                        }
                    }
                })
            }
            None => Box::pin(async move { Some(commit.await) }),
        }
    }
}

/// The outcome of the commit in flight; never resolves when there is none.
async fn finish(inflight: &mut Option<InFlight>) -> Option<Committed> {
    match inflight {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

/// Appends `range` to a batch's canonical ranges. A later range of the same chain supersedes an
/// earlier one from its first height up (a re-read after a reorg): the earlier one is cut short,
/// so that the batch does not first remove the replacements it inserts and then restore them.
fn add_canonical(ranges: &mut Vec<Canonical>, range: Canonical) {
    for earlier in ranges.iter_mut().filter(|r| r.chain == range.chain) {
        if earlier.first >= range.first {
            earlier.hashes.clear();
        } else {
            let keep = usize::try_from(range.first - earlier.first).unwrap_or(usize::MAX);
            earlier.hashes.truncate(keep);
        }
    }
    ranges.retain(|r| !r.hashes.is_empty());
    ranges.push(range);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `EVENTS_STORED` by chain and kind: one counter update per label set and batch, not per event.
fn count_stored(committed: &Committed, tallies: &Tallies) {
    let mut counts: Vec<(&ChainName, EventKind, u64)> = Vec::new();
    for stored in &committed.inserted {
        let (chain, kind) = (&stored.event.chain, stored.event.kind());
        match counts
            .iter_mut()
            .find(|(c, k, _)| *c == chain && *k == kind)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((chain, kind, 1)),
        }
    }
    for (chain, kind, n) in counts {
        metrics::counter!(m::EVENTS_STORED, "chain" => chain.to_string(), "kind" => kind.as_str())
            .increment(n);
        if let Some(tally) = tallies.get(chain) {
            tally.add(kind, n);
        }
    }
    let mut removed: Vec<(&ChainName, u64)> = Vec::new();
    for r in committed.retractions.iter().filter(|r| !r.restored) {
        match removed.iter_mut().find(|(c, _)| *c == &r.event.event.chain) {
            Some((_, n)) => *n += 1,
            None => removed.push((&r.event.event.chain, 1)),
        }
    }
    for (chain, n) in removed {
        metrics::counter!(m::EVENTS_REMOVED, "chain" => chain.to_string()).increment(n);
        if let Some(tally) = tallies.get(chain) {
            tally.add_removed(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;

    use super::*;
    use crate::domain::provider_bit;

    fn range(chain: &str, first: u64, n: u8, tag: u8) -> Canonical {
        Canonical {
            chain: ChainName::from(chain),
            first,
            hashes: (0..n).map(|i| B256::repeat_byte(tag ^ i)).collect(),
        }
    }

    fn block_event(chain: &str, n: u64) -> WriterInput {
        WriterInput::Events(vec![NewEvent {
            event: crate::domain::Event {
                chain: ChainName::from(chain),
                block: crate::domain::BlockRef {
                    number: n,
                    hash: B256::with_last_byte(n as u8),
                    parent_hash: B256::ZERO,
                },
                block_timestamp: n,
                log: None,
            },
            provider: "p".into(),
            received_at_ms: 0,
            providers_mask: 1,
        }])
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_commits_without_lingering_once_each_of_its_chains_is_quiet() {
        let mut pending = Pending::default();
        pending.add(WriterInput::Quiet(ChainName::from("a")));
        assert!(pending.is_empty(), "a cue opens no batch");

        pending.add(block_event("a", 1));
        pending.add(block_event("b", 1));
        assert!(
            !pending.is_due(false),
            "both chains may have more of block 1"
        );
        pending.add(WriterInput::Quiet(ChainName::from("a")));
        assert!(!pending.is_due(false), "chain b may still have more");
        pending.add(WriterInput::Quiet(ChainName::from("b")));
        assert!(pending.is_due(false), "every chain's block is complete");

        // A later event of a quiet chain unsettles it again.
        pending.add(block_event("a", 2));
        assert!(!pending.is_due(false));
        // The linger still bounds the wait when no cue comes.
        tokio::time::advance(FLUSH_INTERVAL).await;
        assert!(pending.is_due(false));
    }

    #[tokio::test(start_paused = true)]
    async fn late_copies_alone_wait_for_the_next_block_to_ride_along() {
        let mut pending = Pending::default();
        pending.add(WriterInput::Seen(vec![Redelivery {
            chain: ChainName::from("a"),
            key: EventKey {
                block_hash: B256::ZERO,
                log_index: None,
            },
            block_number: 1,
            providers_mask: provider_bit(1),
        }]));
        pending.add(WriterInput::Quiet(ChainName::from("a")));
        tokio::time::advance(FLUSH_INTERVAL * 5).await;
        assert!(
            !pending.is_due(false),
            "nothing new to deliver: ride with the next block"
        );
        // The next block's first events: the linger counts from them, not from the copies.
        pending.add(block_event("a", 2));
        assert!(!pending.is_due(false), "block 2 may have more");
        tokio::time::advance(FLUSH_INTERVAL).await;
        assert!(pending.is_due(false));

        // No block comes: the copies go alone, in the end.
        let mut alone = Pending::default();
        alone.add(WriterInput::Seen(Vec::from([Redelivery {
            chain: ChainName::from("a"),
            key: EventKey {
                block_hash: B256::ZERO,
                log_index: None,
            },
            block_number: 1,
            providers_mask: provider_bit(2),
        }])));
        tokio::time::advance(RIDE_ALONG).await;
        assert!(alone.is_due(false));
    }

    #[test]
    fn a_later_canonical_range_supersedes_the_overlap_of_earlier_ones() {
        let mut ranges = Vec::new();
        add_canonical(&mut ranges, range("a", 10, 5, 0x10)); // 10..=14
        add_canonical(&mut ranges, range("b", 10, 5, 0x20)); // another chain: untouched
        add_canonical(&mut ranges, range("a", 15, 3, 0x30)); // 15..=17: no overlap
        add_canonical(&mut ranges, range("a", 12, 2, 0x40)); // a reorg re-read of 12..=13
        let spans: Vec<(&str, u64, usize)> = ranges
            .iter()
            .map(|r| (&*r.chain, r.first, r.hashes.len()))
            .collect();
        assert_eq!(spans, [("a", 10, 2), ("b", 10, 5), ("a", 12, 2)]);
        add_canonical(&mut ranges, range("a", 5, 1, 0x50)); // below everything: replaces all
        let spans: Vec<(&str, u64)> = ranges.iter().map(|r| (&*r.chain, r.first)).collect();
        assert_eq!(spans, [("b", 10), ("a", 5)]);
    }
}
