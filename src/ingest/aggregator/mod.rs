//! One aggregator per chain: the single owner of the chain's ingest state.
//!
//! It drops copies through the hot set, joins logs to their block (a log row carries its
//! block's parent hash and timestamp), keeps the best head, and forwards first copies, repeat
//! deliveries and checkpoints to the writer in the order it decided them — so a checkpoint
//! always reaches the writer after the events it covers. It also remembers, per recent block,
//! which events it sent ([`Forwarded`]): the range sync's re-read of what the live stream
//! delivered, and a copy from a provider so far behind that the hot set forgot the event, then
//! cost no parse and no write.
//!
//! This file is the actor: its state and the loop over live deliveries and ranges.
//! `joins.rs` joins logs to their headers, `sightings.rs` decides first copies (hot set, race
//! bookkeeping), `canonical.rs` holds what the range sync proved (orphans, reorg hints), and
//! `outbox.rs` hands the decisions to the writer.

mod canonical;
mod joins;
mod outbox;
mod sightings;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use lru::LruCache;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::bursts::Bursts;
use super::dedupe::{HotSet, Retired};
use super::forwarded::Forwarded;
use super::merge::Inputs;
use super::providers::ProviderSet;
use super::race::RaceBoard;
use super::writer::WriterInput;
use super::{ChainInput, Live, LiveItem, RangeData};
use crate::domain::ChainName;
use crate::provider::decode::Head;
use crate::store::{Canonical, Checkpoint, NewEvent, Redelivery};
use crate::telemetry::metrics as m;
use joins::ParkedLog;
use outbox::Closed;
pub use outbox::OUTBOX;

/// Recent headers kept to join logs to their block.
const HEADER_CACHE: usize = 4096;
/// Blocks whose forwarded events are remembered, so the range sync's re-read of them costs no
/// write (a few bytes per block; about six seconds of a devnet in throughput mode).
const FORWARDED_BLOCKS: usize = 8192;
/// Writer inputs queued ahead of a range at most: two full batches of events
/// ([`super::writer::MAX_BATCH`] in [`OUTBOX`]-sized inputs), enough to keep the writer busy.
const QUEUED_BEFORE_RANGE: usize = 2 * super::writer::MAX_BATCH / OUTBOX;

pub struct Aggregator {
    chain: ChainName,
    providers: ProviderSet,
    hot: HotSet,
    headers: LruCache<B256, Head>,
    forwarded: Forwarded,
    parked: HashMap<B256, Vec<ParkedLog>>,
    parked_count: usize,
    best_head: watch::Sender<u64>,
    writer: mpsc::Sender<WriterInput>,
    retired: Vec<Retired>,
    race: Arc<RaceBoard>,
    /// Whether the input being handled is a live delivery (not the range sync's re-read).
    live: bool,
    meters: Meters,
    /// The canonical hash of recent checkpointed heights, and the checkpoint they lead to.
    canonical: BTreeMap<u64, B256>,
    checkpoint: Option<u64>,
    /// The lowest height a provider suggested was reorganised below the checkpoint (a live
    /// head there with another hash, a `removed: true` log): the range sync checks it.
    reorg_hint: Option<mpsc::Sender<u64>>,
    /// When the writer need not wait for more of the newest block.
    bursts: Bursts,
    /// First copies and late copies decided while handling the current input, sent to the
    /// writer together at its end (or every [`OUTBOX`]): one hand-over per block, not per event.
    events: Vec<NewEvent>,
    copies: Vec<Redelivery>,
}

/// The chain's metric handles, resolved once: a lookup by name and labels per message would
/// cost more than the dedupe itself.
struct Meters {
    hits: metrics::Counter,
    misses: metrics::Counter,
    deduplicated: metrics::Counter,
    evictions: metrics::Counter,
    cache_size: metrics::Gauge,
    head: metrics::Gauge,
    orphans: metrics::Counter,
    /// Time to handle one input, a live block's worth or a range.
    live_time: metrics::Histogram,
    range_time: metrics::Histogram,
}

impl Meters {
    fn new(chain: &ChainName) -> Meters {
        let label = || [("chain", chain.to_string())];
        Meters {
            hits: metrics::counter!(m::CACHE_HITS, &label()),
            misses: metrics::counter!(m::CACHE_MISSES, &label()),
            deduplicated: metrics::counter!(m::EVENTS_DEDUPLICATED, &label()),
            evictions: metrics::counter!(m::CACHE_EVICTIONS, &label()),
            cache_size: metrics::gauge!(m::CACHE_SIZE, &label()),
            head: metrics::gauge!(m::CHAIN_HEAD, &label()),
            orphans: metrics::counter!(m::ORPHANS_DROPPED, &label()),
            live_time: metrics::histogram!(m::AGGREGATION_DURATION, "chain" => chain.to_string(), "input" => "live"),
            range_time: metrics::histogram!(m::AGGREGATION_DURATION, "chain" => chain.to_string(), "input" => "range"),
        }
    }
}

