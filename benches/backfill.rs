//! `cargo bench --bench backfill`: how long Livechain takes to index a chain's history, against
//! how long the node takes to hand over the same logs.
//!
//! - The chain: Anvil (Foundry's node, from npm as the tests use it: `ANVIL_BIN`, else `anvil`
//!   on `PATH`, else `.tools/npm`), one contract that emits, per call, as many logs (topic
//!   `0x…2a`, the log's number as data) as its calldata says, called once per block. Two sizes:
//!   100,000 logs over 2,000 blocks and 1,000,000 over 20,000. Each is made once, saved with
//!   `anvil --dump-state` under `target/bench-backfill/` and reloaded with `--load-state`, so
//!   every run reads the same chain.
//! - The floor: one `eth_getLogs` of the whole range by a plain HTTP client (the best of three),
//!   answered by the same Anvil the service then reads.
//! - Livechain: the release binary (`livechain run`), Anvil as its one provider (HTTP and
//!   WebSocket), subscription `logs` of the contract and topic from block 0, a fresh database;
//!   timed from the spawn to `/v1/chains` reporting the checkpoint at Anvil's head.
//!
//! Printed (stdout), one line per size:
//! `backfill: logs=<n> blocks=<b> seconds=<t> logs_per_s=<r> floor_s=<f> ratio=<t/f> rss_mb=<peak>`
//! (`rss_mb`: the service's `VmHWM`). Diagnostics go to stderr. Bounded in time, 127.0.0.1 only,
//! children killed on every exit path. Run by `cargo test --all-targets` (without `--bench`) it
//! only smoke-tests itself on a chain of 2,000 logs, its line labelled as such; without Anvil it
//! says so and stops, unless `LIVECHAIN_REQUIRE_ANVIL=1` makes that a failure.

mod common;

use common::{peak_rss_kib, run_bounded, service_binary, start_service};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Command;

/// Init code of the contract: returns the runtime below. Runtime: `n = calldata[0..32]`; for
/// `i` in `0..n`: `mstore(0, i)`, `log1(0, 32, 0x2a)`.
const INIT_CODE: &str =
    "0x6020600c60003960206000f360003560005b81811015601e5780600052602a60206000a16001016005565b00";
/// Anvil's first unlocked account.
const ACCOUNT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// The logs' topic.
const TOPIC: &str = "0x000000000000000000000000000000000000000000000000000000000000002a";
/// Version of the saved chains' recipe: a change to it makes new files.
const RECIPE: u32 = 1;
/// How long one step (a process's line, one call) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The whole bench, both sizes, chains made included.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(1800);

