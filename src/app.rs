//! Wiring: turns a validated [`Config`] into running parts and stops them on one token.
//!
//! Shutdown is a tree: the caller's root token, a child token per part, one `TaskTracker` to
//! wait for them all, and a bounded grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::config::{ChainConfig, Config, DevnetChainConfig};
use crate::devnet::{Devnet, DevnetConfig};
use crate::gateway::{Gateway, Indexing};
use crate::ingest::{self, Endpoint, Ingest};
use crate::publish::{self, Hub, Render};
use crate::registry::{Supervisor, SupervisorConfig};
use crate::store::{DatabaseLock, Store};
use crate::telemetry;
use crate::{progress, retention};

/// How long in-flight work may take to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Items a live subscriber may have queued before it counts as lagging (it then catches up
/// from the database).
const STREAM_QUEUE: usize = 8192;

/// A started service: its bound addresses and the handles tests need.
pub struct Running {
    pub api_addr: SocketAddr,
    /// In-process devnets, by chain name, for chains configured with a `devnet` section.
    pub devnets: Vec<(String, Devnet)>,
    pub store: Store,
    pub ingest: Ingest,
    /// Every long-running task but the API server (`GET /v1/processes`).
    pub supervisor: Supervisor,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Why the API server ended before it was asked to, if it did (see [`serve_or_stop`]).
    api_failure: Arc<OnceLock<String>>,
    /// This service's hold on its database, released once the store is closed.
    lock: DatabaseLock,
}

/// Opens the store, starts the configured devnets and the API, and returns once all listen.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = telemetry::prometheus();
    telemetry::metrics::zero_global_series();
    let tracker = TaskTracker::new();
    tracker.spawn(telemetry::run_upkeep(metrics, shutdown.child_token()));

    let lock = DatabaseLock::acquire(&config.database.path)?;
    let store = Store::open(&config.database.path)
        .await
        .with_context(|| format!("opening database {}", config.database.path.display()))?;
    store.set_max_wal_bytes(config.database.max_wal_mb << 20);

    let mut devnets = Vec::new();
    let mut endpoints = Vec::new();
    for (name, chain) in &config.chains {
        let list = match &chain.devnet {
            None => provider_endpoints(chain),
            Some(sim) => {
                let devnet = start_devnet(name, chain, sim, &store, &shutdown).await?;
                let list = devnet_endpoints(name, &devnet)?;
                devnets.push((name.clone(), devnet));
                list
            }
        };
        endpoints.push((name.clone(), list));
    }

    let supervisor = Supervisor::start(
        SupervisorConfig::default(),
        Arc::new(store.clone()),
        &shutdown,
    )
    .await
    .context("restoring the process registry")?;
    let ingest = ingest::start(&config, &endpoints, store.clone(), &supervisor)
        .await
        .context("starting ingestion")?;
    retention::spawn_all(&supervisor, &store, &config.chains).context("starting retention")?;

    let listener = api::bind(config.server.listen).await?;
    let api_addr = listener.local_addr().context("reading the API address")?;
    let hub = Hub::new(STREAM_QUEUE);
    let render: Render = Arc::new(api::stream::render);
    publish::spawn_publisher(&supervisor, hub.clone(), ingest.committed.clone(), render)
        .context("starting the publisher")?;
    forget_unconfigured(&supervisor);
    tracker.spawn(progress::follow(
        ingest.chains.clone(),
        shutdown.child_token(),
    ));
    let state = AppState {
        store: store.clone(),
        metrics,
        chains: ingest.chains.clone().into(),
        writer: ingest.writer.clone(),
        supervisor: supervisor.clone(),
        hub,
        stream_slots: api::StreamSlots::new(
            api::slots::STREAMS,
            config.server.max_stream_sessions,
            config.server.max_stream_sessions_per_client,
        ),
        gateway_slots: api::StreamSlots::new(
            api::slots::GATEWAY_SOCKETS,
            config.gateway.max_ws_sessions,
            config.gateway.max_ws_sessions_per_client,
        ),
        shutdown: shutdown.child_token(),
        gateways: gateways(&config, &ingest.chains),
        access: api::access::Access::new(&config.server),
        body_timeout: config.server.body_timeout,
        query_timeout: config.server.query_timeout,
    };
    let api_failure = Arc::new(OnceLock::new());
    let server = api::serve(
        listener,
        state,
        config.server.header_timeout,
        shutdown.child_token(),
    );
    let (stop, failure) = (shutdown.clone(), api_failure.clone());
    tracker.spawn(async move {
        if let Some(why) = serve_or_stop(server, stop).await {
            let _ = failure.set(why);
        }
    });
    tracker.close();

    Ok(Running {
        api_addr,
        devnets,
        store,
        ingest,
        supervisor,
        tracker,
        shutdown,
        api_failure,
        lock,
    })
}

