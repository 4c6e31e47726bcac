//! Anvil, Foundry's node, as the real peer: a contract emitting logs, indexed through two
//! provider entries pointing at one Anvil (HTTP and WebSocket), then `anvil_reorg` of depth 1,
//! 3 and 5, with and without re-included transactions. Anvil sends no `removed: true` logs:
//! what is detected comes from the parent-hash checks alone.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::reorg::Collector;
use crate::support::{self, all_events, checkpoint, parse_config, start_app, wait_for};

/// A contract that emits, for every call, LOG1 with topic `0x…2a` and the calldata as data.
pub(crate) const BYTECODE: &str = "0x600d600c600039600d6000f3366000600037602a366000a100";
/// Anvil's first unlocked account.
pub(crate) const ACCOUNT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

/// A running Anvil on an ephemeral port of 127.0.0.1; killed on drop.
pub(crate) struct Anvil {
    _child: Child,
    addr: SocketAddr,
}

impl Anvil {
    pub(crate) async fn start(bin: &Path) -> Anvil {
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("anvil starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..1000 {
                let line = lines.next_line().await.ok()??;
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("anvil prints where it listens");
        // Keep reading so that Anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Anvil {
            _child: child,
            addr,
        }
    }

    pub(crate) fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn ws(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub(crate) async fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = reqwest::Client::new()
            .post(self.http())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// The receipt of `tx` once mined: Anvil answers `eth_sendTransaction` with the hash and
    /// may mine a moment later (automine), so the receipt can be null at first.
    pub(crate) async fn receipt(&self, tx: &Value) -> Value {
        for _ in 0..200 {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([tx])).await;
            if !receipt.is_null() {
                return receipt;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no receipt for {tx} within 5 s");
    }

    /// Deploys the log-emitting contract ([`BYTECODE`]); its address.
    pub(crate) async fn deploy(&self) -> String {
        let deployed = self
            .rpc(
                "eth_sendTransaction",
                json!([{"from": ACCOUNT, "data": BYTECODE}]),
            )
            .await;
        let receipt = self.receipt(&deployed).await;
        receipt["contractAddress"]
            .as_str()
            .expect("a contract address")
            .to_owned()
    }

    pub(crate) async fn head(&self) -> u64 {
        let head = self.rpc("eth_blockNumber", json!([])).await;
        u64::from_str_radix(head.as_str().expect("hex").trim_start_matches("0x"), 16)
            .expect("a block number")
    }

    /// Calls the contract with `data` (Anvil mines one block per transaction).
    pub(crate) async fn emit(&self, contract: &str, data: &str) {
        let tx = self
            .rpc(
                "eth_sendTransaction",
                json!([{"from": ACCOUNT, "to": contract, "data": data}]),
            )
            .await;
        // Mined before the test goes on, so "Anvil's chain" is the chain the test meant.
        self.receipt(&tx).await;
    }

    /// Anvil's canonical logs over the whole chain, as rows.
    async fn logs(&self, contract: &str) -> BTreeSet<LogRow> {
        let logs = self
            .rpc(
                "eth_getLogs",
                json!([{"fromBlock": "0x0", "toBlock": "latest", "address": contract}]),
            )
            .await;
        let hex = |v: &Value| {
            u64::from_str_radix(v.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16)
                .expect("hex number")
        };
        logs.as_array()
            .expect("a log array")
            .iter()
            .map(|l| {
                (
                    hex(&l["blockNumber"]),
                    l["blockHash"].as_str().expect("hash").to_owned(),
                    hex(&l["logIndex"]),
                    l["transactionHash"].as_str().expect("tx").to_owned(),
                    l["data"].as_str().expect("data").to_owned(),
                )
            })
            .collect()
    }

    /// Anvil's canonical block hashes `0..=head`.
    async fn blocks(&self) -> Vec<String> {
        let head = self.head().await;
        let mut hashes = Vec::new();
        for n in 0..=head {
            let block = self
                .rpc("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
                .await;
            hashes.push(block["hash"].as_str().expect("hash").to_owned());
        }
        hashes
    }
}

type LogRow = (u64, String, u64, String, String);

/// The service's canonical logs, as rows.
async fn indexed_logs(base: &str) -> BTreeSet<LogRow> {
    let events = all_events(base, "chain=anvil&kind=log").await;
    let rows: BTreeSet<LogRow> = events
        .iter()
        .map(|e| {
            (
                e["block_number"].as_u64().expect("number"),
                e["block_hash"].as_str().expect("hash").to_owned(),
                e["log_index"].as_u64().expect("log index"),
                e["tx_hash"].as_str().expect("tx").to_owned(),
                e["data"].as_str().expect("data").to_owned(),
            )
        })
        .collect();
    assert_eq!(rows.len(), events.len(), "no log stored twice");
    rows
}

/// The service's canonical block hashes by height.
async fn indexed_blocks(base: &str) -> Vec<String> {
    let events = all_events(base, "chain=anvil&kind=block").await;
    let mut blocks: Vec<(u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["block_number"].as_u64().expect("number"),
                e["block_hash"].as_str().expect("hash").to_owned(),
            )
        })
        .collect();
    blocks.sort();
    blocks.into_iter().map(|(_, h)| h).collect()
}

/// Waits (bounded) until the service's canonical chain is Anvil's: every block hash by height,
/// every log, and the checkpoint at Anvil's head.
async fn converge(anvil: &Anvil, base: &str, contract: &str, what: &str) {
    let agreed = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let head = anvil.head().await;
            let at_head = checkpoint(base, "anvil").await.is_some_and(|c| c >= head);
            (at_head
                && indexed_blocks(base).await == anvil.blocks().await
                && indexed_logs(base).await == anvil.logs(contract).await)
                .then_some(())
        },
    )
    .await;
    if agreed.is_none() {
        panic!(
            "{what}: the index did not converge on Anvil's chain\nanvil logs: {:?}\nindexed: {:?}\ncheckpoint: {:?}",
            anvil.logs(contract).await,
            indexed_logs(base).await,
            checkpoint(base, "anvil").await
        );
    }
}