/// A chain to index: `blocks` calls of `logs / blocks` logs each.
#[derive(Clone, Copy)]
struct Size {
    logs: u64,
    blocks: u64,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test` runs this target without it.
    let measured = std::env::args().any(|arg| arg == "--bench");
    let Some(anvil) = anvil() else {
        if std::env::var("LIVECHAIN_REQUIRE_ANVIL").as_deref() == Ok("1") {
            bail!("Anvil is required (LIVECHAIN_REQUIRE_ANVIL=1): set ANVIL_BIN");
        }
        eprintln!("backfill: skipped, no Anvil (set ANVIL_BIN, or put anvil on PATH)");
        return Ok(());
    };
    let sizes: &[Size] = if measured {
        &[
            Size {
                logs: 100_000,
                blocks: 2_000,
            },
            Size {
                logs: 1_000_000,
                blocks: 20_000,
            },
        ]
    } else {
        &[Size {
            logs: 2_000,
            blocks: 40,
        }]
    };
    let label = if measured {
        "backfill:"
    } else {
        "backfill (smoke run, not a measurement):"
    };
    // Smoke runs make their chain afresh in a directory removed at the end.
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let chains = if measured {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-backfill")
    } else {
        scratch.path().to_owned()
    };
    run_bounded(TOTAL_TIMEOUT, async {
        for size in sizes {
            let state = saved_chain(&anvil, &chains, *size).await?;
            let line = measure(&anvil, &state, *size).await?;
            println!("{label} {line}");
        }
        Ok(())
    })
}

/// Anvil: `ANVIL_BIN`, `anvil` on `PATH`, or the test script's npm install.
fn anvil() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ANVIL_BIN") {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("anvil"))
            .find(|p| p.is_file())
    });
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/npm/node_modules/.bin/anvil");
    on_path.or_else(|| tools.is_file().then_some(tools))
}

/// A running Anvil and its HTTP URL; killed when dropped.
struct Node {
    child: tokio::process::Child,
    url: String,
}

impl Node {
    /// SIGINT (Anvil then writes its `--dump-state` file) and waits for the exit.
    async fn interrupt(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("Anvil has exited")?;
        // SAFETY: kill(2) on a child we own and have not yet reaped.
        if unsafe { libc::kill(pid as i32, libc::SIGINT) } != 0 {
            bail!("could not signal Anvil");
        }
        tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .context("Anvil did not exit after SIGINT")?
            .context("waiting for Anvil")?;
        Ok(())
    }
}

/// Starts Anvil on a free port with `state` (`--dump-state` or `--load-state` and a path),
/// silent (its log of every call would fill a pipe nobody reads), and waits until it answers.
async fn start_anvil(anvil: &Path, state: (&str, &Path)) -> anyhow::Result<Node> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(anvil)
        .args([
            "--silent",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            state.0,
        ])
        .arg(state.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting Anvil")?;
    let node = Node {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let ask = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let started = Instant::now();
    while rpc(&http, &node.url, &ask).await.is_err() {
        if started.elapsed() > STEP_TIMEOUT {
            bail!("Anvil did not answer within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(node)
}

/// The chain of `size` saved in `dir`, made first if missing.
async fn saved_chain(anvil: &Path, dir: &Path, size: Size) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).context("creating the chains' directory")?;
    let path = dir.join(format!(
        "anvil-{}-{}-r{RECIPE}.json",
        size.logs, size.blocks
    ));
    if path.is_file() {
        return Ok(path);
    }
    let started = Instant::now();
    let partial = path.with_extension("partial");
    let node = start_anvil(anvil, ("--dump-state", &partial)).await?;
    let http = reqwest::Client::new();
    let contract = deploy(&http, &node.url).await?;
    let per_block = size.logs / size.blocks;
    let calldata = format!("0x{per_block:064x}");
    // Mined by hand, one transaction per block: Anvil's automine answers a transaction before
    // it has mined it, and falls behind a client that sends quickly.
    let call = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    rpc(&http, &node.url, &call("evm_setAutomine", json!([false]))).await?;
    for _ in 0..size.blocks {
        let send = call(
            "eth_sendTransaction",
            json!([{"from": ACCOUNT, "to": contract, "data": calldata, "gas": "0x1000000"}]),
        );
        for request in [send, call("evm_mine", json!([]))] {
            let answer = rpc(&http, &node.url, &request).await?;
            if !answer["error"].is_null() {
                bail!("{request} failed: {answer}");
            }
        }
    }
    let head = rpc(&http, &node.url, &call("eth_blockNumber", json!([]))).await?;
    if parse_quantity(&head["result"]) != Some(size.blocks + 1) {
        bail!("Anvil's head is {head}, not {}", size.blocks + 1);
    }
    // Anvil writes its state on SIGINT.
    node.interrupt().await?;
    std::fs::rename(&partial, &path).context("keeping the saved chain")?;
    eprintln!(
        "backfill: made {} ({} logs over {} blocks) in {:.1} s",
        path.display(),
        size.logs,
        size.blocks,
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// Deploys the contract; its address.
async fn deploy(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let send = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction",
        "params": [{"from": ACCOUNT, "data": INIT_CODE}]});
    let hash = rpc(http, url, &send).await?["result"].clone();
    let receipt = json!({"jsonrpc": "2.0", "id": 2, "method": "eth_getTransactionReceipt",
        "params": [hash]});
    // Mined at once, but the receipt may be a moment behind (bounded: 100 tries).
    for _ in 0..100 {
        let answer = rpc(http, url, &receipt).await?;
        if let Some(address) = answer["result"]["contractAddress"].as_str() {
            return Ok(address.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no receipt for the deployment {hash}")
}

async fn rpc(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let answer = http
        .post(url)
        .json(body)
        .timeout(STEP_TIMEOUT)
        .send()
        .await
        .context("calling Anvil")?;
    answer.json().await.context("Anvil's answer is not JSON")
}

/// The floor and Livechain's time on the chain saved at `state`; the printed line's fields.
async fn measure(anvil: &Path, state: &Path, size: Size) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let node = start_anvil(anvil, ("--load-state", state)).await?;
    let http = reqwest::Client::new();
    let head_answer = rpc(
        &http,
        &node.url,
        &json!({"jsonrpc": "2.0", "id": 1,
        "method": "eth_blockNumber", "params": []}),
    )
    .await?;
    let head = parse_quantity(&head_answer["result"]).context("Anvil's head")?;
    let contract = contract_of(&http, &node.url).await?;
    let floor = floor(&http, &node.url, &contract, head, size.logs).await?;

    let ws = node.url.replacen("http://", "ws://", 1);
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  anvil:\n    chain_id: 31337\n    providers:\n      \
         - id: anvil\n        url: \"{}\"\n        ws_url: \"{ws}\"\n    subscriptions:\n      \
         - logs: {{ address: [\"{contract}\"], topics: [[\"{TOPIC}\"]], from_block: 0 }}\n",
        dir.path().join("backfill.db").display(),
        node.url,
    );
    let started = Instant::now();
    let (service, api) = start_service(&service_binary(), dir.path(), &yaml, STEP_TIMEOUT).await?;
    let pid = service.pid()?;
    let mut rss_kib = 0;
    loop {
        rss_kib = rss_kib.max(peak_rss_kib(pid).unwrap_or(0));
        if checkpoint(&http, &api).await.is_some_and(|cp| cp >= head) {
            break;
        }
        if started.elapsed() > STEP_TIMEOUT * 5 {
            bail!("the checkpoint did not reach the head {head} in time");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    rss_kib = rss_kib.max(peak_rss_kib(pid).unwrap_or(0));
    let stored = chain_json(&http, &api).await.context("/v1/chains")?;
    let stored_logs = stored["stored_since_start"]["logs"].as_u64().unwrap_or(0);
    if stored_logs != size.logs {
        bail!(
            "the service stored {stored_logs} logs, not {}: {stored}",
            size.logs
        );
    }
    drop(service);
    drop(node);
    Ok(format!(
        "logs={} blocks={} seconds={seconds:.2} logs_per_s={:.0} floor_s={floor:.2} \
         ratio={:.2} rss_mb={}",
        size.logs,
        head + 1,
        size.logs as f64 / seconds,
        seconds / floor,
        rss_kib / 1024
    ))
}

/// The contract's address: the one the first log of the chain names.
async fn contract_of(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
        "params": [{"fromBlock": "0x0", "toBlock": "0x3", "topics": [TOPIC]}]});
    let answer = rpc(http, url, &body).await?;
    answer["result"][0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no log in the first blocks: {answer}"))
}

/// One `eth_getLogs` of the whole range, the best of three, in seconds; checks it holds every
/// log.
async fn floor(
    http: &reqwest::Client,
    url: &str,
    contract: &str,
    head: u64,
    logs: u64,
) -> anyhow::Result<f64> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{
        "fromBlock": "0x0", "toBlock": format!("0x{head:x}"), "address": contract,
        "topics": [TOPIC]}]});
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let answer = http
            .post(url)
            .json(&body)
            .timeout(STEP_TIMEOUT)
            .send()
            .await
            .context("eth_getLogs")?
            .bytes()
            .await
            .context("eth_getLogs's answer")?;
        best = best.min(started.elapsed().as_secs_f64());
        // Counted, not parsed: the floor is the node's answer arriving, not our parsing of it.
        let needle = b"\"logIndex\"";
        let got = answer.windows(needle.len()).filter(|w| w == needle).count() as u64;
        if got != logs {
            bail!("the whole-range eth_getLogs returned {got} logs, not {logs}");
        }
    }
    Ok(best)
}

/// The one chain of `/v1/chains`.
async fn chain_json(http: &reqwest::Client, api: &str) -> Option<Value> {
    let body: Value = http
        .get(format!("{api}/v1/chains"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["chains"].as_array()?.first().cloned()
}

/// The chain's checkpoint as `/v1/chains` reports it.
async fn checkpoint(http: &reqwest::Client, api: &str) -> Option<u64> {
    chain_json(http, api).await?["checkpoint"].as_u64()
}

fn parse_quantity(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.trim_start_matches("0x"), 16).ok()
}
