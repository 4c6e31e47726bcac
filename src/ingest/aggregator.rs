//! One aggregator per chain: the single owner of the chain's ingest state.
//!
//! It drops copies through the hot set, joins logs to their block (a log row carries its
//! block's parent hash and timestamp), keeps the best head, and forwards first copies, repeat
//! deliveries and checkpoints to the writer in the order it decided them — so a checkpoint
//! always reaches the writer after the events it covers. It also remembers, per recent block,
//! which events it sent ([`Forwarded`]): the range sync's re-read of what the live stream
//! delivered, and a copy from a provider so far behind that the hot set forgot the event, then
//! cost no parse and no write.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use lru::LruCache;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::bursts::Bursts;
use super::dedupe::{HotSet, Retired, Sighting};
use super::forwarded::Forwarded;
use super::merge::Inputs;
use super::providers::ProviderSet;
use super::race::RaceBoard;
use super::writer::WriterInput;
use super::{ChainInput, Live, LiveItem, RangeData};
use crate::domain::{ChainName, Event, EventKey, ProviderIndex, provider_bit};
use crate::provider::decode::{self, Head, LogKey};
use crate::store::{Canonical, Checkpoint, NewEvent, Redelivery};
use crate::telemetry::metrics as m;

/// Recent headers kept to join logs to their block.
const HEADER_CACHE: usize = 4096;
/// Logs waiting for their block's header; past this the oldest are dropped (the range sync
/// fetches them again before the checkpoint can pass their block, so nothing is lost). Each
/// holds its raw JSON (under a kilobyte on a typical chain).
const MAX_PARKED_LOGS: usize = 16_384;
/// Blocks whose forwarded events are remembered, so the range sync's re-read of them costs no
/// write (a few bytes per block; about six seconds of a devnet in throughput mode).
const FORWARDED_BLOCKS: usize = 8192;
/// Heights whose canonical hash (as the range sync proved it) is remembered, so that a live
/// copy of an orphan at a height already checkpointed is dropped instead of stored (32 bytes
/// per height).
const CANONICAL_HEIGHTS: usize = 4096;
/// Decisions held for the writer at most before they are sent on: a block's worth usually,
/// and a large range goes in parts, so that the writer's queue bounds memory in items.
pub const OUTBOX: usize = 64;

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
        }
    }
}

