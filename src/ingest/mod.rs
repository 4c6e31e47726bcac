//! Ingestion: providers in, each event stored once, checkpoints that never lie.
//!
//! Per chain: one [`listener::Listener`] per provider with a WebSocket, one
//! [`aggregator::Aggregator`], one [`sync::RangeSync`]. Per database: one [`writer::Writer`].
//! Inputs flow through bounded channels only (one per source into the aggregator, see
//! [`merge`]), so a slow disk slows the providers' reads rather than growing memory.

pub mod aggregator;
pub mod dedupe;
pub mod filters;
pub mod forwarded;
pub mod listener;
pub mod merge;
pub mod monitor;
pub mod providers;
pub mod race;
pub mod sync;
pub mod writer;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::breaker::{Breaker, SystemClock};
use crate::config::{ChainConfig, Config};
use crate::domain::{BlockRef, ChainName};
use crate::health::{ChainHealth, Member};
use crate::provider::HttpClient;
use crate::provider::decode::{Head, LogKey};
use crate::store::{Committed, Store};
use dedupe::ProviderIndex;
use providers::{ChainProvider, ProviderSet};
pub use sync::SyncProgress;

/// What a chain's aggregator receives.
#[derive(Debug)]
pub enum ChainInput {
    /// A `newHeads` notification (boxed: the logs bloom alone is 256 bytes, and every queue
    /// slot is as large as the largest variant).
    Head {
        provider: ProviderIndex,
        head: Box<Head>,
        at: Instant,
    },
    /// A `logs` notification: its identity read, the rest still raw.
    Log {
        provider: ProviderIndex,
        key: LogKey,
        raw: Box<RawValue>,
        at: Instant,
    },
    /// A complete, consistent range from the range sync.
    Range(RangeData),
}

/// Every block of a range and every matching log, checked to fit together.
#[derive(Debug)]
pub struct RangeData {
    pub provider: ProviderIndex,
    pub heads: Vec<Head>,
    pub logs: Vec<(LogKey, Box<RawValue>)>,
    pub last: BlockRef,
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
}

/// The running pipeline.
pub struct Ingest {
    pub chains: Vec<ChainHandle>,
    /// False while the writer cannot commit.
    pub writer_ready: Arc<AtomicBool>,
    /// Every committed batch, after commit (the publisher's source).
    pub committed: broadcast::Sender<Arc<Committed>>,
}

/// HTTP deadline for provider calls made by ingest.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs a chain's aggregator may have queued from one listener: enough for the providers'
/// copies of the same blocks to meet (see [`merge`]).
const SOURCE_QUEUE: usize = 1024;
/// Ranges the range sync may have queued for the aggregator (each up to a whole range).
const SYNC_QUEUE: usize = 2;
/// Inputs the writer may have queued: a full batch of first copies and the other providers'
/// copies of them, so the next batch is ready when a commit ends.
const WRITER_QUEUE: usize = 65_536;
/// Committed batches the publisher may be behind by before it is told it lagged (each holds a
/// whole batch's events).
const COMMITTED_BACKLOG: usize = 16;

