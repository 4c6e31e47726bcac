//! Shared helpers for the integration tests: start the devnet and the service on 127.0.0.1
//! with port 0, talk to them over HTTP, wait with bounds, find Anvil; put faults on the TCP
//! byte stream between them ([`proxy`]).
//!
//! Every wait is bounded in time; every started thing stops when its guard drops.

#![allow(dead_code)] // each test module uses a different subset

pub mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livechain::app::{self, Running};
use livechain::config::Config;
use livechain::devnet::{Devnet, DevnetConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A devnet on ephemeral ports; cancelled when dropped.
pub struct TestDevnet {
    pub devnet: Devnet,
    shutdown: CancellationToken,
}

impl Drop for TestDevnet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::ops::Deref for TestDevnet {
    type Target = Devnet;
    fn deref(&self) -> &Devnet {
        &self.devnet
    }
}

/// Starts a devnet with `providers` endpoints on ephemeral ports.
pub async fn devnet(
    providers: usize,
    block_time_ms: u64,
    logs_per_block: usize,
    initial_blocks: u64,
) -> TestDevnet {
    let config = DevnetConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        providers,
        block_time_ms,
        logs_per_block,
        initial_blocks,
        ..DevnetConfig::default()
    };
    devnet_with(config).await
}

/// Starts a devnet from a full config (reorg settings and all).
pub async fn devnet_with(config: DevnetConfig) -> TestDevnet {
    let shutdown = CancellationToken::new();
    let devnet = Devnet::start(config, shutdown.clone())
        .await
        .expect("devnet starts");
    TestDevnet { devnet, shutdown }
}

/// YAML for a service indexing `devnet` as an ordinary chain named `devnet` (its endpoints as
/// providers `p0`, `p1`, ...), database at `db`, API on an ephemeral port, from block 0.
pub fn service_yaml(devnet: &Devnet, db: &Path) -> String {
    let mut providers = String::new();
    for e in devnet.endpoints() {
        providers.push_str(&format!(
            "      - id: p{}\n        url: \"{}\"\n        ws_url: \"{}\"\n",
            e.index, e.http_url, e.ws_url
        ));
    }
    format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: {}\n    providers:\n{providers}    \
         subscriptions:\n      - blocks: true\n      - logs: {{ from_block: 0 }}\n",
        db.display(),
        devnet.config().chain_id,
    )
}

pub fn parse_config(yaml: &str) -> Config {
    match Config::from_yaml(yaml, &|_| None) {
        Ok(loaded) => loaded.config,
        Err(err) => panic!("test config is invalid: {err}\n{yaml}"),
    }
}

/// The service started in-process; stopped (and waited for) by [`TestApp::stop`], cancelled on
/// drop.
pub struct TestApp {
    pub base: String,
    shutdown: CancellationToken,
    running: Option<Running>,
}

impl TestApp {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running until stopped")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the service and waits for every task (bounded by the app's grace period).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.expect("the service stopped as asked");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_app(config: Config) -> TestApp {
    let shutdown = CancellationToken::new();
    let running = app::start(config, shutdown.clone())
        .await
        .expect("service starts");
    TestApp {
        base: format!("http://{}", running.api_addr),
        shutdown,
        running: Some(running),
    }
}

/// GET `url`; the status and the body as JSON (`Value::Null` if it is not JSON).
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls `check` every `every` until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// The chain's checkpoint as `/v1/chains` reports it.
pub async fn checkpoint(app_base: &str, chain: &str) -> Option<u64> {
    let (_, body) = get_json(&format!("{app_base}/v1/chains")).await;
    body["chains"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == chain)?["checkpoint"]
        .as_u64()
}

/// Every event of `/v1/events` matching `query`, following `next_cursor` (bounded pages).
pub async fn all_events(app_base: &str, query: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..10_000 {
        let cursor = after.map(|c| format!("&after={c}")).unwrap_or_default();
        let (status, body) =
            get_json(&format!("{app_base}/v1/events?limit=1000&{query}{cursor}")).await;
        assert_eq!(status, 200, "{body}");
        events.extend(body["events"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_i64() {
            Some(next) => after = Some(next),
            None => return events,
        }
    }
    panic!("more than 10,000 pages");
}

/// The path of the built `livechain` binary.
pub fn livechain_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_livechain"))
}

/// Anvil, if installed (`ANVIL_BIN` or `anvil` on PATH). Without it the test is skipped with a
/// printed reason — unless `LIVECHAIN_REQUIRE_ANVIL=1` (the README's test command), which makes
/// a missing Anvil a failure.
pub fn anvil() -> Option<PathBuf> {
    let found = std::env::var_os("ANVIL_BIN")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("anvil"))
                    .find(|p| p.exists())
            })
        });
    if found.is_none() {
        if std::env::var("LIVECHAIN_REQUIRE_ANVIL").as_deref() == Ok("1") {
            panic!(
                "LIVECHAIN_REQUIRE_ANVIL=1 but Anvil is not installed (scripts/test installs it)"
            );
        }
        eprintln!("skipping: Anvil is not installed (run scripts/test, or set ANVIL_BIN)");
    }
    found
}

/// Foundry's `cast`, beside Anvil (scripts/test installs both) or on PATH; `None` when Anvil
/// is absent (as [`anvil`] decides: skipped, or a failure under `LIVECHAIN_REQUIRE_ANVIL=1`).
pub fn cast() -> Option<PathBuf> {
    let anvil = anvil()?;
    let beside = anvil.with_file_name("cast");
    let found = Some(beside).filter(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("cast"))
                .find(|p| p.exists())
        })
    });
    assert!(
        found.is_some(),
        "Anvil is installed but cast is not (scripts/test installs both)"
    );
    found
}

/// The service's `/metrics` (Prometheus text).
pub async fn metrics_text(app: &TestApp) -> String {
    reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The sum of every sample whose line starts with `prefix` (a name, or a name and labels), from
/// the service at `base`.
pub async fn metric_sum(base: &str, prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of metric `name`'s samples whose labels include `provider="{provider}"`.
pub async fn provider_metric(app: &TestApp, name: &str, provider: &str) -> f64 {
    let text = metrics_text(app).await;
    let (series, label) = (format!("{name}{{"), format!("provider=\"{provider}\""));
    text.lines()
        .filter(|l| l.starts_with(&series) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
