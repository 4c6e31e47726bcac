//! Response shapes: the event JSON of `docs/api.md` field by field against the devnet,
//! `/v1/chains`, and the operational endpoints `/health`, `/ready`, `/metrics`.

use super::*;

/// Every key of an event, as `docs/api.md` lists them.
const EVENT_KEYS: [&str; 18] = [
    "cursor",
    "chain",
    "kind",
    "block_number",
    "block_hash",
    "parent_hash",
    "block_timestamp",
    "tx_hash",
    "tx_index",
    "log_index",
    "address",
    "topics",
    "data",
    "removed",
    "finality",
    "first_provider",
    "providers_seen",
    "received_at",
];
/// The keys a block leaves null.
const LOG_KEYS: [&str; 6] = [
    "tx_hash",
    "tx_index",
    "log_index",
    "address",
    "topics",
    "data",
];

/// `2026-11-24T13:00:00.123Z`: RFC 3339, UTC, exactly milliseconds.
fn is_rfc3339_ms(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && humantime::parse_rfc3339(text).is_ok()
}

fn hex_str(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_have_the_documented_json_shape() {
    let still = still().await;
    let providers = ["p0", "p1", "p2"];
    let started = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (event, want) in still.listing.iter().zip(&still.chain) {
        let object = event.as_object().expect("an event is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = EVENT_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{event}");

        assert_eq!(cursor_of(event), want.cursor, "{event}");
        assert!(want.cursor > 0, "{event}");
        assert_eq!(event["chain"], CHAIN, "{event}");
        assert_eq!(event["block_number"], want.number, "{event}");
        assert_eq!(hex_str(&event["block_hash"]), want.hash.to_string());
        assert_eq!(hex_str(&event["parent_hash"]), want.parent_hash.to_string());
        assert_eq!(event["block_timestamp"], want.timestamp, "{event}");
        assert_eq!(event["removed"], false, "{event}");
        assert!(
            ["latest", "safe", "finalized"].contains(&event["finality"].as_str().unwrap_or("")),
            "{event}"
        );
        assert!(
            providers.contains(&event["first_provider"].as_str().unwrap_or("")),
            "{event}"
        );
        assert!(
            event["providers_seen"].as_u64().is_some_and(|n| n >= 1),
            "{event}"
        );
        let received = event["received_at"].as_str().unwrap_or("");
        assert!(is_rfc3339_ms(received), "received_at {received:?}");
        let received = humantime::parse_rfc3339(received).expect("RFC 3339");
        assert!(received > started, "received_at {received:?} is not recent");

        match &want.log {
            None => {
                assert_eq!(event["kind"], "block", "{event}");
                for key in LOG_KEYS {
                    assert!(event[key].is_null(), "a block's {key} is not null: {event}");
                }
            }
            Some(log) => {
                assert_eq!(event["kind"], "log", "{event}");
                assert_eq!(hex_str(&event["tx_hash"]), log.tx_hash.to_string());
                assert_eq!(event["tx_index"], log.tx_index, "{event}");
                assert_eq!(event["log_index"], log.log_index, "{event}");
                let address = hex_str(&event["address"]);
                assert_eq!(address.parse::<Address>().ok(), Some(log.address));
                assert_eq!(address, log.address.to_checksum(None), "EIP-55 checksum");
                let topics: Vec<String> = event["topics"]
                    .as_array()
                    .expect("a log's topics are an array")
                    .iter()
                    .map(hex_str)
                    .collect();
                let want_topics: Vec<String> = log.topics.iter().map(ToString::to_string).collect();
                assert_eq!(topics, want_topics, "{event}");
                assert_eq!(hex_str(&event["data"]), log.data.to_string(), "{event}");
            }
        }
    }
    // Logs carry their block's fields: the same number, hash, parent and timestamp as the block
    // row of the same hash.
    for log in still.listing.iter().filter(|e| e["kind"] == "log") {
        let block = still
            .listing
            .iter()
            .find(|e| e["kind"] == "block" && e["block_hash"] == log["block_hash"])
            .unwrap_or_else(|| panic!("no block row for {log}"));
        for key in ["block_number", "parent_hash", "block_timestamp", "chain"] {
            assert_eq!(log[key], block[key], "{key} of {log}");
        }
    }
    still.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_health_ready_and_metrics_answer() {
    let still = still().await;
    let app = &still.app;

    let (status, body) = support::get_json(&app.url("/v1/chains")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_object()
            .map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()),
        Some(vec!["chains"])
    );
    let chains = body["chains"].as_array().expect("chains array");
    assert_eq!(chains.len(), 1, "{body}");
    let chain = &chains[0];
    assert_eq!(chain["name"], CHAIN);
    assert_eq!(chain["chain_id"], still.devnet.config().chain_id);
    assert_eq!(chain["head"], HISTORY, "{chain}");
    assert_eq!(chain["checkpoint"], HISTORY, "{chain}");
    assert_eq!(chain["lag_blocks"], 0, "{chain}");
    assert_eq!(chain["providers"], serde_json::json!(["p0", "p1", "p2"]));
    let backfill = &chain["backfill"];
    assert_eq!(backfill["active"], false, "{chain}");
    assert_eq!(backfill["remaining_blocks"], 0, "{chain}");
    assert!(backfill["range_limit"].as_u64().is_some_and(|n| n > 0));
    // Everything stored was stored since this start: every block and log of the history once.
    let logs: usize = (0..=HISTORY)
        .map(|n| still.devnet.logs(n).map_or(0, |l| l.len()))
        .sum();
    assert_eq!(
        chain["stored_since_start"],
        serde_json::json!({"blocks": HISTORY + 1, "logs": logs, "removed": 0}),
        "{chain}"
    );
    assert!(chain["recent_reorgs"].as_array().is_some_and(Vec::is_empty));
    let finalized = chain["finalized_block"]
        .as_u64()
        .expect("a finalized height");
    assert!(finalized <= HISTORY, "{chain}");

    let (status, body) = support::get_json(&app.url("/health")).await;
    assert_eq!((status, &body), (200, &serde_json::json!({"status": "ok"})));
    let (status, body) = support::get_json(&app.url("/ready")).await;
    assert_eq!(
        (status, &body),
        (200, &serde_json::json!({"status": "ready"}))
    );

    for path in ["/v1/events/1", "/v1/events/999999999", "/no/such/route"] {
        let _ = support::get_json(&app.url(path)).await;
    }
    let response = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("metrics text");
    for name in [
        "livechain_events_stored_total",
        "livechain_rpc_requests_total",
        "livechain_http_requests_total",
        "livechain_database_size_bytes",
        "livechain_wal_pages",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics has no {name}:\n{text}"
        );
    }
    // Batch sizes are counted in events, not in a duration's buckets.
    for bucket in [r#"le="0""#, r#"le="100""#, r#"le="16384""#] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("livechain_writer_batch_size_bucket") && l.contains(bucket)),
            "no batch size bucket {bucket}:\n{text}"
        );
    }
    // Requests are counted by route pattern, never by raw path.
    assert!(text.contains(r#"route="/v1/events/{cursor}""#), "{text}");
    assert!(!text.contains(r#"route="/v1/events/1""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("livechain_http_requests_total")
                && l.contains(r#"route="/v1/chains""#)
                && l.contains(r#"status="200""#)),
        "{text}"
    );
    still.app.stop().await;
}

/// Every counter whose labels are known at start (per chain, per provider) is on `/metrics` at 0
/// before its first increment, so an alert on, say, `increase(livechain_reorgs_total[1h])`
/// finds a series instead of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_known_at_start_are_zero_before_their_first_increment() {
    let devnet = support::devnet(2, STILL_BLOCK_TIME_MS, 1, 2).await;
    let dir = TempDir::new().expect("temp dir");
    // A chain name of its own: the metrics recorder is shared by every test in this process.
    let yaml = support::service_yaml(&devnet, &dir.path().join("zeroes.db"))
        .replace("chains:\n  devnet:", "chains:\n  zeroes:");
    let app = support::start_app(support::parse_config(&yaml)).await;
    let text = support::metrics_text(&app).await;
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let chain = "chain=\"zeroes\"";
    for name in [
        "livechain_reorgs_total",
        "livechain_reorgs_too_deep_total",
        "livechain_events_removed_total",
        "livechain_orphans_dropped_total",
        "livechain_pruned_events_total",
    ] {
        assert_eq!(
            value(name, &[chain]),
            Some(0.0),
            "{name} of the chain:\n{text}"
        );
    }
    for name in [
        "livechain_ws_reconnects_total",
        "livechain_provider_malformed_total",
        "livechain_hedged_requests_total",
        "livechain_failovers_total",
        "livechain_breaker_transitions_total",
        "livechain_provider_missed_total",
    ] {
        for provider in ["provider=\"p0\"", "provider=\"p1\""] {
            assert!(
                value(name, &[chain, provider]).is_some(),
                "no {name} for {provider}:\n{text}"
            );
        }
    }
    for name in [
        "livechain_writer_errors_total",
        "livechain_stream_lagged_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "no {name}:\n{text}"
        );
    }
    app.stop().await;
}
