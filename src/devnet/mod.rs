//! The devnet: a simulated Ethereum chain served as JSON-RPC 2.0 over HTTP and WebSocket on
//! 127.0.0.1, with several provider ports sharing one deterministic chain and each port
//! carrying its own runtime-toggled faults.
//!
//! Layout:
//! - `config`: [`DevnetConfig`], start-up errors, [`ProviderEndpoint`].
//! - `block`: pure generation of each version of each height from `(seed, chain_id)`,
//!   including what a reorg carries over; `blockdata`: one block and its JSON.
//! - `schedule`: which version of each height is canonical (automatic reorgs as arithmetic,
//!   manual ones as a capped list) and how deep the `safe`/`finalized` tags sit.
//! - `chain`: the head, the high-water mark, a bounded cache of recent blocks.
//! - `state`: what the producer and the connections share (per-provider registries, counts).
//! - `producer`: advances the head, wakes every connection (timed or throughput mode).
//! - `server`: axum per port, `POST /` and the WebSocket upgrade; `listener`: the accept loop
//!   and per-socket wrapper that refuse connections; `connection`: one WebSocket.
//! - `feed`: what one connection has delivered and must deliver next; spots reorgs.
//! - `rpc`: JSON-RPC framing and errors; `methods`: the methods and their parameters.
//! - `subscriptions`: one connection's subscriptions and notification rendering.
//! - `faults`: per-provider fault knobs; `garbage`: the malformed frames one of them sends.
//!
//! Architecture invariants:
//! - Block content is a pure function of `(seed, chain_id, n, branch)`, and the canonical
//!   branch of a height a function of the schedule and a little state: ports, runs and
//!   processes agree byte for byte, and memory does not grow with the chain's length.
//! - No reorg rewrites a block that was ever reported `safe` (or `finalized`).
//! - The producer never touches a socket; it only fills bounded per-connection queues. A
//!   connection reads blocks from the chain itself, so whatever it skipped or held back (a
//!   stall, a lag) it catches up on in chain order, and a reorg it sees is always complete.
//! - Every task is tracked and ends when the devnet's cancellation token is cancelled.

mod block;
mod blockdata;
mod chain;
mod config;
mod connection;
mod faults;
mod feed;
mod garbage;
mod listener;
mod methods;
mod producer;
mod rpc;
mod rpc_error;
mod schedule;
mod server;
mod state;
mod subscriptions;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_rpc_types_eth::{Block, Log};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use block::GENESIS_TIMESTAMP;
pub use config::{DevnetConfig, DevnetError, ProviderEndpoint};
pub use faults::{Faults, GarbageKind, MAX_STALL_HOLD};
pub use methods::{MAX_LOGS_BLOCK_RANGE, MAX_LOGS_RESULTS};
pub use rpc::{MAX_BATCH_LEN, MAX_REQUEST_BYTES};
pub use schedule::{FINALIZED_DEPTH, MAX_MANUAL_REORGS, MAX_REORG_DEPTH, SAFE_DEPTH};
pub use subscriptions::MAX_SUBSCRIPTIONS_PER_CONNECTION;

use self::block::ChainSpec;
use self::chain::Chain;
use self::methods::Ctx;
use self::schedule::{Finality, Schedule};
use self::state::{Mode, Shared};

/// Most provider ports one devnet serves.
pub const MAX_PROVIDERS: usize = 64;
/// Most logs per block (bounds the memory of one block and of the cache).
pub const MAX_LOGS_PER_BLOCK: usize = 10_000;

/// A running devnet: a cheap handle (clone freely). It stops when the token given to
/// [`Devnet::start`] is cancelled, or on [`Devnet::shutdown`]; await [`Devnet::stopped`].
#[derive(Clone)]
pub struct Devnet {
    inner: Arc<Inner>,
}

