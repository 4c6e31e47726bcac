//! Ingestion: providers in, each event stored once, checkpoints that never lie.
//!
//! Per chain: one [`listener::Listener`] per provider with a WebSocket, one
//! [`aggregator::Aggregator`], one [`sync::RangeSync`]. Per database: one [`writer::Writer`].
//! Inputs flow through bounded channels only (one per source into the aggregator, see
//! [`merge`]), so a slow disk slows the providers' reads rather than growing memory.

pub mod aggregator;
pub mod bursts;
pub mod commits;
pub mod control;
pub mod dedupe;
pub mod disk;
pub mod filters;
pub mod forwarded;
pub mod listener;
pub mod merge;
pub mod monitor;
mod pipeline;
pub mod providers;
pub mod race;
pub mod sync;
pub mod tally;
pub mod writer;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};
use url::Url;

use crate::breaker::{Breaker, SystemClock};
use crate::config::{ChainConfig, Config};
use crate::domain::{BlockRef, ChainName, MAX_PROVIDERS, ProviderIndex};
use crate::health::{ChainHealth, Member};
use crate::provider::decode::{Head, LogKey};
use crate::provider::{ErrorRules, HttpClient};
use crate::registry::{Criticality, ProcessKey, Supervisor};
use crate::store::{Committed, Store};
use crate::telemetry::metrics as m;
use filters::ChainFilters;
use providers::{ChainProvider, ProviderSet};
pub use sync::{ReorgLog, ReorgNote, SyncProgress};

/// What a chain's aggregator receives.
#[derive(Debug)]
pub enum ChainInput {
    /// What one provider's subscriptions delivered about one block, in order.
    Live(Live),
    /// A complete, consistent range from the range sync.
    Range(RangeData),
}

/// Consecutive notifications of one provider about the same block: a listener splits each
/// burst it reads ([`crate::provider::Burst`]) at block boundaries, so the aggregator's inputs
/// can still be taken lowest block first ([`merge`]) while costing one hand-over per block.
#[derive(Debug)]
pub struct Live {
    pub provider: ProviderIndex,
    pub block: u64,
    pub items: Vec<LiveItem>,
    /// The provider's burst ends with the last item ([`crate::provider::Notification::burst_end`]).
    pub burst_end: bool,
}

/// One notification, read only as far as routing needs.
#[derive(Debug)]
pub enum LiveItem {
    /// A `newHeads` notification (boxed: the logs bloom alone is 256 bytes, and every item is
    /// as large as the largest variant).
    Head { head: Box<Head>, at: Instant },
    /// A `logs` notification: its identity read, the rest still raw.
    Log {
        key: LogKey,
        raw: Box<RawValue>,
        at: Instant,
    },
}

/// Every block of a range and every matching log, checked to fit together.
#[derive(Debug)]
pub struct RangeData {
    pub provider: ProviderIndex,
    pub heads: Vec<Head>,
    pub logs: Vec<(LogKey, Box<RawValue>)>,
    pub last: BlockRef,
    /// The canonical block hash at each height `first..=last.number`, as the answering node
    /// linked them: every other event stored at those heights is an orphan.
    pub first: u64,
    pub hashes: Vec<alloy_primitives::B256>,
    /// How far the chain is settled, at most `last.number`: the node's `safe` / `finalized`
    /// tags read in the same batch, else `confirmations` below the head.
    pub safe: Option<u64>,
    pub finalized: Option<u64>,
    /// Bytes of JSON the node's answer weighed (the range sync sizes its next ranges by it).
    pub bytes: u64,
}

/// How one chain's providers are reached: configured, or an in-process devnet's endpoints.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub http_url: Url,
    pub ws_url: Option<Url>,
    pub priority: u32,
}