/// Starts the writer and every chain's tasks on `tracker`. `endpoints` gives each chain's
/// providers (the config's, or a devnet's).
pub async fn start(
    config: &Config,
    endpoints: &[(String, Vec<Endpoint>)],
    store: Store,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Ingest> {
    let writer_ready = Arc::new(AtomicBool::new(true));
    let (committed, _) = broadcast::channel(COMMITTED_BACKLOG);
    let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
    let writer = writer::Writer::new(store.clone(), writer_ready.clone(), committed.clone());
    tracker.spawn(writer.run(writer_rx));

    let mut chains = Vec::new();
    for (name, chain) in &config.chains {
        let list = endpoints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default();
        let handle = start_chain(
            config,
            name,
            chain,
            list,
            &store,
            writer_tx.clone(),
            tracker,
            &shutdown,
        )
        .await
        .with_context(|| format!("starting chain {name}"))?;
        chains.push(handle);
    }
    Ok(Ingest {
        chains,
        writer_ready,
        committed,
    })
}

#[allow(clippy::too_many_arguments)]
async fn start_chain(
    config: &Config,
    name: &str,
    chain: &ChainConfig,
    endpoints: &[Endpoint],
    store: &Store,
    writer: mpsc::Sender<writer::WriterInput>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<ChainHandle> {
    let chain_name: ChainName = ChainName::from(name);
    let mut list = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        // A chain's providers are the bits of a u64 (who delivered what, `providers_seen`).
        let index = ProviderIndex::try_from(i)
            .ok()
            .filter(|i| *i < 64)
            .with_context(|| format!("chain {name} has more than 64 providers"))?;
        let http = HttpClient::new(name, &endpoint.id, endpoint.http_url.clone(), HTTP_TIMEOUT)?;
        list.push(ChainProvider {
            index,
            id: endpoint.id.clone(),
            http,
            ws_url: endpoint.ws_url.clone(),
            priority: endpoint.priority,
            batches: Arc::new(AtomicBool::new(true)),
        });
    }
    anyhow::ensure!(!list.is_empty(), "chain {name} has no provider");
    let health = chain_health(config, name, chain, endpoints, store).await?;
    let providers = ProviderSet::new(list, health.clone());
    let (filters, start_block) = filters::log_filters(&chain.subscriptions);
    let mut queues = Vec::new();
    let mut source = |capacity| {
        let (tx, rx) = mpsc::channel(capacity);
        queues.push(rx);
        tx
    };
    let listener_inputs: Vec<_> = providers
        .all()
        .iter()
        .map(|_| source(SOURCE_QUEUE))
        .collect();
    let sync_input = source(SYNC_QUEUE);
    let (best_tx, best_rx) = watch::channel(0u64);
    let (progress_tx, progress_rx) = watch::channel(SyncProgress::default());

    // Indexed by `ProviderIndex`, i.e. configuration order.
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    let saved = store.load_provider_stats(name).await?;
    let race = Arc::new(race::RaceBoard::new(chain_name.clone(), &ids, &saved));
    tracker.spawn(race.clone().run(store.clone(), shutdown.child_token()));

    let capacity =
        NonZeroUsize::new(config.aggregation.max_cache_size).unwrap_or(NonZeroUsize::MIN);
    let aggregator = aggregator::Aggregator::new(
        chain_name.clone(),
        providers.clone(),
        capacity,
        config.aggregation.deduplication_window,
        best_tx,
        writer,
        race.clone(),
    );
    tracker.spawn(aggregator.run(merge::Inputs::new(queues), shutdown.child_token()));

    for (provider, output) in providers.all().iter().zip(listener_inputs) {
        let listener = listener::Listener {
            chain: chain_name.clone(),
            provider: provider.clone(),
            filters: filters.clone(),
            output,
            health: health.clone(),
        };
        tracker.spawn(listener.run(shutdown.child_token()));
    }
    let monitor = monitor::Monitor {
        providers: providers.clone(),
        store: store.clone(),
    };
    tracker.spawn(monitor.run(shutdown.child_token()));

    let checkpoint = store.checkpoint(name).await?.map(|cp| BlockRef {
        number: cp.block_number,
        hash: cp.block_hash,
        parent_hash: alloy_primitives::B256::ZERO,
    });
    let sync = sync::RangeSync {
        chain: chain_name.clone(),
        providers: providers.clone(),
        filters,
        checkpoint,
        start_block,
        best_head: best_rx.clone(),
        output: sync_input,
        progress: progress_tx,
    };
    tracker.spawn(sync.run(shutdown.child_token()));

    Ok(ChainHandle {
        name: chain_name,
        chain_id: chain.chain_id,
        provider_ids: providers.all().iter().map(|p| p.id.clone()).collect(),
        best_head: best_rx,
        progress: progress_rx,
        health,
        race,
    })
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