struct Inner {
    config: DevnetConfig,
    shared: Arc<Shared>,
    endpoints: Vec<ProviderEndpoint>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for Devnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devnet")
            .field("endpoints", &self.inner.endpoints)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Devnet {
    /// Binds every provider port, then starts the servers and the producer. A bind failure
    /// leaves nothing running.
    pub async fn start(
        config: DevnetConfig,
        shutdown: CancellationToken,
    ) -> Result<Devnet, DevnetError> {
        config.validate()?;
        let mut listeners = Vec::with_capacity(config.providers);
        let mut endpoints = Vec::with_capacity(config.providers);
        for index in 0..config.providers {
            let addr = config.provider_addr(index);
            let bind_error = |source| DevnetError::Bind {
                provider: index,
                addr,
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            endpoints.push(ProviderEndpoint {
                index,
                http_url: format!("http://{local}"),
                ws_url: format!("ws://{local}"),
                addr: local,
            });
            listeners.push(listener);
        }

        let mode = match config.block_time_ms {
            0 => Mode::Throughput,
            ms => Mode::Timed(Duration::from_millis(ms)),
        };
        let spec = ChainSpec::new(config.seed, config.chain_id, config.logs_per_block);
        let schedule = Schedule::new(
            config.initial_blocks,
            config.reorg_every,
            config.reorg_depth,
        );
        let finality = Finality::for_reorg_depth(config.reorg_depth);
        let head = config.initial_blocks.max(config.resume_at);
        let chain = Chain::new(spec, head, schedule, finality);
        let shared = Arc::new(Shared::new(chain, config.providers, mode, config.seed));
        let shutdown = shutdown.child_token();
        let tracker = TaskTracker::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let ctx = Ctx {
                shared: Arc::clone(&shared),
                provider: index,
            };
            server::spawn(listener, ctx, shutdown.clone(), &tracker);
        }
        tracker.spawn(producer::run(Arc::clone(&shared), shutdown.clone()));
        // Closing now only means "wait() may finish once empty"; connection tasks are still
        // tracked as they start.
        tracker.close();
        tracing::info!(
            providers = config.providers,
            block_time_ms = config.block_time_ms,
            logs_per_block = config.logs_per_block,
            seed = config.seed,
            chain_id = config.chain_id,
            head,
            reorg_every = config.reorg_every,
            reorg_depth = config.reorg_depth,
            "devnet started"
        );
        for endpoint in &endpoints {
            tracing::info!(provider = endpoint.index, http = %endpoint.http_url, ws = %endpoint.ws_url, "devnet provider listening");
        }
        Ok(Devnet {
            inner: Arc::new(Inner {
                config,
                shared,
                endpoints,
                shutdown,
                tracker,
            }),
        })
    }

    pub fn config(&self) -> &DevnetConfig {
        &self.inner.config
    }

    pub fn endpoints(&self) -> &[ProviderEndpoint] {
        &self.inner.endpoints
    }

    /// One line per provider, for `livechain devnet` and the default config's banner.
    pub fn describe(&self) -> String {
        self.endpoints()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The runtime-toggled faults of provider `provider`.
    pub fn faults(&self, provider: usize) -> Option<&Faults> {
        self.inner.shared.providers.get(provider).map(|p| &p.faults)
    }

    /// The current head number.
    pub fn head(&self) -> u64 {
        self.inner.shared.chain.head()
    }

    /// Waits until the head is at least `n`; `false` on timeout.
    pub async fn wait_for_head(&self, n: u64, timeout: Duration) -> bool {
        let mut head = self.inner.shared.chain.watch_head();
        tokio::time::timeout(timeout, head.wait_for(|h| *h >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Open subscriptions on provider `provider` (0 for an unknown provider).
    pub fn active_subscriptions(&self, provider: usize) -> usize {
        self.inner
            .shared
            .providers
            .get(provider)
            .map_or(0, |p| p.active_subscriptions())
    }

    /// Open WebSocket connections on provider `provider` (0 for an unknown provider).
    pub fn open_connections(&self, provider: usize) -> usize {
        self.inner
            .shared
            .providers
            .get(provider)
            .map_or(0, |p| p.connection_count())
    }

    /// The canonical block `n` as served (transaction hashes), `None` above the head.
    pub fn block(&self, n: u64) -> Option<Block> {
        self.inner.shared.chain.block(n).map(|b| b.to_block())
    }

    /// The contract addresses the chain's logs come from (derived from the seed).
    pub fn contracts(&self) -> Vec<Address> {
        self.inner.shared.chain.spec().contracts().collect()
    }

    /// When the producer made block `n` and handed it to every provider connection (the
    /// instant its notifications start going out), for the last few thousand heights; the
    /// stream benchmark measures delivery latency from here. A height produced again after a
    /// reorg reports its latest production.
    pub fn emitted_at(&self, n: u64) -> Option<std::time::Instant> {
        self.inner.shared.emitted_at(n)
    }

    /// The logs of canonical block `n`, `None` above the head.
    pub fn logs(&self, n: u64) -> Option<Vec<Log>> {
        self.inner.shared.chain.block(n).map(|b| b.logs.clone())
    }

    /// Rewinds the head by `depth` blocks now; the producer regrows a different branch from
    /// there, one block per block time. Subscribers then see the regrown heads (and, with
    /// [`Devnet::set_send_removed_logs`], `removed: true` copies of the orphaned logs first).
    ///
    /// The depth is clamped so that genesis and every block that was ever `safe` stay (see
    /// [`Devnet::safe_depth`]); at most [`MAX_MANUAL_REORGS`] are honoured. Returns the new
    /// head.
    pub fn reorg(&self, depth: u64) -> u64 {
        let head = self.inner.shared.chain.rewind(depth);
        tracing::info!(depth, head, "devnet: reorg");
        head
    }

    /// Reorgs so far, automatic and manual (a manual one clamped to nothing does not count).
    pub fn reorgs(&self) -> u64 {
        self.inner.shared.chain.reorgs()
    }

    /// How far below the head `safe` points: [`SAFE_DEPTH`], or the configured reorg depth if
    /// deeper. No reorg ever rewrites a block that was this deep.
    pub fn safe_depth(&self) -> u64 {
        self.inner.shared.chain.finality().safe
    }

    /// How far below the head `finalized` points: [`FINALIZED_DEPTH`], or 16 below the safe
    /// depth if that is deeper.
    pub fn finalized_depth(&self) -> u64 {
        self.inner.shared.chain.finality().finalized
    }

    /// When on, a reorg first sends every logs subscriber a `removed: true` copy of each
    /// orphaned log it had received, newest first, as geth does; off (the default) it sends
    /// only the new branch, as Anvil does. Applies to every provider from the next reorg a
    /// connection notices.
    ///
    /// A runtime switch rather than a [`DevnetConfig`] field, so that code building the config
    /// field by field keeps compiling.
    pub fn set_send_removed_logs(&self, on: bool) {
        self.inner.shared.set_send_removed_logs(on);
    }

    pub fn sends_removed_logs(&self) -> bool {
        self.inner.shared.sends_removed_logs()
    }

    /// Stops the devnet (the token given to `start` does the same).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits until every task of the devnet has ended, after a shutdown.
    pub async fn stopped(self) {
        self.inner.tracker.wait().await;
    }
}
