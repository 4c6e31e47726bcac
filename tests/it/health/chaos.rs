//! The chaos run: three devnet providers, faults in turn while events flow — one drops its
//! sockets over and over, one stalls silently, one sends garbage, one rate-limits, two die at
//! once — and the verdict: zero lost, zero duplicated, breakers open within their threshold,
//! traffic fails over, everything recovers when the faults are lifted, and no upstream
//! subscription leaks. Prints the two figures BENCHMARKS.md records (never asserted).

use std::time::Instant;

use super::*;

const THRESHOLD: u64 = 3;

fn chaos_yaml() -> String {
    format!(
        "breaker: {{ failure_threshold: {THRESHOLD}, recovery_timeout: 2000, success_threshold: 2 }}\n\
         health: {{ max_lag_blocks: 10, stall_timeout: 1000 }}\n"
    )
}

/// Waits (bounded) until every provider holds exactly the subscriptions the listener needs:
/// one `newHeads`, one `logs`.
async fn wait_subscriptions(devnet: &Devnet) {
    let exact = || async {
        (0..3)
            .all(|i| devnet.active_subscriptions(i) == 2)
            .then_some(())
    };
    if support::wait_for(WAIT, POLL, exact).await.is_none() {
        panic!(
            "subscriptions per provider: {:?}, expected 2 each",
            (0..3)
                .map(|i| devnet.active_subscriptions(i))
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_duplicates_nothing_and_recovers() {
    let devnet = support::devnet(3, 100, 5, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db, "chaos", &chaos_yaml()).await;
    let id = |i: usize| format!("chaos-p{i}");
    wait_subscriptions(&devnet).await;
    wait_checkpoint(&app, 10).await;
    // Baseline for the continuity figures: how long the checkpoint takes to pass the head of
    // a given moment with no fault at all (the range sync trails settled heads).
    let (at, head) = (Instant::now(), devnet.head());
    wait_checkpoint(&app, head + 1).await;
    let baseline = at.elapsed();

    // 1. Provider 0 drops its socket after every 10 notifications: reconnect after reconnect
    // (each one climbing the listener's backoff, so six of them take seconds).
    faults(&devnet, 0).set_drop_after_messages(Some(10));
    let before = metric(&app, "livechain_ws_reconnects_total", &id(0)).await;
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_ws_reconnects_total", &id(0)).await >= before + 6.0).then_some(())
    })
    .await
    .expect("provider 0 reconnected 6 times");
    faults(&devnet, 0).clear();
    wait_subscriptions(&devnet).await;

    // 2. Provider 1 stalls: sockets stay open, nothing is sent, HTTP requests hang.
    let stalled_at = Instant::now();
    let head_at_stall = devnet.head();
    faults(&devnet, 1).set_stalled(true);
    let (stall_detected, stall_continuity) = tokio::join!(
        async {
            wait_provider(&app, &id(1), "stall detected", |p| p["healthy"] == false).await;
            stalled_at.elapsed()
        },
        async {
            wait_checkpoint(&app, head_at_stall + 1).await;
            stalled_at.elapsed()
        }
    );
    let recycles = metric(&app, "livechain_ws_reconnects_total", &id(1)).await;
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_ws_reconnects_total", &id(1)).await > recycles).then_some(())
    })
    .await
    .expect("the stalled provider's listener was recycled");
    let head = devnet.head();
    wait_checkpoint(&app, head).await; // the others carry on
    faults(&devnet, 1).clear();
    // Closed, not only healthy (half-open counts as healthy): the next phases count failures
    // from a closed breaker.
    wait_provider(&app, &id(1), "closed and healthy after the stall", |p| {
        p["healthy"] == true && p["breaker"]["state"] == "closed"
    })
    .await;

    // 3. Provider 2 sends a garbage frame every 3 messages: dropped, counted, nothing lost.
    let malformed = metric(&app, "livechain_provider_malformed_total", &id(2)).await;
    faults(&devnet, 2).set_garbage_every(Some(3));
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_provider_malformed_total", &id(2)).await >= malformed + 5.0)
            .then_some(())
    })
    .await
    .expect("garbage frames counted");
    faults(&devnet, 2).clear();
    wait_provider(&app, &id(2), "closed after the garbage", |p| {
        p["breaker"]["state"] == "closed"
    })
    .await;

    // 4. Provider 0 rate-limits everything (429 with Retry-After): slowed, never tripped.
    faults(&devnet, 0).set_rate_limited(true);
    let limited = || async {
        let text = reqwest::get(app.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let label = format!("provider=\"{}\"", id(0));
        text.lines()
            .any(|l| {
                l.starts_with("livechain_rpc_requests_total{")
                    && l.contains(&label)
                    && l.contains("outcome=\"rate_limited\"")
            })
            .then_some(())
    };
    support::wait_for(WAIT, POLL, limited)
        .await
        .expect("provider 0 answered 429s");
    let head = devnet.head();
    wait_checkpoint(&app, head + 5).await;
    let p0 = provider(&app, &id(0)).await;
    assert_eq!(
        p0["breaker"]["state"], "closed",
        "rate limits never trip: {p0}"
    );
    assert_eq!(p0["breaker"]["consecutive_failures"], 0, "{p0}");
    faults(&devnet, 0).clear();

    // 5. Providers 1 and 2 die at once (5xx over HTTP, connections refused): their breakers
    // open at the threshold, traffic fails over to provider 0, the gap is backfilled.
    let failovers = metric(&app, "livechain_failovers_total", &id(0)).await;
    let died_at = Instant::now();
    let head_at_death = devnet.head();
    for i in [1, 2] {
        faults(&devnet, i).set_server_error(Some(503));
        faults(&devnet, i).set_refuse_connections(true);
    }
    for i in [1, 2] {
        let open = wait_provider(&app, &id(i), "breaker open", |p| {
            p["breaker"]["state"] == "open"
        })
        .await;
        assert_eq!(
            open["breaker"]["consecutive_failures"], THRESHOLD,
            "opened exactly at its threshold: {open}"
        );
    }
    wait_checkpoint(&app, head_at_death + 1).await;
    let continuity = died_at.elapsed();
    let head = devnet.head();
    wait_checkpoint(&app, head).await;
    support::wait_for(WAIT, POLL, || async {
        (metric(&app, "livechain_failovers_total", &id(0)).await > failovers).then_some(())
    })
    .await
    .expect("requests failed over to provider 0");
    let (status, _) = support::get_json(&app.url("/ready")).await;
    assert_eq!(status, 200, "one healthy provider keeps the service ready");
    for i in [1, 2] {
        faults(&devnet, i).clear();
    }
    for i in [1, 2] {
        wait_provider(&app, &id(i), "breaker closed again", |p| {
            p["breaker"]["state"] == "closed" && p["healthy"] == true
        })
        .await;
    }

    // 6. Provider 0, the preferred one, dies alone: the others take over its share.
    let died_at = Instant::now();
    let head_at_death = devnet.head();
    faults(&devnet, 0).set_server_error(Some(503));
    faults(&devnet, 0).set_refuse_connections(true);
    wait_checkpoint(&app, head_at_death + 1).await;
    let preferred_continuity = died_at.elapsed();
    wait_provider(&app, &id(0), "breaker open", |p| {
        p["breaker"]["state"] == "open"
    })
    .await;
    let head = devnet.head();
    wait_checkpoint(&app, head).await;
    faults(&devnet, 0).clear();
    wait_provider(&app, &id(0), "breaker closed again", |p| {
        p["breaker"]["state"] == "closed" && p["healthy"] == true
    })
    .await;

    // The verdict: every block and log exactly once, and no leaked subscription.
    wait_subscriptions(&devnet).await;
    let head = devnet.head();
    let checkpoint = wait_checkpoint(&app, head + 5).await;
    let checked = verify_exactly_once(&app, &devnet, checkpoint).await;
    // `/v1/providers` shows it all, race statistics included.
    let entries = providers(&app).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (id, entry) in &entries {
        for key in [
            "chain",
            "healthy",
            "head",
            "lag_blocks",
            "breaker",
            "latency_ms",
            "error_rate",
            "delivered_first",
            "delivered_late",
            "missed",
            "lateness_ms",
        ] {
            assert!(entry.get(key).is_some(), "{id} has no {key}: {entry}");
        }
        assert!(
            entry["latency_ms"]["p99"].as_f64().is_some(),
            "{id}: {entry}"
        );
    }
    let firsts: u64 = entries
        .values()
        .filter_map(|p| p["delivered_first"].as_u64())
        .sum();
    assert!(firsts > 0, "someone delivered first: {entries:?}");
    let reconnects: Vec<f64> = {
        let mut all = Vec::new();
        for i in 0..3 {
            all.push(metric(&app, "livechain_ws_reconnects_total", &id(i)).await);
        }
        all
    };
    let hedged = metric(&app, "livechain_hedged_requests_total", &id(1)).await;
    eprintln!(
        "chaos: no fault->continuity {} ms (baseline); stall->detected {} ms; stall->backfilled continuity {} ms; death of 2 providers->backfilled continuity {} ms; \
         death of the preferred provider->backfilled continuity {} ms; \
         {checked} events to checkpoint {checkpoint} exactly once; reconnects {reconnects:?}; ranges hedged away from the stalled provider {hedged}",
        baseline.as_millis(),
        stall_detected.as_millis(),
        stall_continuity.as_millis(),
        continuity.as_millis(),
        preferred_continuity.as_millis()
    );
    app.stop().await;
}