/// Each chain's JSON-RPC gateway over the providers ingestion ranks; none when disabled.
fn gateways(config: &Config, chains: &[ingest::ChainHandle]) -> Arc<[Gateway]> {
    if !config.gateway.enabled {
        return Arc::from([]);
    }
    chains
        .iter()
        .map(|c| {
            Gateway::with_indexing(
                &c.name,
                c.chain_id,
                c.providers.clone(),
                config.gateway.clone(),
                Indexing {
                    subscriptions: c.subscriptions.clone().into(),
                    filters: c.filters.clone(),
                    progress: c.progress.clone(),
                },
            )
        })
        .collect()
}

/// A configured chain's providers as the ingest sees them.
fn provider_endpoints(chain: &ChainConfig) -> Vec<Endpoint> {
    chain
        .providers
        .iter()
        .map(|p| Endpoint {
            id: p.id.clone(),
            http_url: p.url.clone(),
            ws_url: p.ws_url.clone(),
            priority: p.priority,
        })
        .collect()
}

/// Starts the in-process devnet of chain `name`. Its chain is a function of its seed: resumed at
/// the stored checkpoint it serves the very blocks stored before, and the service carries on
/// where it stopped.
async fn start_devnet(
    name: &str,
    chain: &ChainConfig,
    sim: &DevnetChainConfig,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<Devnet> {
    let resume_at = store
        .checkpoint(name)
        .await
        .with_context(|| format!("reading the checkpoint of chain {name}"))?
        .map_or(0, |cp| cp.block_number);
    let config = DevnetConfig::for_chain(sim, chain.chain_id, resume_at);
    Devnet::start(config, shutdown.child_token())
        .await
        .with_context(|| format!("starting the devnet of chain {name}"))
}

/// A devnet's provider ports as the ingest sees them (`devnet-0`, `devnet-1`, ...).
fn devnet_endpoints(name: &str, devnet: &Devnet) -> anyhow::Result<Vec<Endpoint>> {
    let mut list = Vec::new();
    for endpoint in devnet.endpoints() {
        tracing::info!(chain = %name, endpoint = %endpoint, "devnet provider listening");
        list.push(Endpoint {
            id: format!("devnet-{}", endpoint.index),
            http_url: endpoint.http_url.parse().context("devnet HTTP URL")?,
            ws_url: Some(endpoint.ws_url.parse().context("devnet WS URL")?),
            priority: u32::try_from(endpoint.index).unwrap_or(u32::MAX),
        });
    }
    Ok(list)
}

/// Runs the API server until shutdown. A server that ends before shutdown was asked for (with
/// an error, or at all) stops the whole service and says why: a service that ingests but can no
/// longer be queried or streamed from serves nobody, and exiting lets whatever runs it start it
/// again (the checkpoint makes the restart lose nothing).
async fn serve_or_stop(
    server: impl Future<Output = std::io::Result<()>>,
    shutdown: CancellationToken,
) -> Option<String> {
    let outcome = server.await;
    if shutdown.is_cancelled() {
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "the API server failed while stopping");
        }
        return None;
    }
    let why = match outcome {
        Err(err) => format!("the API server failed: {err}"),
        Ok(()) => "the API server stopped on its own".to_string(),
    };
    tracing::error!(reason = %why, "stopping the service");
    shutdown.cancel();
    Some(why)
}