/// Per-chain handles the API reads.
#[derive(Debug, Clone)]
pub struct ChainHandle {
    pub name: ChainName,
    pub chain_id: u64,
    pub provider_ids: Vec<String>,
    pub best_head: watch::Receiver<u64>,
    pub progress: watch::Receiver<SyncProgress>,
    /// Each provider's breaker, head, lag, latency and error rate.
    pub health: ChainHealth,
    /// Who delivers first, late, never (`GET /v1/providers`).
    pub race: Arc<race::RaceBoard>,
    /// What the chain indexes (`GET /v1/coverage` reports each).
    pub subscriptions: Vec<crate::config::Subscription>,
    /// The providers with their clients, in failover order (the JSON-RPC gateway's).
    pub providers: providers::ProviderSet,
    /// The chain's log filters, configured and dynamic (the gateway's `eth_subscribe` adds).
    pub filters: ChainFilters,
    /// The latest reorgs the range sync walked back from.
    pub reorgs: ReorgLog,
    /// Events committed since start.
    pub stored: Arc<tally::StoredTally>,
    /// The backfill's rate and ETA, while one runs (measured by [`crate::progress`]).
    pub backfill: Arc<tally::BackfillBoard>,
    /// Each provider's listener, to start again when an operator resumes it.
    pub listeners: Arc<[listener::Listener]>,
}

/// The running pipeline.
pub struct Ingest {
    pub chains: Vec<ChainHandle>,
    /// Whether the writer commits, and the fault it waits out when not.
    pub writer: Arc<disk::WriterState>,
    /// Every committed batch, after commit (the publisher's source).
    pub committed: broadcast::Sender<Arc<Committed>>,
    /// The writer's commit thread: stopped once the store is closed ([`Ingest::stop_commits`]).
    commits: Option<commits::CommitRuntime>,
}

impl Ingest {
    /// Stops the commit thread. Call it after the store is closed: a commit or a connection
    /// still on its way back to the pool would be lost with the runtime.
    pub async fn stop_commits(&mut self) {
        if let Some(runtime) = self.commits.take() {
            runtime.stop().await;
        }
    }
}

/// HTTP deadline for provider calls made by ingest.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs (a block's notifications each, at most a burst's [`crate::provider::ws::MAX_BURST`])
/// a chain's aggregator may have queued from one listener: enough for the providers' copies of
/// the same blocks to meet (see [`merge`]).
const SOURCE_QUEUE: usize = 32;
/// Ranges the range sync may have queued for the aggregator (each up to a whole range).
const SYNC_QUEUE: usize = 2;
/// Inputs the writer may have queued (each at most [`aggregator::OUTBOX`] events or copies):
/// what arrives during a commit under full load (a block's first copies and the other
/// providers' copies of them are a message each), so the next batch is ready when a commit
/// ends; 131,072 items at most.
const WRITER_QUEUE: usize = 2048;
/// Reorg hints the aggregator may have queued for the range sync (one is enough to check).
const REORG_HINTS: usize = 8;
/// Committed batches the publisher may be behind by before it is told it lagged (each holds a
/// whole batch's events).
const COMMITTED_BACKLOG: usize = 16;

/// Starts ingestion under `supervisor`: per chain and provider a listener, per chain a race
/// board, and the pipeline (the writer, each chain's aggregator and range sync). `endpoints`
/// gives each chain's providers (the config's, or a devnet's).
pub async fn start(
    config: &Config,
    endpoints: &[(String, Vec<Endpoint>)],
    store: Store,
    supervisor: &Supervisor,
) -> anyhow::Result<Ingest> {
    let writer = Arc::new(disk::WriterState::default());
    let (committed, _) = broadcast::channel(COMMITTED_BACKLOG);

    let mut chains = Vec::new();
    let mut parts = Vec::new();
    for (name, chain) in &config.chains {
        let list = endpoints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default();
        let (handle, chain_parts) = start_chain(config, name, chain, list, &store, supervisor)
            .await
            .with_context(|| format!("starting chain {name}"))?;
        chains.push(handle);
        parts.push(chain_parts);
    }
    let commits = match commits::CommitRuntime::start() {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the commit thread; committing on the shared runtime");
            None
        }
    };
    let pipeline = Arc::new(pipeline::Pipeline {
        store,
        ready: writer.clone(),
        committed: committed.clone(),
        chains: parts,
        commits: commits.as_ref().map(commits::CommitRuntime::handle),
    });
    supervisor
        .spawn(
            ProcessKey::new("pipeline", "ingest"),
            json!({ "chains": config.chains.keys().collect::<Vec<_>>() }),
            Criticality::Critical,
            move |token| Box::pin(pipeline.clone().run(token)),
        )
        .context("starting the ingest pipeline")?;
    Ok(Ingest {
        chains,
        writer,
        committed,
        commits,
    })
}

