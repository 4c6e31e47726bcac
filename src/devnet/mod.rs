//! The devnet: a simulated Ethereum chain served as JSON-RPC 2.0 over HTTP and WebSocket on
//! 127.0.0.1, with several provider ports sharing one deterministic chain and each port
//! carrying its own runtime-toggled faults.
//!
//! Layout:
//! - `block`: pure generation of block `n` on branch `b` from `(seed, chain_id)`, and its JSON.
//! - `chain`: the head, the reorg history, a bounded cache of recent blocks.
//! - `state`: what the producer and the connections share (per-provider registries, counts).
//! - `producer`: advances the head, fans blocks out to connections (timed or throughput mode).
//! - `server`: axum per port, `POST /` and the WebSocket upgrade; `connection`: one socket.
//! - `rpc`: JSON-RPC framing and errors; `methods`: the methods and their parameters.
//! - `subscriptions`: one connection's subscriptions and notification rendering.
//! - `faults`: per-provider fault knobs.
//!
//! Architecture invariants:
//! - Block content is a pure function of `(seed, chain_id, n, branch)`: ports, runs and
//!   processes agree byte for byte, and memory does not grow with the chain's length.
//! - The producer never touches a socket; it only fills bounded per-connection queues.
//! - Every task is tracked and ends when the devnet's cancellation token is cancelled.

mod block;
mod chain;
mod connection;
mod faults;
mod methods;
mod producer;
mod rpc;
mod server;
mod state;
mod subscriptions;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_rpc_types_eth::{Block, Log};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use block::GENESIS_TIMESTAMP;
pub use chain::{FINALIZED_DEPTH, SAFE_DEPTH};
pub use faults::Faults;
pub use methods::{MAX_LOGS_BLOCK_RANGE, MAX_LOGS_RESULTS};
pub use rpc::{MAX_BATCH_LEN, MAX_REQUEST_BYTES};
pub use subscriptions::MAX_SUBSCRIPTIONS_PER_CONNECTION;

use self::block::ChainSpec;
use self::chain::Chain;
use self::methods::Ctx;
use self::state::{Mode, Shared};

/// Most provider ports one devnet serves.
pub const MAX_PROVIDERS: usize = 64;
/// Most logs per block (bounds the memory of one block and of the cache).
pub const MAX_LOGS_PER_BLOCK: usize = 10_000;

/// How to run a devnet. `Default` is `livechain devnet` without flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetConfig {
    /// Provider `i` listens on `listen.port() + i`; port 0 gives every provider its own
    /// ephemeral port (what tests use).
    pub listen: SocketAddr,
    pub providers: usize,
    /// Milliseconds between blocks; 0 is throughput mode: blocks as fast as subscribers read
    /// them, none while nobody is subscribed.
    pub block_time_ms: u64,
    pub logs_per_block: usize,
    pub seed: u64,
    pub chain_id: u64,
    /// Blocks that exist at start (history for backfill tests): the head starts here.
    pub initial_blocks: u64,
    /// Stored for the reorg issue; reorgs are only triggered through [`Devnet::reorg`] for now.
    pub reorg_every: Option<u64>,
    pub reorg_depth: u64,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8600)),
            providers: 3,
            block_time_ms: 1000,
            logs_per_block: 20,
            seed: 1,
            chain_id: 31337,
            initial_blocks: 0,
            reorg_every: None,
            reorg_depth: 3,
        }
    }
}

impl DevnetConfig {
    /// Every problem with the config, or `Ok`.
    pub fn validate(&self) -> Result<(), DevnetError> {
        let mut problems = Vec::new();
        if self.providers == 0 || self.providers > MAX_PROVIDERS {
            problems.push(format!(
                "providers must be 1..={MAX_PROVIDERS}, got {}",
                self.providers
            ));
        }
        if self.logs_per_block > MAX_LOGS_PER_BLOCK {
            problems.push(format!(
                "logs_per_block must be at most {MAX_LOGS_PER_BLOCK}, got {}",
                self.logs_per_block
            ));
        }
        if self.reorg_every == Some(0) {
            problems.push("reorg_every must be at least 1 block".to_owned());
        }
        let port = u64::from(self.listen.port());
        let last_port = port + self.providers.max(1) as u64 - 1;
        if port != 0 && last_port > u64::from(u16::MAX) {
            problems.push(format!(
                "listen port {port} + {} providers runs past port 65535",
                self.providers
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DevnetError::Config(problems.join("; ")))
        }
    }

    fn provider_addr(&self, index: usize) -> SocketAddr {
        let mut addr = self.listen;
        if addr.port() != 0 {
            // Validated above: the sum fits in a port.
            addr.set_port(addr.port().saturating_add(index as u16));
        }
        addr
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("invalid devnet config: {0}")]
    Config(String),
    #[error("devnet provider {provider}: cannot listen on {addr}: {source}")]
    Bind {
        provider: usize,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where one provider listens. HTTP and WebSocket share the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoint {
    pub index: usize,
    pub http_url: String,
    pub ws_url: String,
    pub addr: SocketAddr,
}

impl fmt::Display for ProviderEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider {}: {} {}",
            self.index, self.http_url, self.ws_url
        )
    }
}

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
        let chain = Chain::new(spec, config.initial_blocks);
        let shared = Arc::new(Shared::new(chain, config.providers, mode));
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
            head = config.initial_blocks,
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

    /// The logs of canonical block `n`, `None` above the head.
    pub fn logs(&self, n: u64) -> Option<Vec<Log>> {
        self.inner.shared.chain.block(n).map(|b| b.logs.clone())
    }

    /// Rewinds the head by `depth` blocks; the producer regrows a different branch from there.
    /// Subscribers see the regrown heads (no `removed: true` logs, like Anvil). Returns the
    /// new head.
    pub fn reorg(&self, depth: u64) -> u64 {
        let head = self.inner.shared.chain.rewind(depth);
        tracing::info!(depth, head, "devnet: reorg");
        head
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_reports_every_problem() {
        assert!(DevnetConfig::default().validate().is_ok());
        let bad = DevnetConfig {
            providers: 0,
            logs_per_block: MAX_LOGS_PER_BLOCK + 1,
            reorg_every: Some(0),
            ..DevnetConfig::default()
        };
        let message = bad.validate().unwrap_err().to_string();
        for needle in ["providers", "logs_per_block", "reorg_every"] {
            assert!(message.contains(needle), "{message}");
        }
        let high = DevnetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 65_534)),
            ..DevnetConfig::default()
        };
        assert!(high.validate().unwrap_err().to_string().contains("65535"));
        let ephemeral = DevnetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            providers: MAX_PROVIDERS,
            ..DevnetConfig::default()
        };
        assert!(ephemeral.validate().is_ok());
    }

    #[test]
    fn providers_take_consecutive_ports() {
        let config = DevnetConfig::default();
        let ports: Vec<u16> = (0..3).map(|i| config.provider_addr(i).port()).collect();
        assert_eq!(ports, [8600, 8601, 8602]);
        let endpoint = ProviderEndpoint {
            index: 1,
            http_url: "http://127.0.0.1:8601".into(),
            ws_url: "ws://127.0.0.1:8601".into(),
            addr: config.provider_addr(1),
        };
        assert_eq!(
            endpoint.to_string(),
            "provider 1: http://127.0.0.1:8601 ws://127.0.0.1:8601"
        );
    }
}
