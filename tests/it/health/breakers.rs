//! Breakers across a restart, and readiness that follows provider health.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use super::*;

/// The recovery timeout of these tests: long enough that a restart fits inside it.
const RECOVERY_MS: i64 = 10_000;

fn breaker_yaml() -> String {
    format!(
        "breaker: {{ failure_threshold: 2, recovery_timeout: {RECOVERY_MS}, success_threshold: 1 }}\n\
         health: {{ max_lag_blocks: 20, stall_timeout: 2000 }}\n"
    )
}

/// `(state, opened_at, updated_at)` of a provider's row in `breakers`.
async fn breaker_row(db: &Path, provider: &str) -> Option<(String, Option<i64>, i64)> {
    let options = SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open the database read-only");
    let row = sqlx::query(
        "SELECT state, opened_at, updated_at FROM breakers WHERE chain = ? AND provider = ?",
    )
    .bind(CHAIN)
    .bind(provider)
    .fetch_optional(&mut conn)
    .await
    .expect("read breakers");
    let _ = conn.close().await;
    row.map(|r| (r.get(0), r.get(1), r.get(2)))
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_stays_open_across_a_restart_until_its_recovery_time() {
    let devnet = support::devnet(3, 50, 2, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db, "brk", &breaker_yaml()).await;
    wait_checkpoint(&app, 5).await;

    // Provider 1 dies: its HTTP answers 503 and its port refuses connections.
    faults(&devnet, 1).set_server_error(Some(503));
    faults(&devnet, 1).set_refuse_connections(true);
    let open = wait_provider(&app, "brk-p1", "breaker open", |p| {
        p["breaker"]["state"] == "open"
    })
    .await;
    assert_eq!(
        open["breaker"]["consecutive_failures"], 2,
        "opened at its threshold: {open}"
    );
    assert_eq!(open["healthy"], false);
    assert_eq!(open["unhealthy_reason"], "breaker_open", "{open}");
    // Its errors by kind: answered 503s and refused connections, nothing it never did.
    let by_class = open["errors_by_class"]
        .as_object()
        .expect("errors_by_class");
    assert_eq!(by_class.len(), 11, "every kind listed: {open}");
    let count = |kind: &str| by_class[kind].as_u64().expect("a count");
    let refused = ["http_status", "connect", "transport", "closed"];
    assert!(refused.iter().map(|k| count(k)).sum::<u64>() > 0, "{open}");
    assert_eq!(
        count("rate_limited") + count("range") + count("caller"),
        0,
        "{open}"
    );
    assert!(
        metric(&app, "livechain_provider_errors_total", "brk-p1").await > 0.0,
        "the errors are in /metrics too"
    );
    let history = open["breaker"]["history"].as_array().expect("a history");
    let last = history.last().expect("the transition that opened it");
    assert_eq!(
        (&last["from"], &last["to"]),
        (&"closed".into(), &"open".into()),
        "{open}"
    );
    assert_eq!(last["at"], open["breaker"]["opened_at"], "{open}");
    let opened_at = open["breaker"]["opened_at"].clone();
    // Persisted as it happened (the monitor saves each transition).
    let saved = support::wait_for(WAIT, POLL, || async {
        breaker_row(&db, "brk-p1")
            .await
            .filter(|(state, opened, _)| state == "open" && opened.is_some())
    })
    .await
    .expect("the open breaker is saved");
    let opened_ms = saved.1.expect("opened_at saved");
    app.stop().await;

    // Restart on the same database, the provider still dead: the breaker comes back open with
    // the same `opened_at`, before any request could have opened it again.
    let app = start(&devnet, &db, "brk", &breaker_yaml()).await;
    let restored = provider(&app, "brk-p1").await;
    let now = wall_ms();
    assert!(
        now < opened_ms + RECOVERY_MS,
        "the restart took the whole recovery time; the test proves nothing"
    );
    assert_eq!(restored["breaker"]["state"], "open", "{restored}");
    assert_eq!(restored["breaker"]["opened_at"], opened_at);
    assert_eq!(restored["healthy"], false);

    // The provider comes back; the breaker half-opens only once `opened_at + recovery` has
    // passed on the wall clock, then closes on a successful probe.
    faults(&devnet, 1).clear();
    let closed = wait_provider(&app, "brk-p1", "breaker closed", |p| {
        p["breaker"]["state"] == "closed"
    })
    .await;
    assert_eq!(closed["breaker"]["consecutive_failures"], 0);
    let (state, _, updated_ms) = support::wait_for(WAIT, POLL, || async {
        breaker_row(&db, "brk-p1")
            .await
            .filter(|(state, _, _)| state == "closed")
    })
    .await
    .expect("the closed breaker is saved");
    assert_eq!(state, "closed");
    assert!(
        updated_ms >= opened_ms + RECOVERY_MS,
        "closed at {updated_ms}, before opened_at {opened_ms} + recovery {RECOVERY_MS}"
    );
    let head = devnet.head();
    let checkpoint = wait_checkpoint(&app, head).await;
    verify_exactly_once(&app, &devnet, checkpoint).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_false_when_no_provider_is_healthy() {
    let devnet = support::devnet(1, 50, 1, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let extra = "breaker: { failure_threshold: 1, recovery_timeout: 500, success_threshold: 1 }\n\
                 health: { max_lag_blocks: 20, stall_timeout: 1000 }\n";
    let app = start(&devnet, &db, "ready", extra).await;
    let ready = || async { (support::get_json(&app.url("/ready")).await.0 == 200).then_some(()) };
    support::wait_for(WAIT, POLL, ready)
        .await
        .expect("ready with a healthy provider");

    faults(&devnet, 0).set_server_error(Some(503));
    faults(&devnet, 0).set_refuse_connections(true);
    let (status, body) = support::wait_for(WAIT, POLL, || async {
        let (status, body) = support::get_json(&app.url("/ready")).await;
        (status == 503).then_some((status, body))
    })
    .await
    .expect("not ready once the only provider is down");
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "not_ready", "{body}");

    faults(&devnet, 0).clear();
    support::wait_for(WAIT, POLL, ready)
        .await
        .expect("ready again once the provider recovers");
    app.stop().await;
}
