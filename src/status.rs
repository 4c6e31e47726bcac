//! `livechain status`: a running service's chains, providers and supervised tasks as tables,
//! read from its API (`/v1/chains`, `/v1/providers`, `/v1/processes`).

use std::time::Duration;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// How long the service may take to answer each request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The three tables for the service at `base` (e.g. `http://127.0.0.1:4000`), presenting
/// `token` (its `server.auth_token`) if given.
pub async fn render(base: &str, token: Option<&str>) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let base = base.trim_end_matches('/');
    let get = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let mut request = client.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {url}: is the service running there?"))?;
            let status = response.status();
            anyhow::ensure!(
                status != reqwest::StatusCode::UNAUTHORIZED,
                "{url} wants the service's token: pass --token or set LIVECHAIN_TOKEN"
            );
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            response
                .json::<Value>()
                .await
                .with_context(|| format!("{url} did not answer JSON"))
        }
    };
    let (chains, providers, processes) = tokio::try_join!(
        get("/v1/chains"),
        get("/v1/providers"),
        get("/v1/processes")
    )?;
    Ok(format!(
        "{}\n{}\n{}\n",
        chains_table(&chains),
        providers_table(&providers),
        processes_table(&processes)
    ))
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

/// A JSON value as a cell: strings bare, null as a dash.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list<'a>(body: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    body[key].as_array().into_iter().flatten()
}

fn chains_table(body: &Value) -> Table {
    let mut t = table(&[
        "chain",
        "head",
        "checkpoint",
        "lag",
        "safe",
        "finalized",
        "backfill",
        "problem",
    ]);
    for c in list(body, "chains") {
        let backfill = if c["backfill"]["active"] == true {
            format!("{} blocks left", cell(&c["backfill"]["remaining_blocks"]))
        } else {
            "caught up".to_owned()
        };
        t.add_row(vec![
            cell(&c["name"]),
            cell(&c["head"]),
            cell(&c["checkpoint"]),
            cell(&c["lag_blocks"]),
            cell(&c["safe_block"]),
            cell(&c["finalized_block"]),
            backfill,
            cell(&c["problem"]),
        ]);
    }
    t
}

fn providers_table(body: &Value) -> Table {
    let mut t = table(&[
        "chain", "provider", "health", "breaker", "head", "lag", "p50 ms", "p99 ms", "errors",
    ]);
    for p in list(body, "providers") {
        let health = match (&p["healthy"], &p["unhealthy_reason"]) {
            (Value::Bool(true), _) => "healthy".to_owned(),
            (_, Value::String(why)) => format!("unhealthy: {why}"),
            _ => "unhealthy".to_owned(),
        };
        t.add_row(vec![
            cell(&p["chain"]),
            cell(&p["id"]),
            health,
            cell(&p["breaker"]["state"]),
            cell(&p["head"]),
            cell(&p["lag_blocks"]),
            cell(&p["latency_ms"]["p50"]),
            cell(&p["latency_ms"]["p99"]),
            format!("{} of {}", cell(&p["errors"]), cell(&p["requests"])),
        ]);
    }
    t
}

fn processes_table(body: &Value) -> Table {
    let mut t = table(&["task", "status", "restarts", "last error"]);
    for p in list(body, "processes") {
        t.add_row(vec![
            format!("{} {}", cell(&p["kind"]), cell(&p["id"])),
            cell(&p["status"]),
            cell(&p["restarts"]),
            cell(&p["last_error"]),
        ]);
    }
    t
}
