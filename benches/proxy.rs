//! `cargo bench --bench proxy`: what the JSON-RPC gateway adds to a call.
//!
//! A devnet provider on loopback (in this process, on a runtime thread of its own: 200 blocks
//! of 20 logs, one block a second after that) and the service under test, the real release
//! binary (`livechain run`) with that port as its chain's one provider (blocks subscribed, so
//! its health knows the head). The same read mix — `eth_blockNumber`, `eth_getBlockByNumber`
//! of a random stored height, `eth_getLogs` of one random block — is sent straight to the
//! devnet and through `POST /rpc/bench`, alternating in rounds so both see the same machine:
//! at concurrency 1 (latency) and 64 (throughput, over keep-alive connections).
//!
//! The gateway answers some calls itself (final blocks and logs it keeps, `eth_blockNumber` from
//! the streams' heads): a second service with `gateway.cache_bytes: 0` and
//! `gateway.head_from_streams: false` measures its forwarding alone, in the same rounds.
//!
//! Prints one line:
//! `proxy: direct_p50=… direct_p99=… proxied_p50=… proxied_p99=… added_p99_ms=…
//! rps_c64_direct=… rps_c64_proxied=… ratio=… forwarded_p50=… forwarded_p99=…
//! rps_c64_forwarded=… ratio_forwarded=…` (latencies in ms at c=1; `ratio` is proxied over
//! direct throughput at c=64). Bars (issue 17): added p99 < 1 ms at c=1, ratio ≥ 0.7.
//! Bounded in time (about 40 s), 127.0.0.1 only. Run by `cargo test --all-targets` (without
//! `--bench`) it only smoke-tests itself with a few requests, its line labelled as such.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::tail::{DevnetThread, quantile};
use common::{run_bounded, service_binary, start_service};
use livechain::devnet::{Devnet, DevnetConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INITIAL_BLOCKS: u64 = 200;
const CONCURRENCY: usize = 64;
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of each is measured: requests per c=1 round, seconds per c=64 round, rounds.
struct Plan {
    sequential: usize,
    window: Duration,
    rounds: usize,
    label: &'static str,
}

fn main() -> anyhow::Result<()> {
    let measured = std::env::args().any(|arg| arg == "--bench");
    let plan = if measured {
        Plan {
            sequential: 1_000,
            window: Duration::from_secs(3),
            rounds: 4,
            label: "proxy",
        }
    } else {
        Plan {
            sequential: 30,
            window: Duration::from_millis(300),
            rounds: 1,
            label: "proxy (smoke, not a measurement)",
        }
    };
    // On a runtime thread of its own, so its answers do not wait on the load generator's tasks.
    let devnet = DevnetThread::start_with(DevnetConfig {
        listen: "127.0.0.1:0".parse()?,
        providers: 1,
        block_time_ms: 1_000,
        logs_per_block: 20,
        initial_blocks: INITIAL_BLOCKS,
        ..DevnetConfig::default()
    })?;
    run_bounded(TOTAL_TIMEOUT, run(plan, devnet.devnet().clone()))
}

async fn run(plan: Plan, devnet: Devnet) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let endpoint = devnet
        .endpoints()
        .first()
        .context("a devnet endpoint")?
        .clone();
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  bench:\n    chain_id: {}\n    providers:\n\
         \x20     - {{ id: p0, url: \"{}\", ws_url: \"{}\" }}\n\
         \x20   subscriptions: [ {{ blocks: true }} ]\n",
        dir.path().join("proxy.db").display(),
        devnet.config().chain_id,
        endpoint.http_url,
        endpoint.ws_url,
    );
    let binary = service_binary();
    let (_service, api) = start_service(&binary, dir.path(), &yaml, STEP_TIMEOUT).await?;
    // A second service answering nothing itself: the gateway's forwarding alone.
    let uncached_dir = tempfile::tempdir().context("a temporary directory")?;
    let uncached_yaml = yaml.replace(
        &dir.path().display().to_string(),
        &uncached_dir.path().display().to_string(),
    ) + "gateway: { cache_bytes: 0, head_from_streams: false }\n";
    let (_uncached, uncached_api) =
        start_service(&binary, uncached_dir.path(), &uncached_yaml, STEP_TIMEOUT).await?;
    let direct = endpoint.http_url.to_string();
    let proxied = format!("{api}/rpc/bench");
    let uncached = format!("{uncached_api}/rpc/bench");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .tcp_nodelay(true)
        .build()?;
    let bodies = Bodies::new();
    // Warm both paths (connections, prepared caches) untimed.
    for url in [&direct, &proxied, &uncached] {
        sequential(&http, url, &bodies, 50.min(plan.sequential)).await?;
    }
    let (mut d1, mut p1, mut u1) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d64, mut p64, mut u64_) = (0.0, 0.0, 0.0);
    for _ in 0..plan.rounds {
        d1.extend(sequential(&http, &direct, &bodies, plan.sequential).await?);
        p1.extend(sequential(&http, &proxied, &bodies, plan.sequential).await?);
        u1.extend(sequential(&http, &uncached, &bodies, plan.sequential).await?);
        d64 += concurrent(&http, &direct, &bodies, plan.window).await?;
        p64 += concurrent(&http, &proxied, &bodies, plan.window).await?;
        u64_ += concurrent(&http, &uncached, &bodies, plan.window).await?;
    }
    for v in [&mut d1, &mut p1, &mut u1] {
        v.sort_by(f64::total_cmp);
    }
    let ratio = |x: f64| if d64 > 0.0 { x / d64 } else { 0.0 };
    let (rounds, ms) = (plan.rounds as f64, |s: f64| s * 1e3);
    let (dp50, dp99, pp50, pp99) = (
        ms(quantile(&d1, 0.5)),
        ms(quantile(&d1, 0.99)),
        ms(quantile(&p1, 0.5)),
        ms(quantile(&p1, 0.99)),
    );
    println!(
        "{}: direct_p50={dp50:.3} direct_p99={dp99:.3} proxied_p50={pp50:.3} proxied_p99={pp99:.3} \
         added_p99_ms={:.3} rps_c64_direct={:.0} rps_c64_proxied={:.0} ratio={:.2} \
         forwarded_p50={:.3} forwarded_p99={:.3} rps_c64_forwarded={:.0} ratio_forwarded={:.2}",
        plan.label,
        pp99 - dp99,
        d64 / rounds,
        p64 / rounds,
        ratio(p64),
        ms(quantile(&u1, 0.5)),
        ms(quantile(&u1, 0.99)),
        u64_ / rounds,
        ratio(u64_),
    );
    Ok(())
}