struct ParkedLog {
    provider: ProviderIndex,
    key: LogKey,
    raw: Box<RawValue>,
    received_at_ms: i64,
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
        match input {
            ChainInput::Live(live) => self.on_live(live).await?,
            ChainInput::Range(range) => {
                self.live = false;
                self.on_range(range).await?;
            }
        }
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
                    if self.is_orphan(head.block.number, head.block.hash) {
                        // Stale (a provider behind a reorg), or a reorg the sync has not seen
                        // yet: it re-reads those heights once it has checked, so nothing is lost.
                        self.meters.orphans.increment(1);
                        self.hint_reorg(head.block.number);
                        continue;
                    }
                    let below = head.block.number.checked_sub(1);
                    if let Some(below) = below
                        && self.is_orphan(below, head.block.parent_hash)
                    {
                        // The first block past the checkpoint, on another branch below it.
                        self.hint_reorg(below);
                    }
                    self.on_head(provider, *head, at).await?
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
        } = range;
        // A range may start below the previous checkpoint (a re-read after a reorg): what was
        // canonical from its first height up no longer is.
        drop(self.canonical.split_off(&first));
        for (n, hash) in (first..).zip(&hashes) {
            self.canonical.insert(n, *hash);
        }
        while self.canonical.len() > CANONICAL_HEIGHTS {
            self.canonical.pop_first();
        }
        self.checkpoint = Some(last.number);
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

    /// A live event at a checkpointed height whose block is not the canonical one there.
    fn is_orphan(&self, number: u64, hash: B256) -> bool {
        self.checkpoint.is_some_and(|cp| number <= cp)
            && self.canonical.get(&number).is_some_and(|h| *h != hash)
    }

    /// Tells the range sync to check the chain at `number`. A full queue drops the hint: one
    /// already waiting makes the sync check the chain anyway.
    fn hint_reorg(&self, number: u64) {
        if let Some(hint) = &self.reorg_hint {
            let _ = hint.try_send(number);
        }
    }

    async fn on_head(
        &mut self,
        provider: ProviderIndex,
        head: Head,
        at: Instant,
    ) -> Result<(), Closed> {
        let key = EventKey {
            block_hash: head.block.hash,
            log_index: None,
        };
        let number = head.block.number;
        let (block, timestamp) = (head.block, head.timestamp);
        // Cache the header and release logs waiting for it whatever the sighting: a header
        // evicted from the cache while its key stayed hot must still unblock its logs.
        self.headers.put(head.block.hash, head);
        if !self.is_first(key, number, provider, at).await? {
            return self.release(key.block_hash).await;
        }
        self.best_head.send_if_modified(|best| {
            let higher = number > *best;
            if higher {
                *best = number;
            }
            higher
        });
        self.meters.head.set(*self.best_head.borrow() as f64);
        let event = Event {
            chain: self.chain.clone(),
            block,
            block_timestamp: timestamp,
            log: None,
        };
        let new = self.new_event(event, provider);
        self.push(new).await?;
        self.forwarded.header_sent(key.block_hash);
        self.release(key.block_hash).await
    }

    /// Stores the logs that arrived before their block's header.
    async fn release(&mut self, block_hash: B256) -> Result<(), Closed> {
        if let Some(waiting) = self.parked.remove(&block_hash) {
            self.parked_count -= waiting.len();
            for log in waiting {
                self.store_log(log).await?;
            }
        }
        Ok(())
    }

    async fn on_log(
        &mut self,
        provider: ProviderIndex,
        key: LogKey,
        raw: Box<RawValue>,
        at: Instant,
    ) -> Result<(), Closed> {
        if key.removed {
            // A provider's retraction is a hint, not the authority (Anvil never sends one): the
            // canonical ranges remove orphans. Above the checkpoint the next range does; at or
            // below it the range sync checks the chain there. The copy is not stored.
            tracing::debug!(chain = %self.chain, provider = %self.providers.id(provider), block = key.block_number, "a provider retracted a log");
            if self.checkpoint.is_some_and(|cp| key.block_number <= cp)
                && self.canonical.get(&key.block_number) == Some(&key.block_hash)
            {
                self.hint_reorg(key.block_number);
            }
            return Ok(());
        }
        let event_key = EventKey {
            block_hash: key.block_hash,
            log_index: Some(key.log_index),
        };
        if !self
            .is_first(event_key, key.block_number, provider, at)
            .await?
        {
            return Ok(());
        }
        let parked = ParkedLog {
            provider,
            key,
            raw,
            received_at_ms: now_ms(),
        };
        if self.headers.contains(&key.block_hash) {
            self.store_log(parked).await
        } else {
            self.park(parked);
            Ok(())
        }
    }

    /// Whether this delivery is the event's first; a later copy is reported to the writer (to
    /// count the delivery) unless this provider had delivered it already.
    async fn is_first(
        &mut self,
        key: EventKey,
        block_number: u64,
        provider: ProviderIndex,
        at: Instant,
    ) -> Result<bool, Closed> {
        let count = match self.observe(key, provider, at) {
            Sighting::Again { repeat, .. } => !repeat,
            // Out of the hot set, but sent already: a copy from a provider far behind the first.
            // Who delivered it before is forgotten; the writer's upsert would count it the same.
            Sighting::First if self.was_sent(&key) => true,
            Sighting::First => return Ok(true),
        };
        if count {
            self.copies.push(Redelivery {
                chain: self.chain.clone(),
                key,
                block_number,
                providers_mask: provider_bit(provider),
            });
            if self.copies.len() >= OUTBOX {
                self.flush().await?;
            }
        }
        Ok(false)
    }

    fn was_sent(&mut self, key: &EventKey) -> bool {
        match key.log_index {
            None => self.forwarded.has_header(&key.block_hash),
            Some(i) => self.forwarded.has_log(&key.block_hash, i),
        }
    }

    /// Parses the first copy of a log in full and sends it on with its block's fields.
    async fn store_log(&mut self, parked: ParkedLog) -> Result<(), Closed> {
        let event_key = EventKey {
            block_hash: parked.key.block_hash,
            log_index: Some(parked.key.log_index),
        };
        let record = match decode::log(&parked.raw) {
            Ok(record) => record,
            Err(err) => {
                // Forget the key so a well-formed copy from another provider is accepted.
                self.hot.forget(&event_key);
                metrics::counter!(m::PROVIDER_MALFORMED, "chain" => self.chain.to_string(), "provider" => self.providers.id(parked.provider).to_owned()).increment(1);
                tracing::warn!(chain = %self.chain, provider = %self.providers.id(parked.provider), error = %err, "dropping a malformed log");
                return Ok(());
            }
        };
        let Some(head) = self.headers.get(&record.block_hash) else {
            self.park(parked);
            return Ok(());
        };
        let event = Event {
            chain: self.chain.clone(),
            block: head.block,
            block_timestamp: head.timestamp,
            log: Some(record.log),
        };
        let mut new = self.new_event(event, parked.provider);
        new.received_at_ms = parked.received_at_ms;
        self.push(new).await?;
        self.forwarded
            .log_sent(event_key.block_hash, parked.key.log_index);
        Ok(())
    }

    fn park(&mut self, log: ParkedLog) {
        if self.parked_count >= MAX_PARKED_LOGS {
            // Drop a whole block's worth: its logs come back with the range sync. Forget their
            // keys so those copies are not mistaken for duplicates.
            if let Some(block) = self.parked.keys().next().copied()
                && let Some(dropped) = self.parked.remove(&block)
            {
                self.parked_count -= dropped.len();
                for d in dropped {
                    self.hot.forget(&EventKey {
                        block_hash: d.key.block_hash,
                        log_index: Some(d.key.log_index),
                    });
                }
                tracing::warn!(chain = %self.chain, "too many logs waiting for their block; dropped some to refetch");
            }
        }
        self.parked_count += 1;
        self.parked.entry(log.key.block_hash).or_default().push(log);
    }

    fn observe(&mut self, key: EventKey, provider: ProviderIndex, at: Instant) -> Sighting {
        self.retired.clear();
        let sighting = self
            .hot
            .observe(key, provider, at, self.live, &mut self.retired);
        match sighting {
            Sighting::First => {
                self.meters.misses.increment(1);
                if self.live {
                    self.race.first(provider);
                }
            }
            Sighting::Again {
                late_by,
                raced,
                repeat,
                ..
            } => {
                self.meters.hits.increment(1);
                self.meters.deduplicated.increment(1);
                if raced && !repeat {
                    self.race.late(provider, late_by);
                }
            }
        }
        if !self.retired.is_empty() {
            self.meters.evictions.increment(self.retired.len() as u64);
            for retired in self.retired.iter().filter(|r| r.raced) {
                self.race.retired(retired.delivered_mask);
            }
        }
        sighting
    }

    fn new_event(&self, event: Event, provider: ProviderIndex) -> NewEvent {
        NewEvent {
            event,
            provider: self.providers.id(provider).to_owned(),
            received_at_ms: now_ms(),
            providers_mask: provider_bit(provider),
        }
    }

    /// Queues a first copy for the writer (sent with the rest of the input's decisions).
    async fn push(&mut self, new: NewEvent) -> Result<(), Closed> {
        self.bursts.sent(new.event.block.number);
        self.events.push(new);
        if self.events.len() >= OUTBOX {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the queued first copies, then the queued late ones (whose events were sent
    /// before them, or just now).
    async fn flush(&mut self) -> Result<(), Closed> {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            self.deliver(WriterInput::Events(events)).await?;
        }
        if !self.copies.is_empty() {
            let copies = std::mem::take(&mut self.copies);
            self.deliver(WriterInput::Seen(copies)).await?;
        }
        Ok(())
    }

    /// Sends `input` after everything decided before it.
    async fn send(&mut self, input: WriterInput) -> Result<(), Closed> {
        self.flush().await?;
        self.deliver(input).await
    }

    async fn deliver(&self, input: WriterInput) -> Result<(), Closed> {
        self.writer.send(input).await.map_err(|_| Closed)
    }
}

/// The writer has stopped.
#[derive(Debug)]
struct Closed;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
