//! The pipeline: the writer and, per chain, the aggregator and the range sync — the parts that
//! hold uncommitted state between them (a writer's open batch, an aggregator's record of what
//! it sent, a range handed on but not yet checkpointed).
//!
//! They run as one supervised process (`pipeline/ingest`, critical) and restart together: if
//! one part dies, the others are aborted, and the next run starts every part afresh from what
//! is committed — each range sync from its chain's committed checkpoint, the aggregators with
//! empty memories. Restarting a part alone could lose events: a new writer would commit a
//! checkpoint that an aborted batch's events never reached, a new aggregator's range sync would
//! not re-read what the old one dropped. Dropping everything uncommitted is always safe, since
//! the range sync re-reads every block after the checkpoint. The listeners are separate
//! processes: they hold nothing uncommitted, and their queues are lent to each run (see
//! [`merge::Inputs::lend`]), so they keep their connections through a pipeline restart.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use alloy_primitives::B256;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::aggregator::Aggregator;
use super::filters::ChainFilters;
use super::merge::{self, Inputs};
use super::providers::ProviderSet;
use super::race::RaceBoard;
use super::sync::{RangeSync, ReorgLog, SyncProgress};
use super::tally::StoredTally;
use super::writer::{Writer, WriterInput};
use super::{REORG_HINTS, SYNC_QUEUE, WRITER_QUEUE, sync};
use crate::domain::{BlockRef, ChainName};
use crate::registry::TaskError;
use crate::registry::supervisor::panic_message;
use crate::store::{Committed, Store, StoreError};

/// The committed checkpoint of `chain` and the canonical hashes stored up to it (what a reorg
/// found at start is compared with).
async fn committed(
    store: &Store,
    chain: &str,
) -> Result<(Option<BlockRef>, Vec<(u64, B256)>), StoreError> {
    let Some(cp) = store.checkpoint(chain).await? else {
        return Ok((None, Vec::new()));
    };
    let window = sync::reorg::WINDOW as u64;
    let recent = store
        .canonical_blocks(
            chain,
            cp.block_number.saturating_sub(window - 1),
            cp.block_number,
        )
        .await?;
    let checkpoint = BlockRef {
        number: cp.block_number,
        hash: cp.block_hash,
        parent_hash: B256::ZERO,
    };
    Ok((Some(checkpoint), recent))
}

/// How long a run waits for the previous one to give the listener queues back.
const LEND_ATTEMPTS: u32 = 100;
const LEND_RETRY: Duration = Duration::from_millis(10);

/// What every run of the pipeline needs of one chain; made once at start.
pub struct ChainParts {
    pub name: ChainName,
    pub providers: ProviderSet,
    pub filters: ChainFilters,
    pub start_block: Option<u64>,
    pub listener_queues: merge::Home,
    pub best_head: watch::Sender<u64>,
    pub progress: watch::Sender<SyncProgress>,
    pub reorgs: ReorgLog,
    /// What the writer committed of this chain since start.
    pub stored: Arc<StoredTally>,
    pub race: Arc<RaceBoard>,
    pub cache_capacity: NonZeroUsize,
    pub dedupe_window: Duration,
    /// Depth at which a block counts as final when the node has no `safe`/`finalized` tags.
    pub confirmations: u64,
}

pub struct Pipeline {
    pub store: Store,
    pub ready: Arc<super::disk::WriterState>,
    pub committed: broadcast::Sender<Arc<Committed>>,
    pub chains: Vec<ChainParts>,
    /// Where the writer's commits run (see [`super::commits`]); `None`: in its own task.
    pub commits: Option<tokio::runtime::Handle>,
}

/// The running parts, each named for the error that reports its death.
struct Parts {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

impl Parts {
    fn spawn(
        &mut self,
        name: String,
        part: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let id = self.set.spawn(part).id();
        self.names.insert(id, name);
    }

    fn name(&self, id: tokio::task::Id) -> &str {
        self.names.get(&id).map_or("a part", String::as_str)
    }

