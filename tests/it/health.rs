//! Integration tests: provider health, breakers and failover against devnet providers with
//! faults toggled at runtime. Shared helpers here; the tests live in the submodules.
//!
//! Every wait is bounded ([`WAIT`]); nothing asserts on wall-clock speed (the chaos run prints
//! its figures for BENCHMARKS.md instead).

mod breakers;
mod chaos;
mod hedge;
mod lag;
mod network;
mod startup;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use livechain::devnet::{Devnet, Faults};

use crate::support::{self, TestApp, TestDevnet};

/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(45);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(20);
/// The chain name `support::service_yaml` configures.
const CHAIN: &str = "devnet";

/// The service on `db` indexing `devnet`, providers named `{prefix}-p0`, ... (the metrics
/// registry is shared by the tests of this process), with `extra` YAML sections (breaker,
/// health) added at the top level.
async fn start(devnet: &TestDevnet, db: &Path, prefix: &str, extra: &str) -> TestApp {
    let yaml = support::service_yaml(devnet, db).replace("- id: p", &format!("- id: {prefix}-p"));
    support::start_app(support::parse_config(&format!("{extra}{yaml}"))).await
}

fn faults(devnet: &Devnet, i: usize) -> &Faults {
    devnet.faults(i).expect("the provider exists")
}

/// `/v1/providers` entries by provider id.
async fn providers(app: &TestApp) -> BTreeMap<String, Value> {
    let (status, body) = support::get_json(&app.url("/v1/providers")).await;
    assert_eq!(status, 200, "{body}");
    body["providers"]
        .as_array()
        .expect("a providers array")
        .iter()
        .map(|p| (p["id"].as_str().unwrap_or_default().to_owned(), p.clone()))
        .collect()
}

/// One provider's `/v1/providers` entry.
async fn provider(app: &TestApp, id: &str) -> Value {
    providers(app)
        .await
        .remove(id)
        .unwrap_or_else(|| panic!("/v1/providers has no {id}"))
}

/// Waits (bounded) until `check` holds for provider `id`'s entry; returns the entry.
async fn wait_provider(
    app: &TestApp,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let found = support::wait_for(WAIT, POLL, || async {
        let entry = provider(app, id).await;
        check(&entry).then_some(entry)
    })
    .await;
    match found {
        Some(entry) => entry,
        None => panic!(
            "{id}: {what} not seen within {WAIT:?}; last: {}",
            provider(app, id).await
        ),
    }
}

/// The sum of a metric's samples whose labels include `provider="{provider}"`.
async fn metric(app: &TestApp, name: &str, provider: &str) -> f64 {
    support::provider_metric(app, name, provider).await
}

/// The committed checkpoint as `/v1/chains` reports it, once it reaches `block`.
async fn wait_checkpoint(app: &TestApp, block: u64) -> u64 {
    support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&app.base, CHAIN)
            .await
            .filter(|cp| *cp >= block)
    })
    .await
    .unwrap_or_else(|| panic!("the checkpoint did not reach block {block} within {WAIT:?}"))
}

/// Zero lost, zero duplicated: every block `0..=checkpoint` and each of its logs is stored
/// exactly once under the devnet's hashes, nothing is stored twice or removed, and nothing
/// stored is foreign to the devnet's chain. Returns the number of events checked.
async fn verify_exactly_once(app: &TestApp, devnet: &Devnet, checkpoint: u64) -> usize {
    let events =
        support::all_events(&app.base, &format!("chain={CHAIN}&include_removed=true")).await;
    let mut stored: BTreeMap<(u64, String, Option<u64>), usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for event in &events {
        let id = (
            event["block_number"].as_u64().expect("block_number"),
            event["block_hash"]
                .as_str()
                .expect("block_hash")
                .to_lowercase(),
            event["log_index"].as_u64(),
        );
        if event["removed"] == true {
            problems.push(format!("{id:?} is marked removed (no reorg happened)"));
        }
        *stored.entry(id).or_default() += 1;
    }
    for (id, count) in &stored {
        if *count > 1 {
            problems.push(format!("{id:?} stored {count} times"));
        }
    }
    let top = stored
        .keys()
        .map(|id| id.0)
        .max()
        .unwrap_or(0)
        .max(checkpoint);
    let mut expected = BTreeMap::new();
    for n in 0..=top {
        let block = devnet
            .block(n)
            .unwrap_or_else(|| panic!("devnet has block {n}"));
        let hash = block.header.hash.to_string().to_lowercase();
        expected.insert((n, hash.clone(), None), ());
        for log in devnet.logs(n).unwrap_or_default() {
            expected.insert((n, hash.clone(), log.log_index), ());
        }
    }
    for id in stored.keys() {
        if !expected.contains_key(id) {
            problems.push(format!("{id:?} is not on the devnet's chain"));
        }
    }
    let mut checked = 0;
    for id in expected.keys().filter(|id| id.0 <= checkpoint) {
        checked += 1;
        if !stored.contains_key(id) {
            problems.push(format!(
                "{id:?} is missing below the checkpoint {checkpoint}"
            ));
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(20);
        panic!(
            "{total} problems in {} events:\n{}",
            events.len(),
            problems.join("\n")
        );
    }
    checked
}
