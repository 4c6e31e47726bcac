//! A connection reset in the middle of large `eth_getLogs` answers during backfill, through the
//! TCP fault proxy (`support::proxy`): the ranges are asked again, the history is stored
//! exactly once with the devnet's content, and the provider's error tally counts the resets.

use crate::support::proxy::FaultProxy;

use super::*;

/// Answers reset in their middle, and after how many bytes of each.
const RESETS: u64 = 3;
const RESET_AFTER: u64 = 32 * 1024;

/// `provider`'s `errors_by_class` in `/v1/providers`.
async fn errors_by_class(app: &TestApp, provider: &str) -> Value {
    let (status, body) = support::get_json(&app.url("/v1/providers")).await;
    assert_eq!(status, 200, "{body}");
    body["providers"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["id"] == provider))
        .map(|p| p["errors_by_class"].clone())
        .unwrap_or_else(|| panic!("/v1/providers has no {provider}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_in_the_middle_of_backfill_answers_are_retried_and_stored_once() {
    const HISTORY: u64 = 400;
    // One provider, so every range is asked of it; 20 logs a block make its answers large.
    let devnet = devnet(1, 200, HISTORY).await;
    let endpoint = devnet.endpoints()[0].clone();
    let proxy = FaultProxy::start(endpoint.addr).await;
    proxy.set(|f| {
        f.reset_answers = RESETS;
        f.reset_after = RESET_AFTER;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    // Its HTTP (the range sync's) goes through the proxy; its WebSocket is direct.
    let yaml = support::service_yaml(&devnet, &db)
        .replace("- id: p", "- id: netreset-p")
        .replace(
            &format!("url: \"{}\"", endpoint.http_url),
            &format!("url: \"{}\"", proxy.http_url()),
        );
    let app = support::start_app(support::parse_config(&yaml)).await;

    let target = HISTORY + 10;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    assert_eq!(proxy.resets(), RESETS, "every reset was spent on an answer");
    let verdict = verify(&devnet, &api_rows(&app.base).await, checkpoint);

    // Each reset is one failed call, counted where a reset belongs.
    let tally = errors_by_class(&app, "netreset-p0").await;
    let resets_seen = tally["transport"].as_u64().unwrap_or(0);
    assert_eq!(resets_seen, RESETS, "errors by class: {tally}");
    // And the answers reset were range batches (`eth_getLogs` with the range's blocks).
    let series = "livechain_rpc_requests_total{chain=\"devnet\",provider=\"netreset-p0\",\
                  method=\"batch\",outcome=\"error\"} ";
    let failed_batches = support::metrics_text(&app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.parse::<f64>().ok());
    assert_eq!(failed_batches, Some(RESETS as f64), "failed range batches");
    eprintln!(
        "resets mid-answer: {RESETS} after {RESET_AFTER} bytes, checkpoint {checkpoint}, {} rows \
         complete; errors by class {tally}",
        verdict.complete
    );
    app.stop().await;
}