/// The read mix, drawn from a fixed seed: the head, a block, a block's logs.
struct Bodies {
    list: Vec<String>,
    next: AtomicU64,
}

impl Bodies {
    fn new() -> Bodies {
        let mut rng = StdRng::seed_from_u64(17);
        let mut list = Vec::new();
        for i in 0..3_000u64 {
            let n = format!("0x{:x}", rng.random_range(1..INITIAL_BLOCKS));
            list.push(match i % 3 {
                0 => r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#.to_owned(),
                1 => format!(
                    r#"{{"jsonrpc":"2.0","id":2,"method":"eth_getBlockByNumber","params":["{n}",false]}}"#
                ),
                _ => format!(
                    r#"{{"jsonrpc":"2.0","id":3,"method":"eth_getLogs","params":[{{"fromBlock":"{n}","toBlock":"{n}"}}]}}"#
                ),
            });
        }
        Bodies {
            list,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        self.list[i % self.list.len()].clone()
    }
}

/// One call; fails the bench on anything but a JSON-RPC result.
async fn call(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<()> {
    let text = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .text()
        .await?;
    if !text.contains("\"result\"") {
        bail!("{url} answered without a result: {text}");
    }
    Ok(())
}

/// `n` calls one after another; each one's latency in seconds.
async fn sequential(
    http: &reqwest::Client,
    url: &str,
    bodies: &Bodies,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        call(http, url, bodies.next()).await?;
        out.push(started.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// [`CONCURRENCY`] callers for `window`; calls completed per second.
async fn concurrent(
    http: &reqwest::Client,
    url: &str,
    bodies: &Bodies,
    window: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + window;
    let workers = (0..CONCURRENCY).map(|_| {
        let done = done.clone();
        async move {
            while Instant::now() < until {
                call(http, url, bodies.next()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    });
    let started = Instant::now();
    for outcome in futures_util::future::join_all(workers).await {
        outcome?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
