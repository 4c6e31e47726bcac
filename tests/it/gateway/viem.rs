//! A well-known JavaScript client, viem, through the gateway: reads and a batch over HTTP, then
//! its WebSocket transport's `eth_subscribe` newHeads and `watchEvent` (logs) — on the devnet
//! while the preferred provider goes away and the chain reorganises (every head and log once,
//! the orphaned logs again with `removed: true`), and on Anvil across `anvil_reorg` (which sends
//! no removed logs itself: the gateway's come from Livechain's own feed).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::subscriptions::{check_heads, check_logs, fail_over_and_reorg};
use crate::anvil::{Anvil, service_yaml};
use crate::support::{self, parse_config, start_app};

/// The npm prefix holding viem (`scripts/test` installs it into `.tools/npm`), or `None` with the
/// reason printed; a failure under `LIVECHAIN_REQUIRE_ANVIL=1` (the README's test command).
fn viem_prefix() -> Option<PathBuf> {
    let prefix = std::env::var_os("LIVECHAIN_NPM_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/npm"));
    let found = prefix.join("node_modules/viem/package.json").exists();
    if !found {
        assert!(
            std::env::var("LIVECHAIN_REQUIRE_ANVIL").as_deref() != Ok("1"),
            "viem is not installed under {} (scripts/test installs it)",
            prefix.display()
        );
        eprintln!(
            "skipping: viem is not installed under {} (run scripts/test)",
            prefix.display()
        );
    }
    found.then_some(prefix)
}

/// The viem script running against one chain's gateway; its lines read one by one.
struct Viem {
    node: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    received: Vec<Value>,
}

impl Viem {
    /// Starts the script (copied beside viem, so that node resolves the import), checks its
    /// HTTP line and waits for both subscriptions.
    async fn start(prefix: &Path, http: &str, chain_id: u64, address: &str, dir: &Path) -> Viem {
        let script = prefix.join("livechain-viem-gateway.mjs");
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/viem-gateway.mjs");
        std::fs::copy(source, &script).expect("script copied");
        let stderr = dir.join("viem.stderr");
        let mut node = Command::new("node")
            .arg(&script)
            .args([
                http,
                &http.replacen("http://", "ws://", 1),
                &chain_id.to_string(),
                address,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
        let mut viem = Viem {
            node,
            lines,
            stderr,
            received: Vec::new(),
        };
        let first = viem.next().await;
        assert_eq!(first["type"], "http", "{first}");
        assert_eq!(first["chainId"], chain_id, "{first}");
        assert_eq!(
            first["same"], true,
            "a batch answered by one provider: {first}"
        );
        loop {
            let line = viem.next().await;
            if line["type"] == "ready" {
                assert_eq!(line["subscriptions"], 2, "{line}");
                return viem;
            }
            viem.received.push(line);
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("viem prints in time")
            .expect("reads")
            .unwrap_or_else(|| {
                let why = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                panic!("viem exited: {why}")
            });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Collects lines while `drive` runs; then stops the script and returns heads and logs.
    async fn while_running<T>(
        mut self,
        drive: impl Future<Output = T>,
    ) -> (T, Vec<Value>, Vec<Value>) {
        let out = {
            let collect = async {
                loop {
                    let line = self.next().await;
                    self.received.push(line);
                }
            };
            tokio::select! {
                out = drive => out,
                _ = collect => unreachable!("collecting never ends"),
            }
        };
        drop(self.node.stdin.take());
        let errors: Vec<&Value> = self
            .received
            .iter()
            .filter(|l| l["type"] == "error")
            .collect();
        assert!(errors.is_empty(), "viem reported errors: {errors:?}");
        let of = |kind: &str| -> Vec<Value> {
            self.received
                .iter()
                .filter(|l| l["type"] == kind)
                .cloned()
                .collect()
        };
        (out, of("head"), of("log"))
    }
}

#[tokio::test]
async fn viem_reads_and_subscribes_through_the_gateway() {
    let Some(prefix) = viem_prefix() else { return };
    let devnet = support::devnet(2, 150, 2, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = support::service_yaml(&devnet, &dir.path().join("v.db"));
    let app = start_app(parse_config(&yaml)).await;
    let chain_id = devnet.config().chain_id;
    let viem = Viem::start(&prefix, &app.url("/rpc/devnet"), chain_id, "", dir.path()).await;
    let drive = async {
        let end = fail_over_and_reorg(&devnet).await;
        // Time for the feed to announce `end` and the client to print it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        end
    };
    let (end, heads, logs) = viem.while_running(drive).await;
    check_heads(&heads, &devnet, end);
    check_logs(&logs, &devnet, end);
    app.stop().await;
}

/// Anvil's `anvil_reorg` sends no `removed: true` logs; through the gateway viem gets them
/// anyway, from Livechain's feed, once each, and every log of Anvil's chain once.
#[tokio::test]
async fn viem_gets_removed_logs_across_anvil_reorg() {
    let (Some(prefix), Some(bin)) = (viem_prefix(), support::anvil()) else {
        return;
    };
    let anvil = Anvil::start(&bin).await;
    let contract = anvil.deploy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(
        &anvil,
        &dir.path().join("a.db"),
        &contract,
    )))
    .await;
    let viem = Viem::start(
        &prefix,
        &app.url("/rpc/anvil"),
        31337,
        &contract,
        dir.path(),
    )
    .await;
    let drive = async {
        for i in 0..4u32 {
            anvil.emit(&contract, &format!("0x{i:08x}")).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        anvil.rpc("anvil_reorg", json!([2, []])).await;
        anvil.rpc("evm_mine", json!([])).await;
        anvil.emit(&contract, "0x000000ff").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let ((), _, logs) = viem.while_running(drive).await;
    let canonical = anvil
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "address": contract}]),
        )
        .await;
    let key = |l: &Value| {
        (
            l["blockHash"].as_str().unwrap_or_default().to_owned(),
            l["logIndex"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let canonical: Vec<(String, String)> = canonical
        .as_array()
        .expect("logs")
        .iter()
        .map(key)
        .collect();
    let live: Vec<(String, String)> = logs
        .iter()
        .filter(|l| l["removed"] != true)
        .map(key)
        .collect();
    let removed: Vec<(String, String)> = logs
        .iter()
        .filter(|l| l["removed"] == true)
        .map(key)
        .collect();
    for k in &canonical {
        assert_eq!(
            live.iter().filter(|l| *l == k).count(),
            1,
            "canonical log {k:?} once: {logs:?}"
        );
    }
    let orphaned: Vec<&(String, String)> = live.iter().filter(|k| !canonical.contains(k)).collect();
    assert_eq!(
        orphaned.len(),
        2,
        "the reorg orphaned two logs the client had: {logs:?}"
    );
    for k in orphaned {
        assert_eq!(
            removed.iter().filter(|r| *r == k).count(),
            1,
            "{k:?} retracted once: {logs:?}"
        );
    }
    app.stop().await;
}
