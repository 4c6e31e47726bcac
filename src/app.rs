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
use crate::config::Config;
use crate::devnet::{Devnet, DevnetConfig};
use crate::ingest::{self, Endpoint, Ingest};
use crate::publish::{Hub, Render};
use crate::registry::{ProcessKey, Supervisor, SupervisorConfig};
use crate::store::Store;
use crate::telemetry;

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
}

/// Opens the store, starts the configured devnets and the API, and returns once all listen.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let metrics = telemetry::prometheus();
    let tracker = TaskTracker::new();
    tracker.spawn(telemetry::run_upkeep(metrics, shutdown.child_token()));

    let store = Store::open(&config.database.path)
        .await
        .with_context(|| format!("opening database {}", config.database.path.display()))?;

    let mut devnets = Vec::new();
    let mut endpoints = Vec::new();
    for (name, chain) in &config.chains {
        let Some(sim) = &chain.devnet else {
            let list = chain
                .providers
                .iter()
                .map(|p| Endpoint {
                    id: p.id.clone(),
                    http_url: p.url.clone(),
                    ws_url: p.ws_url.clone(),
                    priority: p.priority,
                })
                .collect();
            endpoints.push((name.clone(), list));
            continue;
        };
        let devnet_config = DevnetConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            providers: sim.providers,
            block_time_ms: sim.block_time_ms,
            logs_per_block: sim.logs_per_block,
            seed: sim.seed,
            chain_id: chain.chain_id,
            initial_blocks: sim.initial_blocks,
            reorg_every: sim.reorg_every,
            reorg_depth: sim.reorg_depth,
        };
        let devnet = Devnet::start(devnet_config, shutdown.child_token())
            .await
            .with_context(|| format!("starting the devnet of chain {name}"))?;
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
        endpoints.push((name.clone(), list));
        devnets.push((name.clone(), devnet));
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

    let listener = api::bind(config.server.listen).await?;
    let api_addr = listener.local_addr().context("reading the API address")?;
    let hub = Hub::new(STREAM_QUEUE);
    let render: Render = Arc::new(api::stream::render);
    let publisher = (hub.clone(), ingest.committed.clone());
    // Subscribed now, before anything can commit: the first run misses no batch. (A stream
    // session's seam relies on it: what commits after the session subscribed to the hub must
    // reach the hub.)
    let first = std::sync::Mutex::new(Some(ingest.committed.subscribe()));
    supervisor
        .spawn(
            ProcessKey::new("publisher", "hub"),
            serde_json::json!({}),
            false,
            move |token| {
                let (hub, committed) = publisher.clone();
                let first = first
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let batches = match first {
                    Some(batches) => batches,
                    None => {
                        // A restart: batches committed while it was down were never
                        // published, so every subscriber catches up from the database.
                        let batches = committed.subscribe();
                        hub.cut_all();
                        batches
                    }
                };
                let render = render.clone();
                Box::pin(async move {
                    hub.run(batches, render, token).await;
                    Ok(())
                })
            },
        )
        .context("starting the publisher")?;
    forget_unconfigured(&supervisor);
    let state = AppState {
        store: store.clone(),
        metrics,
        chains: ingest.chains.clone().into(),
        writer_ready: ingest.writer_ready.clone(),
        supervisor: supervisor.clone(),
        hub,
        stream_slots: api::StreamSlots::new(config.server.max_stream_sessions),
        shutdown: shutdown.child_token(),
    };
    let api_failure = Arc::new(OnceLock::new());
    let server = api::serve(listener, state, shutdown.child_token());
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
    })
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
        for path in [
            "/health",
            "/ready",
            "/v1/chains",
            "/v1/providers",
            "/v1/events?limit=5",
            "/v1/events?kind=block&order=desc&limit=3",
            "/v1/processes",
            "/metrics",
        ] {
            text.push_str(&format!("\n    curl {base}{path}"));
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
        tracing::info!("stopped");
        match self.api_failure.get() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }
}

/// Runs until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    println!("{}", running.welcome());
    running.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
