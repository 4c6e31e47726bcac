//! A well-known JavaScript client, viem, through the gateway: reads and a batch over HTTP, then
//! its WebSocket transport's `eth_subscribe` newHeads and `watchEvent` (logs) while
//! the preferred provider goes away and the chain reorganises: every head and log once, the
//! orphaned logs again with `removed: true`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::subscriptions::{check_heads, check_logs};
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

#[tokio::test]
async fn viem_reads_and_subscribes_through_the_gateway() {
    let Some(prefix) = viem_prefix() else { return };
    // The script beside viem, so that node resolves the import.
    let script = prefix.join("livechain-viem-gateway.mjs");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/viem-gateway.mjs"),
        &script,
    )
    .expect("script copied");
    let devnet = support::devnet(2, 150, 2, 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&support::service_yaml(
        &devnet,
        &dir.path().join("v.db"),
    )))
    .await;
    let http = app.url("/rpc/devnet");
    let ws = http.replacen("http://", "ws://", 1);
    let stderr_path = dir.path().join("viem.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut node = Command::new("node")
        .arg(&script)
        .args([&http, &ws, &devnet.config().chain_id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut received: Vec<Value> = Vec::new();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("viem prints in time")
            .expect("reads")
            .unwrap_or_else(|| {
                let why = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("viem exited: {why}")
            });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = next().await;
    assert_eq!(first["type"], "http", "{first}");
    assert_eq!(first["chainId"], devnet.config().chain_id, "{first}");
    assert_eq!(first["same"], true, "{first}");
    loop {
        let line = next().await;
        if line["type"] == "ready" {
            assert_eq!(line["subscriptions"], 2, "{line}");
            break;
        }
        received.push(line);
    }

    let start = devnet.head();
    let collect = async {
        loop {
            received.push(next().await);
        }
    };
    let drive = async {
        assert!(
            devnet
                .wait_for_head(start + 8, Duration::from_secs(20))
                .await
        );
        devnet.faults(0).expect("p0").set_refuse_connections(true);
        assert!(
            devnet
                .wait_for_head(start + 16, Duration::from_secs(20))
                .await
        );
        let reorged = devnet.reorg(3);
        assert!(
            devnet
                .wait_for_head(reorged + 8, Duration::from_secs(20))
                .await
        );
        devnet.faults(0).expect("p0").set_refuse_connections(false);
        let end = devnet.head();
        // Time for the feed to announce `end` and the client to print it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        end
    };
    let end = tokio::select! {
        end = drive => end,
        _ = collect => unreachable!("collecting never ends"),
    };
    drop(node.stdin.take());
    let errors: Vec<&Value> = received.iter().filter(|l| l["type"] == "error").collect();
    assert!(errors.is_empty(), "viem reported errors: {errors:?}");
    let heads: Vec<Value> = received
        .iter()
        .filter(|l| l["type"] == "head")
        .cloned()
        .collect();
    let logs: Vec<Value> = received
        .iter()
        .filter(|l| l["type"] == "log")
        .cloned()
        .collect();
    check_heads(&heads, &devnet, end);
    check_logs(&logs, &devnet, end);
    app.stop().await;
}
