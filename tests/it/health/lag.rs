//! A provider falling behind the chain: unhealthy, its listener recycled, HTTP work moved to
//! the others, and healthy again once it catches up; each change counted with its reason.

use super::*;

/// `livechain_provider_health_transitions_total` of `provider` to `to` (summed over reasons,
/// or of `reason` only).
async fn transitions(app: &TestApp, provider: &str, to: &str, reason: Option<&str>) -> f64 {
    let text = support::metrics_text(app).await;
    let wanted = [
        format!("provider=\"{provider}\""),
        format!("to=\"{to}\""),
        reason.map_or_else(String::new, |r| format!("reason=\"{r}\"")),
    ];
    text.lines()
        .filter(|l| l.starts_with("livechain_provider_health_transitions_total{"))
        .filter(|l| wanted.iter().all(|w| l.contains(w.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the first series of `name` whose labels contain every one of `labels`.
async fn series(app: &TestApp, name: &str, labels: &[&str]) -> Option<f64> {
    let text = support::metrics_text(app).await;
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|w| l.contains(w)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_provider_is_unhealthy_recycled_and_skipped() {
    let devnet = support::devnet(3, 50, 2, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let extra = "health: { max_lag_blocks: 5, stall_timeout: 2000 }\n";
    let app = start(&devnet, &db, "lag", extra).await;
    wait_checkpoint(&app, 5).await;
    wait_provider(&app, "lag-p1", "healthy", |p| p["healthy"] == true).await;

    let reconnects = metric(&app, "livechain_ws_reconnects_total", "lag-p1").await;
    faults(&devnet, 1).set_lag_blocks(20);
    let lagging = wait_provider(&app, "lag-p1", "unhealthy by lag", |p| {
        p["healthy"] == false && p["lag_blocks"].as_u64().is_some_and(|lag| lag > 5)
    })
    .await;
    assert_eq!(
        lagging["breaker"]["state"], "closed",
        "lag is not a fault of a request: {lagging}"
    );
    assert_eq!(lagging["unhealthy_reason"], "lagging", "{lagging}");
    support::wait_for(WAIT, POLL, || async {
        (transitions(&app, "lag-p1", "unhealthy", Some("lagging")).await >= 1.0).then_some(())
    })
    .await
    .expect("the turn to unhealthy counted, with its reason");
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_ws_reconnects_total", "lag-p1").await > reconnects).then_some(())
    })
    .await
    .expect("the lagging provider's listener was recycled");
    // The others carry the chain meanwhile.
    let head = devnet.head();
    wait_checkpoint(&app, head + 10).await;

    faults(&devnet, 1).clear();
    let healthy = wait_provider(&app, "lag-p1", "healthy after catching up", |p| {
        p["healthy"] == true
    })
    .await;
    assert!(healthy["unhealthy_reason"].is_null(), "{healthy}");
    support::wait_for(WAIT, POLL, || async {
        (transitions(&app, "lag-p1", "healthy", None).await >= 1.0).then_some(())
    })
    .await
    .expect("the turn back to healthy counted");
    assert_eq!(
        transitions(&app, "lag-p0", "unhealthy", None).await,
        0.0,
        "a provider that kept up never turned"
    );
    // The other metrics an operator watches a provider and the process by.
    let p0 = "provider=\"lag-p0\"";
    assert_eq!(
        series(&app, "livechain_provider_connected{", &[p0]).await,
        Some(1.0)
    );
    assert!(
        series(&app, "livechain_breaker_consecutive_failures{", &[p0])
            .await
            .is_some()
    );
    let handled = series(
        &app,
        "livechain_aggregation_duration_seconds_count{",
        &["input=\"live\""],
    );
    assert!(handled.await.is_some_and(|n| n > 0.0), "aggregation timed");
    for name in ["process_resident_memory_bytes ", "process_open_fds "] {
        assert!(
            series(&app, name, &[]).await.is_some_and(|v| v > 0.0),
            "{name}"
        );
    }
    let head = devnet.head();
    let checkpoint = wait_checkpoint(&app, head).await;
    verify_exactly_once(&app, &devnet, checkpoint).await;
    app.stop().await;
}