impl Aggregator {
    pub fn new(
        chain: ChainName,
        providers: ProviderSet,
        max_cache_size: NonZeroUsize,
        window: Duration,
        best_head: watch::Sender<u64>,
        writer: mpsc::Sender<WriterInput>,
        race: Arc<RaceBoard>,
    ) -> Aggregator {
        Aggregator {
            meters: Meters::new(&chain),
            chain,
            providers,
            hot: HotSet::new(max_cache_size, window),
            headers: LruCache::new(NonZeroUsize::new(HEADER_CACHE).unwrap_or(NonZeroUsize::MIN)),
            forwarded: Forwarded::new(
                NonZeroUsize::new(FORWARDED_BLOCKS).unwrap_or(NonZeroUsize::MIN),
            ),
            parked: HashMap::new(),
            parked_count: 0,
            best_head,
            writer,
            retired: Vec::new(),
            race,
            live: true,
            canonical: BTreeMap::new(),
            checkpoint: None,
            reorg_hint: None,
            bursts: Bursts::default(),
            events: Vec::new(),
            copies: Vec::new(),
        }
    }

    /// Where the aggregator reports suspected reorgs below the checkpoint (see [`super::sync`]).
    pub fn with_reorg_hint(mut self, hint: mpsc::Sender<u64>) -> Aggregator {
        self.reorg_hint = Some(hint);
        self
    }

    /// Runs until every input sender is gone or `shutdown` fires. Returns when the writer is
    /// gone too (nothing left to do).
    pub async fn run(mut self, mut input: Inputs, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = input.recv() => next,
            };
            let Some(next) = next else { break };
            if self.handle(next).await.is_err() {
                break; // writer gone
            }
        }
        tracing::debug!(chain = %self.chain, "aggregator stopped");
    }

    async fn handle(&mut self, input: ChainInput) -> Result<(), Closed> {
        let started = std::time::Instant::now();
        let timer = match input {
            ChainInput::Live(live) => {
                self.on_live(live).await?;
                &self.meters.live_time
            }
            ChainInput::Range(range) => {
                self.live = false;
                self.on_range(range).await?;
                &self.meters.range_time
            }
        };
        timer.record(started.elapsed().as_secs_f64());
        self.flush().await?;
        self.meters.cache_size.set(self.hot.len() as f64);
        Ok(())
    }

    async fn on_live(&mut self, live: Live) -> Result<(), Closed> {
        self.live = true;
        let Live {
            provider,
            block,
            items,
            burst_end,
        } = live;
        let last_at = items.last().map(|item| match item {
            LiveItem::Head { at, .. } | LiveItem::Log { at, .. } => *at,
        });
        for item in items {
            match item {
                LiveItem::Head { head, at } => {
                    if !self.is_orphan_head(&head) {
                        self.on_head(provider, *head, at).await?
                    }
                }
                LiveItem::Log { key, raw, at } => {
                    if !key.removed && self.is_orphan(key.block_number, key.block_hash) {
                        self.meters.orphans.increment(1);
                    } else {
                        self.on_log(provider, key, raw, at).await?
                    }
                }
            }
        }
        if let Some(at) = last_at
            && self.bursts.delivered(provider, block, burst_end, at)
        {
            self.send(WriterInput::Quiet(self.chain.clone())).await?;
        }
        Ok(())
    }

    async fn on_range(&mut self, range: RangeData) -> Result<(), Closed> {
        self.writer_room().await;
        let now = Instant::now();
        let RangeData {
            provider,
            heads,
            logs,
            last,
            first,
            hashes,
            safe,
            finalized,
            bytes: _,
        } = range;
        self.remember_canonical(first, &hashes, last.number);
        // What the live stream already sent the writer is skipped: the writer commits it before
        // the checkpoint below, and a copy would only cost a parse and an upsert.
        for head in heads {
            if self.forwarded.has_header(&head.block.hash) {
                let hash = head.block.hash;
                self.headers.put(hash, head);
                self.release(hash).await?;
            } else {
                self.on_head(provider, head, now).await?;
            }
        }
        for (key, raw) in logs {
            if !self.forwarded.has_log(&key.block_hash, key.log_index) {
                self.on_log(provider, key, raw, now).await?;
            }
        }
        // After the range's events: the writer applies it after every insert of its batch.
        self.send(WriterInput::Canonical(Canonical {
            chain: self.chain.clone(),
            first,
            hashes,
        }))
        .await?;
        let checkpoint = Checkpoint {
            chain: self.chain.clone(),
            block_number: last.number,
            block_hash: last.hash,
            safe_block: safe,
            finalized_block: finalized,
        };
        self.send(WriterInput::Checkpoint(checkpoint)).await
    }
}

impl Aggregator {
    /// Waits until the writer has at most [`QUEUED_BEFORE_RANGE`] inputs queued (or is gone).
    /// A backfill hands on ranges faster than they commit; without this wait the writer's
    /// queue would fill to its bound with range events, memory that buys no speed.
    async fn writer_room(&self) {
        let room = self
            .writer
            .max_capacity()
            .saturating_sub(QUEUED_BEFORE_RANGE);
        while self.writer.capacity() < room && !self.writer.is_closed() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
