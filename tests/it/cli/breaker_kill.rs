//! A breaker transition anyone saw survives `kill -9`: the real binary, a provider failing
//! until its breaker opens, SIGKILL the moment `/v1/providers` shows it open, and after the
//! restart the breaker is open with the same `opened_at` — before any request could have
//! opened it again. Done several times, each kill as close to the transition as polling gets.

use super::*;

/// The provider answers 503 and refuses connections: every request fails.
fn dead(devnet: &livechain::devnet::Devnet, on: bool) {
    let faults = devnet.faults(1).expect("provider 1");
    faults.set_server_error(on.then_some(503));
    faults.set_refuse_connections(on);
}

async fn provider(base: &str, id: &str) -> Value {
    let (_, body) = support::get_json(&format!("{base}/v1/providers")).await;
    body["providers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

async fn breaker(base: &str, id: &str) -> Value {
    provider(base, id).await["breaker"].clone()
}

/// Whether `id` has answered a request in this run: until it has, its breaker is in its
/// start-up phase, where failures back off but never open it.
async fn has_answered(base: &str, id: &str) -> bool {
    let p = provider(base, id).await;
    let (requests, errors) = (p["requests"].as_u64(), p["errors"].as_u64());
    requests.zip(errors).is_some_and(|(r, e)| r > e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_seen_open_is_open_after_a_sigkill_the_moment_after() {
    let devnet = support::devnet(2, 100, 2, 5).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let yaml = std::fs::read_to_string(service_config(dir.path(), &devnet, port)).expect("config")
        + "breaker: { failure_threshold: 2, recovery_timeout: 600000, success_threshold: 1 }\n";
    let config = write_file(dir.path(), "kill.yaml", &yaml);

    for round in 0..5 {
        dead(&devnet, false);
        let mut child = start(&config, dir.path(), &base, round).await;
        let answered = support::wait_for(WAIT, Duration::from_millis(20), || async {
            has_answered(&base, "p1").await.then_some(())
        })
        .await;
        assert!(
            answered.is_some(),
            "round {round}: p1 never answered\n{}",
            child.output()
        );
        dead(&devnet, true);
        let seen = support::wait_for(WAIT, Duration::from_millis(5), || async {
            let b = breaker(&base, "p1").await;
            (b["state"] == "open").then_some(b)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "round {round}: the breaker never opened\n{}",
                child.output()
            )
        });
        kill(&mut child);

        // Restarted on the same database: open, the same opening.
        let mut child = start(&config, dir.path(), &base, 10 + round).await;
        let restored = breaker(&base, "p1").await;
        assert_eq!(restored["state"], "open", "round {round}: {restored}");
        assert_eq!(restored["opened_at"], seen["opened_at"], "round {round}");
        kill(&mut child);
        // The next round starts from a closed breaker: forget this one.
        forget_breakers(&dir.path().join("livechain.db")).await;
    }
}

/// Deletes every saved breaker (the service is stopped).
async fn forget_breakers(db: &Path) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the database opens");
    sqlx::query("DELETE FROM breakers")
        .execute(&mut conn)
        .await
        .expect("breakers forgotten");
}
