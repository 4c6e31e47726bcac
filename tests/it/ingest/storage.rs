//! Storage faults: the database locked by another connection, and no file allowed to grow (the
//! process's file size limit lowered under it, as a full disk refuses every new page). In both
//! the writer backs off, `/ready` turns false naming the fault, reads keep being answered,
//! nothing committed is lost or half-written, and the service catches up by itself once the
//! fault goes; a SIGKILL in the middle of the fault changes none of that.

use std::process::Command as StdCommand;

use sqlx::sqlite::SqliteConnectOptions;

use super::crash::Service;
use super::*;

/// `/ready`'s message once it is a 503 whose message contains `needle`.
async fn not_ready_saying(base: &str, needle: &str) -> String {
    let url = format!("{base}/ready");
    let found = support::wait_for(WAIT, POLL, || async {
        let (status, body) = support::get_json(&url).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        (status == 503 && message.contains(needle)).then(|| message.to_owned())
    })
    .await;
    match found {
        Some(message) => message,
        None => panic!(
            "/ready never said {needle:?}: {:?}",
            support::get_json(&url).await
        ),
    }
}

/// Waits (bounded) for `/ready` to answer 200.
async fn ready_again(base: &str) {
    let url = format!("{base}/ready");
    let ready = support::wait_for(WAIT, POLL, || async {
        (support::get_json(&url).await.0 == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "not ready again: {:?}",
        support::get_json(&url).await
    );
}

/// Reads keep being answered from what is committed.
async fn reads_answer(base: &str) {
    let (status, body) = support::get_json(&format!("{base}/v1/events?limit=5")).await;
    assert_eq!(status, 200, "a read during the fault: {body}");
    assert!(!body["events"].as_array().expect("events").is_empty());
}

/// The database file is whole (`PRAGMA integrity_check`).
async fn intact(db: &Path) {
    let mut conn = open_db(db).await;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    let _ = conn.close().await;
    assert_eq!(verdict, "ok");
}

/// The soft limit on the size of any file the process `pid` writes, in bytes (`None`: lifted).
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    let status = StdCommand::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --fsize={soft} failed");
}

/// `livechain_writer_errors_total{kind=…}` summed over kinds, from the service at `base`.
async fn writer_errors(base: &str) -> f64 {
    support::metric_sum(base, "livechain_writer_errors_total{").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_may_grow_then_it_may_and_nothing_is_lost() {
    let devnet = devnet(2, 10, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let config = dir.path().join("livechain.yaml");
    std::fs::write(&config, support::service_yaml(&devnet, &db)).expect("write the config");
    let log = dir.path().join("livechain.log");

    let service = Service::spawn(&config, &log).await;
    wait_committed(&db, 50).await;
    // Every write past the first 4 KiB of any file fails: the WAL cannot take a frame.
    limit_file_size(service.pid(), Some(4096));
    let reason = not_ready_saying(&service.base, "the database is not taking writes").await;
    assert!(
        reason.contains("(io:") || reason.contains("(full:"),
        "the reason names the fault: {reason}"
    );
    assert!(writer_errors(&service.base).await > 0.0);
    reads_answer(&service.base).await;
    let stuck = committed_checkpoint(&db).await;
    assert!(
        devnet.wait_for_head(devnet.head() + 50, WAIT).await,
        "devnet stalled"
    );
    assert_eq!(
        committed_checkpoint(&db).await,
        stuck,
        "nothing commits meanwhile"
    );

    // Lifted: the service catches up by itself, everything exactly once.
    limit_file_size(service.pid(), None);
    ready_again(&service.base).await;
    let checkpoint = wait_committed(&db, devnet.head()).await;
    intact(&db).await;
    verify(&devnet, &db_rows(&db).await, checkpoint);

    // Again, and killed in the middle of it: the restart finds a whole file and catches up.
    limit_file_size(service.pid(), Some(4096));
    not_ready_saying(&service.base, "the database is not taking writes").await;
    service.kill().await;
    intact(&db).await;
    let before = committed_checkpoint(&db).await.expect("a checkpoint");
    verify(&devnet, &db_rows(&db).await, before);
    let service = Service::spawn(&config, &log).await;
    let checkpoint = wait_committed(&db, devnet.head()).await;
    verify(&devnet, &db_rows(&db).await, checkpoint);
    ready_again(&service.base).await;
    service.kill().await;
    eprintln!("file size limit: checkpoint {before} at the kill, {checkpoint} after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_connection_is_waited_out() {
    let devnet = devnet(2, 10, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;
    wait_committed(&db, 30).await;

    // Another connection takes the write lock and keeps it.
    let options = SqliteConnectOptions::new().filename(&db);
    let mut other = SqliteConnection::connect_with(&options)
        .await
        .expect("open the database");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let reason = not_ready_saying(&app.base, "(locked:").await;
    assert!(reason.contains("database is locked"), "{reason}");
    reads_answer(&app.base).await;
    let stuck = committed_checkpoint(&db).await;
    assert!(
        devnet.wait_for_head(devnet.head() + 30, WAIT).await,
        "devnet stalled"
    );
    assert_eq!(
        committed_checkpoint(&db).await,
        stuck,
        "nothing commits meanwhile"
    );

    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("release the lock");
    let _ = other.close().await;
    ready_again(&app.base).await;
    let checkpoint = wait_committed(&db, devnet.head()).await;
    verify(&devnet, &db_rows(&db).await, checkpoint);
    app.stop().await;
}