/// Starts a chain's listeners, health monitor and race board; returns its handle and what
/// each run of the pipeline needs of it.
async fn start_chain(
    config: &Config,
    name: &str,
    chain: &ChainConfig,
    endpoints: &[Endpoint],
    store: &Store,
    supervisor: &Supervisor,
) -> anyhow::Result<(ChainHandle, pipeline::ChainParts)> {
    let chain_name: ChainName = ChainName::from(name);
    let rules = ErrorRules::new(&config.error_rules);
    let list = chain_providers(name, endpoints, &rules)?;
    // Indexed by `ProviderIndex`, i.e. configuration order.
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    m::zero_chain_series(name, &ids);
    let health = chain_health(config, name, chain, endpoints, store).await?;
    let providers = ProviderSet::new(list, health.clone());
    let (configured, start_block) = filters::log_filters(&chain.subscriptions);
    let filters = ChainFilters::new(name, configured, config.gateway.max_dynamic_filters);
    let (queues, listeners) =
        spawn_listeners(&chain_name, &providers, &filters, supervisor).await?;
    spawn_monitor(name, &providers, store, supervisor)?;
    let race = spawn_race(&chain_name, &ids, store, supervisor).await?;

    let (best_head, best_rx) = watch::channel(0u64);
    let (progress, progress_rx) = watch::channel(SyncProgress::default());
    let reorgs = ReorgLog::default();
    let stored = Arc::new(tally::StoredTally::default());
    let parts = pipeline::ChainParts {
        reorgs: reorgs.clone(),
        stored: stored.clone(),
        name: chain_name.clone(),
        providers: providers.clone(),
        filters: filters.clone(),
        start_block,
        listener_queues: Arc::new(std::sync::Mutex::new(queues)),
        best_head,
        progress,
        race: race.clone(),
        cache_capacity: NonZeroUsize::new(config.aggregation.max_cache_size)
            .unwrap_or(NonZeroUsize::MIN),
        dedupe_window: config.aggregation.deduplication_window,
        confirmations: chain.confirmations,
    };
    let handle = ChainHandle {
        subscriptions: chain.subscriptions.clone(),
        name: chain_name,
        chain_id: chain.chain_id,
        provider_ids: providers.all().iter().map(|p| p.id.clone()).collect(),
        best_head: best_rx,
        progress: progress_rx,
        health,
        race,
        providers: providers.clone(),
        filters,
        reorgs,
        stored,
        backfill: Arc::default(),
        listeners: listeners.into(),
    };
    Ok((handle, parts))
}

/// A chain's providers, numbered in configuration order, an HTTP client each.
fn chain_providers(
    name: &str,
    endpoints: &[Endpoint],
    rules: &ErrorRules,
) -> anyhow::Result<Vec<ChainProvider>> {
    let mut list = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        // A chain's providers are the bits of a mask (who delivered what, `providers_seen`).
        let index = ProviderIndex::try_from(i)
            .ok()
            .filter(|_| i < MAX_PROVIDERS)
            .with_context(|| format!("chain {name} has more than {MAX_PROVIDERS} providers"))?;
        let http = HttpClient::new(name, &endpoint.id, endpoint.http_url.clone(), HTTP_TIMEOUT)?
            .with_error_rules(rules.clone());
        list.push(ChainProvider::new(
            index,
            endpoint.id.clone(),
            http,
            endpoint.ws_url.clone(),
            endpoint.priority,
        ));
    }
    anyhow::ensure!(!list.is_empty(), "chain {name} has no provider");
    Ok(list)
}

/// The listeners of a chain's providers and their queues (which outlive every run of the
/// pipeline, see `merge::Inputs::lend`).
type Listeners = (Vec<mpsc::Receiver<ChainInput>>, Vec<listener::Listener>);

