//! Real clients through the gateway to Anvil behind two provider entries: Foundry's `cast`
//! reads blocks and logs, sends a real transaction (mined once), and a batch is answered by
//! one provider with a consistent view.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::anvil::{ACCOUNT, Anvil, service_yaml};
use crate::support::{self, parse_config, start_app};

/// Runs `cast args…` (bounded in time); its standard output, trimmed.
async fn cast(bin: &Path, args: &[&str]) -> String {
    let run = Command::new(bin).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("cast {args:?} took over 60 s"))
        .unwrap_or_else(|e| panic!("cast {args:?}: {e}"));
    assert!(
        output.status.success(),
        "cast {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn cast_reads_and_sends_through_the_gateway() {
    let (Some(anvil_bin), Some(cast_bin)) = (support::anvil(), support::cast()) else {
        return;
    };
    let anvil = Anvil::start(&anvil_bin).await;
    let contract = anvil.deploy().await;
    for i in 0..3u32 {
        anvil.emit(&contract, &format!("0x{i:08x}")).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(
        &anvil,
        &dir.path().join("c.db"),
        &contract,
    )))
    .await;
    let rpc = app.url("/rpc/anvil");
    let at = ["--rpc-url", rpc.as_str()];

    let head = anvil.head().await;
    assert_eq!(
        cast(&cast_bin, &[&["block-number"][..], &at].concat()).await,
        head.to_string()
    );
    assert_eq!(
        cast(
            &cast_bin,
            &["chain-id", "--rpc-url", &app.url("/rpc/31337")]
        )
        .await,
        "31337"
    );
    let block = json_of(
        &cast(
            &cast_bin,
            &[&["block", "latest", "--json"][..], &at].concat(),
        )
        .await,
    );
    let want = anvil
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    assert_eq!(block["hash"], want["hash"], "cast block latest");
    let raw = cast(
        &cast_bin,
        &[&["rpc", "eth_getBlockByNumber", "0x1", "false"][..], &at].concat(),
    )
    .await;
    assert_eq!(
        json_of(&raw),
        anvil
            .rpc("eth_getBlockByNumber", json!(["0x1", false]))
            .await
    );
    let logs_args = [
        "logs",
        "--from-block",
        "0",
        "--to-block",
        "latest",
        "--address",
        &contract,
        "--json",
    ];
    let logs = json_of(&cast(&cast_bin, &[&logs_args[..], &at].concat()).await);
    let want = anvil
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "address": contract}]),
        )
        .await;
    assert_eq!(logs.as_array().map(Vec::len), Some(3), "{logs}");
    assert_eq!(logs, want, "cast logs");

    // A real transaction through the gateway: mined once.
    let nonce = anvil
        .rpc("eth_getTransactionCount", json!([ACCOUNT, "latest"]))
        .await;
    let send = [
        "send",
        contract.as_str(),
        "0xdeadbeef",
        "--from",
        ACCOUNT,
        "--unlocked",
        "--json",
    ];
    let receipt = json_of(&cast(&cast_bin, &[&send[..], &at].concat()).await);
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let after = anvil
        .rpc("eth_getTransactionCount", json!([ACCOUNT, "latest"]))
        .await;
    let count = |v: &Value| {
        u64::from_str_radix(v.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0)
    };
    assert_eq!(
        count(&after),
        count(&nonce) + 1,
        "the transaction was mined once"
    );
    let logs = anvil
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "address": contract}]),
        )
        .await;
    assert_eq!(logs.as_array().map(Vec::len), Some(4));

    // A block and its logs in one batch come from one provider: the same block.
    let head = format!("{:#x}", anvil.head().await);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getLogs", "params": [{"fromBlock": head, "toBlock": head}]},
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": [head, false]},
    ]);
    let answers: Vec<Value> = reqwest::Client::new()
        .post(&rpc)
        .json(&batch)
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let block_hash = by_id(1)["result"]["hash"].clone();
    assert!(block_hash.is_string(), "{answers:?}");
    assert_eq!(
        by_id(2)["result"][0]["blockHash"],
        block_hash,
        "{answers:?}"
    );
    app.stop().await;
}
