//! `cargo bench --bench query`: REST pages over a database of ten million events.
//!
//! 1. Builds the database through the store's own write path (`Store::write_batch`, back to back
//!    as a backfill at full speed writes), or reuses the one a previous run built with the same
//!    seed, size and schema under `target/bench-query/`. The data is skewed the way chains are:
//!    two chains (nine events in ten on `main`), 5,000 contract addresses of which a few emit
//!    most logs, 200 event signatures of which one is most of the logs, 200,000 accounts in the
//!    indexed topics, 32–96 bytes of data, settled heights 32 and 64 blocks below each head.
//!    The WAL's size is sampled after every batch (its peak is reported).
//! 2. Starts the real service binary on that file (its providers unreachable, so nothing is
//!    written meanwhile), sends a fifth of the requests of each shape untimed (caches warm up),
//!    and times every filter shape of `GET /v1/events` (limit 100), with and
//!    without `chain`, at concurrency 1 and 16, each request with fresh random parameters.
//! 3. Stops the service with SIGINT and times its exit.
//!
//! Printed (stdout): one line per shape and concurrency,
//! `query: shape=<name> c=<n> p50_ms=… p99_ms=… rps=…`, then the summary
//! `query: worst_p99_c1_ms=… bytes_per_event=… wal_peak_mb=… shutdown_ms=… startup_ms=…`.
//! The database's bytes per table and index, and the build's rate, go to stderr.
//!
//! `LIVECHAIN_QUERY_SHAPES=address,catchup` runs only the named shapes (`catchup` is the
//! stream scenario); `LIVECHAIN_BENCH_BIN` runs another build of the service on the same file;
//! `LIVECHAIN_QUERY_SLOWEST=1` prints each shape's five slowest requests at concurrency 1.
//!
//! Under `cargo test --all-targets` (no `--bench`) it builds 60,000 events in a temporary
//! directory and sends a few requests per shape: a smoke test, its lines labelled as such.

#[path = "../common/mod.rs"]
mod common;
mod data;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::tail::quantile;
use common::{run_bounded, service_binary, start_service};
use data::{
    ACCOUNTS, ADDRESSES, FORMAT, LOGS_PER_BLOCK, SEED, SIGNATURES, account, address, block_hash,
    build, file_bytes, report_sizes, signature, skewed, tx_hash,
};

const EVENTS: u64 = 10_000_000;
const SMOKE_EVENTS: u64 = 60_000;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let measured = std::env::args().any(|a| a == "--bench");
    run_bounded(Duration::from_secs(3_600), run(measured))
}

/// What one run measures at: database size, requests per shape.
struct Scale {
    events: u64,
    /// How long the catch-up scenario runs.
    catchup: Duration,
    requests_c1: usize,
    requests_c16: usize,
    label: &'static str,
}