    /// Waits for `shutdown` (then stops every part through `stop` and waits for each) or for a
    /// part to end first (then aborts the rest and reports which one died, and how).
    async fn wait(
        mut self,
        shutdown: &CancellationToken,
        stop: CancellationToken,
    ) -> Result<(), TaskError> {
        let ended = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            ended = self.set.join_next_with_id() => ended,
        };
        if shutdown.is_cancelled() {
            stop.cancel();
            while self.set.join_next().await.is_some() {}
            return Ok(());
        }
        let why = match ended {
            Some(Ok((id, ()))) => format!("{} stopped on its own", self.name(id)),
            Some(Err(err)) => died(self.name(err.id()).to_owned(), err),
            None => "no part was running".into(),
        };
        tracing::error!(error = %why, "an ingest pipeline part died; restarting the pipeline from the committed checkpoints");
        self.abort(why).await
    }

    /// Aborts every part and waits until each is gone (and has given back what it borrowed).
    async fn abort(mut self, why: String) -> Result<(), TaskError> {
        self.set.shutdown().await;
        Err(TaskError::new(why))
    }
}

impl Pipeline {
    /// One run: starts every part, then waits for `shutdown` (a clean stop: the aggregators
    /// and range syncs stop, the writer commits what they sent and stops when its input
    /// closes) or for a part to end first (a death: every part is aborted, the supervisor
    /// restarts the pipeline).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), TaskError> {
        let mut parts = Parts {
            set: JoinSet::new(),
            names: HashMap::new(),
        };
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let tallies = self
            .chains
            .iter()
            .map(|c| (c.name.clone(), c.stored.clone()))
            .collect();
        let writer = Writer::new(
            self.store.clone(),
            self.ready.clone(),
            self.committed.clone(),
            self.commits.clone(),
        )
        .with_tallies(Arc::new(tallies));
        parts.spawn("the writer".into(), writer.run(writer_rx));
        let stop = shutdown.child_token();
        for chain in &self.chains {
            if let Err(why) = self.start_chain(chain, &mut parts, &writer_tx, &stop).await {
                return parts.abort(why).await;
            }
        }
        // The aggregators hold the only senders: the writer's input closes when they stop.
        drop(writer_tx);
        parts.wait(&shutdown, stop).await
    }

    /// Starts the aggregator and the range sync of `chain` from what is committed; the error
    /// says why they could not start.
    async fn start_chain(
        &self,
        chain: &ChainParts,
        parts: &mut Parts,
        writer_tx: &mpsc::Sender<WriterInput>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let (checkpoint, recent) = committed(&self.store, &chain.name)
            .await
            .map_err(|err| format!("reading the checkpoint of {}: {err}", chain.name))?;
        let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE);
        let Some(inputs) = lend(&chain.listener_queues, sync_rx).await else {
            return Err(format!(
                "the listener queues of {} are still in use",
                chain.name
            ));
        };
        let (hint_tx, hint_rx) = mpsc::channel(REORG_HINTS);
        let aggregator = Aggregator::new(
            chain.name.clone(),
            chain.providers.clone(),
            chain.cache_capacity,
            chain.dedupe_window,
            chain.best_head.clone(),
            writer_tx.clone(),
            chain.race.clone(),
        )
        .with_reorg_hint(hint_tx);
        parts.spawn(
            format!("the aggregator of {}", chain.name),
            aggregator.run(inputs, stop.clone()),
        );
        let sync = RangeSync {
            chain: chain.name.clone(),
            providers: chain.providers.clone(),
            filters: chain.filters.clone(),
            checkpoint,
            start_block: chain.start_block,
            best_head: chain.best_head.subscribe(),
            output: sync_tx,
            progress: chain.progress.clone(),
            confirmations: chain.confirmations,
            recent,
            reorg_hints: hint_rx,
            finalized: chain.progress.borrow().finalized,
            reorgs: chain.reorgs.clone(),
        };
        parts.spawn(
            format!("the range sync of {}", chain.name),
            sync.run(stop.clone()),
        );
        Ok(())
    }
}

/// The listener queues, once the previous run has given them back: at once, unless that run
/// was dropped rather than awaited (its parts then go away on their own shortly).
async fn lend(home: &merge::Home, sync: mpsc::Receiver<super::ChainInput>) -> Option<Inputs> {
    for _ in 0..LEND_ATTEMPTS {
        let back = !home
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if back {
            break;
        }
        tokio::time::sleep(LEND_RETRY).await;
    }
    Inputs::lend(home, vec![sync])
}

fn died(name: String, err: JoinError) -> String {
    if err.is_panic() {
        format!("{name} panicked: {}", panic_message(err.into_panic()))
    } else {
        format!("{name} was cancelled")
    }
}