/// Every task comes from the configuration, so a process desired at the last stop that this
/// start did not spawn (a provider or chain since removed) is only reported.
fn forget_unconfigured(supervisor: &Supervisor) {
    for info in supervisor.restore() {
        if supervisor.registry().get(&info.key()).is_none() {
            tracing::info!(kind = %info.kind, id = %info.id, "a process of the last run is no longer configured; not restarting it");
        }
    }
}

impl Running {
    /// What a newcomer can try, one line each.
    pub fn welcome(&self) -> String {
        let base = format!("http://{}", self.api_addr);
        let mut text = format!("livechain is running; API on {base}\n  try:");
        for command in try_commands(&self.api_addr) {
            text.push_str(&format!("\n    {command}"));
        }
        for (chain, devnet) in &self.devnets {
            for endpoint in devnet.endpoints() {
                text.push_str(&format!("\n  devnet {chain}: {endpoint}"));
            }
        }
        text
    }

    /// Waits for the shutdown token, then for every task, at most [`SHUTDOWN_GRACE`]. An error
    /// says the service stopped because its API server failed, not because it was asked to.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        // Saves each process's final status; `desired` is kept for the next start.
        if let Err(err) = self.supervisor.shutdown(SHUTDOWN_GRACE).await {
            tracing::warn!(error = %err, "supervised tasks did not all stop in time");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "tasks still running after the grace period"
            );
        }
        for (_, devnet) in self.devnets {
            devnet.stopped().await;
        }
        self.store.close().await;
        let mut ingest = self.ingest;
        ingest.stop_commits().await;
        drop(self.lock);
        tracing::info!("stopped");
        match self.api_failure.get() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }
}

/// Shell commands to try against the API at `addr`, each URL single-quoted so that a pasted
/// `&` or `?` reaches the service instead of the shell.
fn try_commands(addr: &SocketAddr) -> Vec<String> {
    let paths = [
        "/health",
        "/ready",
        "/v1/chains",
        "/v1/providers",
        "/v1/events?limit=5",
        "/v1/events?kind=block&order=desc&limit=3",
        "/v1/processes",
        "/metrics",
    ];
    let mut commands: Vec<String> = paths
        .iter()
        .map(|path| format!("curl -s 'http://{addr}{path}'"))
        .collect();
    commands.push(format!(
        "websocat 'ws://{addr}/v1/stream?kind=block&since=0'"
    ));
    commands
}

/// Runs until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    crate::console::out(&running.welcome());
    running.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each printed command, run by a real shell, hands its program the whole URL.
    #[test]
    fn the_commands_to_try_survive_a_shell() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 4000));
        let commands = try_commands(&addr);
        assert!(commands.iter().any(|c| c.contains('&')), "{commands:?}");
        for command in commands {
            let (program, quoted) = command.rsplit_once(' ').expect("a program and a URL");
            let url = quoted.trim_matches('\'');
            // The shell runs `printf '%s' <the URL as printed>` instead of the program.
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {quoted}"))
                .output()
                .expect("running sh");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                url,
                "{program}: the shell split or mangled {quoted}"
            );
            assert!(url.contains("127.0.0.1:4000/"), "{url}");
        }
    }

    #[tokio::test]
    async fn an_api_server_failing_stops_the_service_and_says_why() {
        let shutdown = CancellationToken::new();
        let failed = async { Err(std::io::Error::other("accept: too many open files")) };
        let why = serve_or_stop(failed, shutdown.clone()).await;
        assert!(shutdown.is_cancelled());
        let why = why.expect("a reason");
        assert!(why.contains("too many open files"), "{why}");
    }

    #[tokio::test]
    async fn an_api_server_ending_unasked_stops_the_service() {
        let shutdown = CancellationToken::new();
        let why = serve_or_stop(async { Ok(()) }, shutdown.clone()).await;
        assert!(shutdown.is_cancelled());
        assert_eq!(why.as_deref(), Some("the API server stopped on its own"));
    }

    #[tokio::test]
    async fn an_api_server_ending_at_shutdown_is_no_failure() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = async move {
            stop.cancel();
            Err(std::io::Error::other("closed while draining"))
        };
        assert_eq!(serve_or_stop(server, shutdown.clone()).await, None);
    }
}