pub(crate) fn service_yaml(anvil: &Anvil, db: &Path, contract: &str) -> String {
    let mut providers = String::new();
    for id in ["first", "second"] {
        providers.push_str(&format!(
            "      - id: {id}\n        url: \"{}\"\n        ws_url: \"{}\"\n",
            anvil.http(),
            anvil.ws()
        ));
    }
    format!(
        "server: {{ listen: \"127.0.0.1:0\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  anvil:\n    chain_id: 31337\n    providers:\n{providers}    \
         subscriptions:\n      - blocks: true\n      - logs: {{ address: [\"{contract}\"], from_block: 0 }}\n",
        db.display()
    )
}

/// Logs from a deployed contract are indexed exactly once through two provider entries on one
/// Anvil; `anvil_reorg` of depth 1, 3 and 5, with and without re-included transactions, ends
/// each time with the index equal to Anvil's chain, and the stream retracts every orphan once.
#[tokio::test]
async fn anvil_logs_indexed_once_and_reorgs_converge_on_anvils_chain() {
    let Some(bin) = support::anvil() else { return };
    let anvil = Anvil::start(&bin).await;
    let contract = anvil.deploy().await;
    for i in 0..10u32 {
        anvil.emit(&contract, &format!("0x{i:08x}")).await;
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = parse_config(&service_yaml(&anvil, &dir.path().join("a.db"), &contract));
    let app = start_app(config).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    let stream = Collector::start(&ws_base, "chain=anvil&kind=log");
    converge(&anvil, &app.base, &contract, "backfill").await;
    assert_eq!(indexed_logs(&app.base).await.len(), 10);

    // Live logs while the service runs, then the reorgs.
    let reorgs: [(u64, bool); 4] = [(1, false), (3, true), (5, true), (5, false)];
    for (round, (depth, reinclude)) in reorgs.into_iter().enumerate() {
        for i in 0..depth {
            anvil
                .emit(&contract, &format!("0x{round:04x}{i:04x}"))
                .await;
        }
        converge(&anvil, &app.base, &contract, "live").await;
        let txs: Vec<Value> = if reinclude {
            // Re-included calls land in the new blocks (different block hashes).
            (0..2u64)
                .map(|i| {
                    let call =
                        json!({"from": ACCOUNT, "to": &contract, "data": format!("0xee{round:02x}{i:02x}")});
                    json!([call, i.min(depth - 1)])
                })
                .collect()
        } else {
            Vec::new()
        };
        anvil.rpc("anvil_reorg", json!([depth, txs])).await;
        // Even rounds: only Anvil's replacement heads, at heights already checkpointed, reveal
        // the reorg. Odd rounds: a block on top too, whose parent the next range checks.
        if round % 2 == 1 {
            anvil.rpc("evm_mine", json!([])).await;
        }
        converge(
            &anvil,
            &app.base,
            &contract,
            &format!("reorg of depth {depth}"),
        )
        .await;
    }

    stream
        .settle(Duration::from_millis(1000), Duration::from_secs(20))
        .await;
    let stored = all_events(&app.base, "chain=anvil&kind=log&include_removed=true").await;
    assert!(
        stored
            .iter()
            .all(|e| e["providers_seen"].as_u64().is_some_and(|n| n <= 2)),
        "two provider entries deliver each log at most twice"
    );
    let removed: HashSet<i64> = stored
        .iter()
        .filter(|e| e["removed"] == true)
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect();
    assert!(
        removed.len() >= 1 + 3 + 5 + 5,
        "every orphaned log is kept, marked removed: {} of {}",
        removed.len(),
        stored.len()
    );
    let seen = stream.finish().await;
    let received: HashSet<i64> = seen.events.iter().copied().collect();
    assert_eq!(received.len(), seen.events.len(), "each log streamed once");
    for cursor in &removed {
        assert!(
            received.contains(cursor),
            "orphan {cursor} had been streamed"
        );
        assert_eq!(
            seen.removed.get(cursor).copied(),
            Some(1),
            "one removed message for orphan {cursor}"
        );
    }
    assert_eq!(
        seen.removed.len(),
        removed.len(),
        "no retraction of a canonical log"
    );
    let metrics = support::metrics_text(&app).await;
    let reorg_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("livechain_reorgs") || l.starts_with("livechain_orphans"))
        .collect();
    eprintln!(
        "anvil: logs stored={} removed={} streamed={}\n{}",
        stored.len(),
        removed.len(),
        seen.events.len(),
        reorg_lines.join("\n")
    );
    assert!(
        reorg_lines
            .iter()
            .any(|l| l.starts_with("livechain_reorgs_total{")),
        "reorgs are counted"
    );
    app.stop().await;
}
