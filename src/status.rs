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
        let backfill = backfill_cell(&c["backfill"]);
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

/// A chain's backfill in a few words: blocks done of the total, the blocks left, the rate in
/// blocks and logs per second and the time left at that rate, as far as they are known.
fn backfill_cell(b: &Value) -> String {
    if b["active"] != true {
        return "caught up".to_owned();
    }
    let mut parts = Vec::new();
    if let (Some(done), Some(total)) = (b["done_blocks"].as_u64(), b["total_blocks"].as_u64()) {
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        parts.push(format!("{done}/{total} blocks ({pct:.0} %)"));
    }
    parts.push(format!("{} left", cell(&b["remaining_blocks"])));
    if let Some(rate) = b["blocks_per_second"].as_f64() {
        let logs = b["logs_per_second"].as_f64().unwrap_or(0.0);
        parts.push(format!("{rate:.0} blocks/s, {logs:.0} logs/s"));
    }
    if let Some(eta) = b["eta_seconds"].as_u64() {
        let eta = humantime::format_duration(std::time::Duration::from_secs(eta));
        parts.push(format!("ETA {eta}"));
    }
    parts.join(" · ")
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

#[cfg(test)]
mod tests {
    use super::backfill_cell;
    use serde_json::json;

    #[test]
    fn a_backfill_under_way_shows_done_rate_and_eta() {
        let b = json!({"active": true, "remaining_blocks": 7000, "done_blocks": 3000,
            "total_blocks": 10000, "blocks_per_second": 500.0, "logs_per_second": 25000.0,
            "eta_seconds": 14});
        assert_eq!(
            backfill_cell(&b),
            "3000/10000 blocks (30 %) · 7000 left · 500 blocks/s, 25000 logs/s · ETA 14s"
        );
    }

    #[test]
    fn a_backfill_before_its_first_rate_shows_what_is_known() {
        let b = json!({"active": true, "remaining_blocks": 7000, "done_blocks": null,
            "total_blocks": null, "blocks_per_second": null, "logs_per_second": null,
            "eta_seconds": null});
        assert_eq!(backfill_cell(&b), "7000 left");
        assert_eq!(backfill_cell(&json!({"active": false})), "caught up");
    }
}