async fn run(measured: bool) -> anyhow::Result<()> {
    let scale = if measured {
        Scale {
            events: EVENTS,
            catchup: Duration::from_secs(10),
            // A p99 from 1,000 requests is the 10th slowest: a couple of scheduler hiccups in
            // a run do not decide it.
            requests_c1: 1_000,
            requests_c16: 1_600,
            label: "query:",
        }
    } else {
        Scale {
            events: SMOKE_EVENTS,
            catchup: Duration::from_secs(1),
            requests_c1: 10,
            requests_c16: 32,
            label: "query (smoke, not a measurement):",
        }
    };
    let scratch = tempfile::tempdir().context("temp dir")?;
    let db = if measured {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-query");
        std::fs::create_dir_all(&dir).context("target/bench-query")?;
        dir.join(format!("events-{}-seed-{SEED}-v{FORMAT}.db", scale.events))
    } else {
        scratch.path().join("query.db")
    };
    let built = build(&db, scale.events).await?;
    let bytes = file_bytes(&db);
    let bytes_per_event = bytes as f64 / built.events as f64;
    report_sizes(&db, built.events).await;

    let heads = Heads::of(built.blocks);
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\"}}\n\
         database: {{path: \"{}\"}}\n\
         chains:\n\
         \x20 main: {{chain_id: 1, providers: [{{id: idle, url: \"http://127.0.0.1:9/\"}}]}}\n\
         \x20 side: {{chain_id: 2, providers: [{{id: idle, url: \"http://127.0.0.1:9/\"}}]}}\n",
        db.display()
    );
    let started = Instant::now();
    let (mut service, api) = start_service(&service_binary(), scratch.path(), &yaml, STEP_TIMEOUT)
        .await
        .context("starting the service")?;
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .context("http client")?;
    let only: Option<Vec<String>> = std::env::var("LIVECHAIN_QUERY_SHAPES")
        .ok()
        .map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let shapes: Vec<&Shape> = SHAPES.iter().filter(|s| wanted(s.name)).collect();
    let worst_p99_c1 = time_shapes(&http, &api, &heads, &scale, &shapes).await?;
    if wanted("catchup") {
        let (during, catchup_rate) = catchup(&http, &api, scale.catchup).await?;
        println!(
            "{} shape=address_during_catchup c=1 p50_ms={:.2} p99_ms={:.2} rps={:.0} \
             catchup_clients={CATCHUP_CLIENTS} catchup_events_per_s={catchup_rate:.0}",
            scale.label, during.p50_ms, during.p99_ms, during.rps
        );
    }
    let shutdown_ms = service.interrupt(STEP_TIMEOUT).await?.as_secs_f64() * 1e3;
    println!(
        "{} worst_p99_c1_ms={worst_p99_c1:.2} bytes_per_event={bytes_per_event:.0} \
         wal_peak_mb={:.0} shutdown_ms={shutdown_ms:.0} startup_ms={startup_ms:.0}",
        scale.label,
        built.wal_peak as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Warms every shape up (untimed: each reader connection's page cache and prepared statements,
/// as in a service that has been serving for a while), then times each with and without
/// `chain` at concurrency 1 and 16, printing a line each; returns the worst p99 at c=1.
async fn time_shapes(
    http: &reqwest::Client,
    api: &str,
    heads: &Heads,
    scale: &Scale,
    shapes: &[&Shape],
) -> anyhow::Result<f64> {
    for shape in shapes {
        for with_chain in [false, true] {
            load(
                http,
                api,
                shape,
                with_chain,
                heads,
                4,
                scale.requests_c1 / 5,
            )
            .await
            .with_context(|| format!("warming up {}", shape.name))?;
        }
    }
    let mut worst_p99_c1: f64 = 0.0;
    for shape in shapes {
        for with_chain in [false, true] {
            let name = format!("{}{}", shape.name, if with_chain { "+chain" } else { "" });
            for (concurrency, total) in [(1usize, scale.requests_c1), (16, scale.requests_c16)] {
                let timing = load(http, api, shape, with_chain, heads, concurrency, total)
                    .await
                    .with_context(|| format!("shape {name}"))?;
                if concurrency == 1 {
                    worst_p99_c1 = worst_p99_c1.max(timing.p99_ms);
                }
                println!(
                    "{} shape={name} c={concurrency} p50_ms={:.2} p99_ms={:.2} rps={:.0}",
                    scale.label, timing.p50_ms, timing.p99_ms, timing.rps
                );
            }
        }
    }
    Ok(worst_p99_c1)
}

/// Each chain's height, for drawing parameters that exist.
struct Heads {
    blocks: [u64; 2],
}

impl Heads {
    fn of(blocks: [u64; 2]) -> Heads {
        Heads { blocks }
    }
}

/// A filter shape: its name and how one request's query string is drawn.
struct Shape {
    name: &'static str,
    query: fn(&mut StdRng, &Heads) -> String,
}

fn some_block(rng: &mut StdRng, heads: &Heads) -> u64 {
    rng.random_range(0..heads.blocks[0].max(1))
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "all",
        query: |_, _| String::new(),
    },
    Shape {
        name: "desc",
        query: |_, _| "order=desc".into(),
    },
    Shape {
        name: "after",
        // A page deep in the history: the cursor of an event about `n` blocks in.
        query: |rng, h| format!("after={}", some_block(rng, h) * (LOGS_PER_BLOCK + 1)),
    },
    Shape {
        name: "kind_block",
        query: |_, _| "kind=block".into(),
    },
    Shape {
        name: "address",
        query: |rng, _| format!("address={}", address(skewed(rng, ADDRESSES, 3))),
    },
    Shape {
        name: "address_rare",
        query: |rng, _| {
            format!(
                "address={}",
                address(rng.random_range(ADDRESSES / 2..ADDRESSES))
            )
        },
    },
    Shape {
        name: "topic0",
        query: |rng, _| format!("topic0={}", signature(skewed(rng, SIGNATURES, 4))),
    },
    Shape {
        name: "topic1",
        query: |rng, _| format!("topic1={}", account(rng.random_range(0..ACCOUNTS))),
    },
    Shape {
        name: "topic2",
        query: |rng, _| format!("topic2={}", account(rng.random_range(0..ACCOUNTS))),
    },
    Shape {
        name: "topic3",
        query: |rng, _| format!("topic3={}", account(rng.random_range(0..ACCOUNTS))),
    },
    Shape {
        name: "tx_hash",
        query: |rng, h| {
            let n = some_block(rng, h);
            format!("tx_hash={}", tx_hash(0, n, rng.random_range(0..8)))
        },
    },
    Shape {
        name: "block_hash",
        query: |rng, h| format!("block_hash={}", block_hash(0, some_block(rng, h))),
    },
    Shape {
        name: "range_1000",
        query: |rng, h| {
            let a = some_block(rng, h);
            format!("from_block={a}&to_block={}", a + 1_000)
        },
    },
    Shape {
        name: "blocks_range_10",
        query: |rng, h| {
            let a = some_block(rng, h);
            format!("kind=block&from_block={a}&to_block={}", a + 10)
        },
    },
    Shape {
        name: "topic0_range_1000",
        query: |rng, h| {
            let a = some_block(rng, h);
            let t = signature(skewed(rng, SIGNATURES, 4));
            format!("kind=log&topic0={t}&from_block={a}&to_block={}", a + 1_000)
        },
    },
    Shape {
        name: "address_range_1000",
        query: |rng, h| {
            let a = some_block(rng, h);
            let x = address(skewed(rng, ADDRESSES, 3));
            format!("address={x}&from_block={a}&to_block={}", a + 1_000)
        },
    },
    Shape {
        name: "from_block",
        query: |rng, h| format!("from_block={}", some_block(rng, h)),
    },
    Shape {
        name: "to_block_desc",
        query: |rng, h| format!("to_block={}&order=desc", some_block(rng, h)),
    },
    Shape {
        name: "finalized_desc",
        query: |_, _| "finality=finalized&order=desc".into(),
    },
];

/// Stream clients resuming from the start at once, in the catch-up scenario.
const CATCHUP_CLIENTS: usize = 20;

/// [`CATCHUP_CLIENTS`] stream sessions replay the history from `since=0` for `window` while
/// one client sends `address` pages one after the other: the REST timing meanwhile, and the
/// events per second the sessions received together.
async fn catchup(
    http: &reqwest::Client,
    api: &str,
    window: Duration,
) -> anyhow::Result<(Timing, f64)> {
    use futures_util::StreamExt;
    let ws = format!("{}/v1/stream?since=0", api.replacen("http", "ws", 1));
    let deadline = tokio::time::Instant::now() + window;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CATCHUP_CLIENTS {
        let ws = ws.clone();
        clients.spawn(async move {
            let (mut socket, _) =
                tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(&ws))
                    .await
                    .context("connecting a stream client")??;
            let mut events = 0u64;
            while let Ok(Some(message)) = tokio::time::timeout_at(deadline, socket.next()).await {
                if message?.is_text() {
                    events += 1;
                }
            }
            Ok::<_, anyhow::Error>(events)
        });
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut times = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let url = format!(
            "{api}/v1/events?limit=100&address={}",
            address(skewed(&mut rng, ADDRESSES, 3))
        );
        let sent = Instant::now();
        let response = http.get(&url).send().await?;
        if !response.status().is_success() {
            bail!("{url}: {}", response.status());
        }
        response.bytes().await?;
        times.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut events = 0;
    while let Some(done) = clients.join_next().await {
        events += done.context("a stream client")??;
    }
    times.sort_by(f64::total_cmp);
    let timing = Timing {
        p50_ms: quantile(&times, 0.50),
        p99_ms: quantile(&times, 0.99),
        rps: times.len() as f64 / elapsed,
    };
    Ok((timing, events as f64 / elapsed))
}

struct Timing {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
}

/// The slowest requests printed per shape at concurrency 1 when `LIVECHAIN_QUERY_SLOWEST` is set.
const SLOWEST: usize = 5;

/// Sends `total` requests of `shape`, `concurrency` at a time, each with fresh parameters.
async fn load(
    http: &reqwest::Client,
    api: &str,
    shape: &Shape,
    with_chain: bool,
    heads: &Heads,
    concurrency: usize,
    total: usize,
) -> anyhow::Result<Timing> {
    let mut rng = StdRng::seed_from_u64(SEED ^ total as u64);
    let urls: Vec<String> = (0..total)
        .map(|_| {
            let mut query = (shape.query)(&mut rng, heads);
            if with_chain {
                query = format!("chain=main&{query}");
            }
            format!("{api}/v1/events?limit=100&{query}")
        })
        .collect();
    let per_task = total.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in urls.chunks(per_task) {
        let (http, chunk) = (http.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(chunk.len());
            for url in chunk {
                let sent = Instant::now();
                let response = http.get(&url).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if !status.is_success() {
                    bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                }
                times.push((sent.elapsed().as_secs_f64() * 1e3, url));
            }
            Ok::<_, anyhow::Error>(times)
        });
    }
    let mut times = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        times.extend(done.context("a load task")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    if concurrency == 1 && std::env::var_os("LIVECHAIN_QUERY_SLOWEST").is_some() {
        for (ms, url) in times.iter().rev().take(SLOWEST) {
            eprintln!("query: slow {ms:.2} ms {url}");
        }
    }
    let times: Vec<f64> = times.into_iter().map(|(ms, _)| ms).collect();
    Ok(Timing {
        p50_ms: quantile(&times, 0.50),
        p99_ms: quantile(&times, 0.99),
        rps: times.len() as f64 / elapsed,
    })
}