/// Starts a listener per provider. One an operator paused before the last stop starts
/// stopped, its provider paused.
async fn spawn_listeners(
    chain: &ChainName,
    providers: &ProviderSet,
    filters: &ChainFilters,
    supervisor: &Supervisor,
) -> anyhow::Result<Listeners> {
    let (mut queues, mut listeners) = (Vec::new(), Vec::new());
    for provider in providers.all() {
        let (output, queue) = mpsc::channel(SOURCE_QUEUE);
        queues.push(queue);
        let listener = listener::Listener {
            chain: chain.clone(),
            provider: provider.clone(),
            filters: filters.clone(),
            output,
            health: providers.health().clone(),
        };
        listeners.push(listener.clone());
        let key = control::listener_key(chain, &provider.id);
        if supervisor.stopped_before(&key) {
            providers
                .health()
                .set_paused(usize::from(provider.index), true);
            tracing::info!(chain = %chain, provider = %provider.id, "provider paused by an operator before the restart: it stays paused");
        }
        control::spawn_listener(supervisor, listener, false)
            .await
            .with_context(|| format!("starting the listener of {}", provider.id))?;
        if supervisor.stopped_before(&key) {
            supervisor.stop(&key);
        }
    }
    Ok((queues, listeners))
}

/// Starts the chain's health monitor.
fn spawn_monitor(
    name: &str,
    providers: &ProviderSet,
    store: &Store,
    supervisor: &Supervisor,
) -> anyhow::Result<()> {
    let monitor = monitor::Monitor {
        providers: providers.clone(),
        store: store.clone(),
    };
    supervisor
        .spawn(
            ProcessKey::new("monitor", name),
            json!({ "chain": name }),
            Criticality::Ordinary,
            move |token| {
                let monitor = monitor.clone();
                Box::pin(async move {
                    monitor.run(token).await;
                    Ok(())
                })
            },
        )
        .context("starting the health monitor")?;
    Ok(())
}

/// Starts the chain's race board (who delivers first, late, never; `ids` in [`ProviderIndex`]
/// order) from its saved statistics, and the task that saves them.
async fn spawn_race(
    chain: &ChainName,
    ids: &[String],
    store: &Store,
    supervisor: &Supervisor,
) -> anyhow::Result<Arc<race::RaceBoard>> {
    let saved = store.load_provider_stats(chain).await?;
    let race = Arc::new(race::RaceBoard::new(chain.clone(), ids, &saved));
    let flusher = (race.clone(), store.clone());
    supervisor
        .spawn(
            ProcessKey::new("race", chain.to_string()),
            json!({ "chain": chain }),
            Criticality::Ordinary,
            move |token| {
                let (race, store) = flusher.clone();
                Box::pin(async move {
                    race.run(store, token).await;
                    Ok(())
                })
            },
        )
        .context("starting the race statistics")?;
    Ok(race)
}

/// The chain's provider health, each breaker restored from the store (an open one stays open
/// until its recovery time has passed on the wall clock) or new.
async fn chain_health(
    config: &Config,
    name: &str,
    chain: &ChainConfig,
    endpoints: &[Endpoint],
    store: &Store,
) -> anyhow::Result<ChainHealth> {
    let saved = store
        .load_breakers(name)
        .await
        .with_context(|| format!("loading the breakers of chain {name}"))?;
    let members = endpoints
        .iter()
        .map(|endpoint| {
            let settings = chain
                .providers
                .iter()
                .find(|p| p.id == endpoint.id)
                .map_or(config.breaker, |p| p.breaker_or(&config.breaker));
            let breaker = match saved.iter().find(|(id, _)| *id == endpoint.id) {
                Some((_, snapshot)) => {
                    tracing::info!(chain = %name, provider = %endpoint.id, state = %snapshot.state, consecutive_failures = snapshot.consecutive_failures, "breaker restored");
                    Breaker::restore(settings, *snapshot, &SystemClock)
                }
                None => Breaker::new(settings),
            };
            Member {
                id: endpoint.id.clone(),
                priority: endpoint.priority,
                breaker,
            }
        })
        .collect();
    Ok(ChainHealth::new(
        ChainName::from(name),
        config.health,
        Arc::new(SystemClock),
        members,
    ))
}
