//! Every long-running task is supervised: `/v1/processes` lists them, a killed part of the
//! pipeline restarts it from the committed checkpoint with nothing lost or stored twice, a
//! killed listener or publisher restarts alone, and the set survives a restart.

use livechain::registry::ProcessKey;

use super::*;

/// `(kind, id) -> (status, restarts, last_error)` from `/v1/processes`.
async fn processes(app: &TestApp) -> BTreeMap<(String, String), (String, u64, Option<String>)> {
    let (status, body) = support::get_json(&app.url("/v1/processes")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["healthy"], true, "{body}");
    body["processes"]
        .as_array()
        .expect("a processes array")
        .iter()
        .map(|p| {
            let text = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (
                (text("kind"), text("id")),
                (
                    text("status"),
                    p["restarts"].as_u64().expect("restarts"),
                    p["last_error"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

fn keys(list: &BTreeMap<(String, String), (String, u64, Option<String>)>) -> Vec<String> {
    list.keys().map(|(k, i)| format!("{k}/{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_tasks_restart_and_nothing_is_lost_or_stored_twice() {
    let devnet = devnet(3, 20, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;
    let all = [
        "listener/devnet/p0",
        "listener/devnet/p1",
        "listener/devnet/p2",
        "monitor/devnet",
        "pipeline/ingest",
        "publisher/hub",
        "race/devnet",
    ];
    let listed = processes(&app).await;
    assert_eq!(keys(&listed), all);
    assert!(
        listed
            .values()
            .all(|(s, r, e)| s == "running" && *r == 0 && e.is_none()),
        "{listed:?}"
    );

    // Kill the pipeline three times while blocks keep coming, then a listener and the
    // publisher: each comes back, and the data stays exactly once.
    let supervisor = &app.running().supervisor;
    let pipeline = ProcessKey::new("pipeline", "ingest");
    for round in 1..=3u64 {
        let at = wait_committed(&db, devnet.head()).await;
        assert!(supervisor.kill(&pipeline), "the pipeline is live");
        support::wait_for(WAIT, POLL, || async {
            let (status, restarts, _) =
                processes(&app).await[&("pipeline".into(), "ingest".into())].clone();
            (status == "running" && restarts == round).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the pipeline did not come back after kill {round}"));
        wait_committed(&db, at + 20).await;
    }
    assert!(supervisor.kill(&ProcessKey::new("listener", "devnet/p1")));
    assert!(supervisor.kill(&ProcessKey::new("publisher", "hub")));
    let listed = support::wait_for(WAIT, POLL, || async {
        let listed = processes(&app).await;
        listed
            .values()
            .all(|(s, _, _)| s == "running")
            .then_some(listed)
    })
    .await
    .expect("every process running again");
    let pipeline_row = &listed[&("pipeline".into(), "ingest".into())];
    assert_eq!(pipeline_row.1, 3, "{listed:?}");
    assert_eq!(pipeline_row.2.as_deref(), Some("killed on request"));
    assert_eq!(listed[&("listener".into(), "devnet/p1".into())].1, 1);
    assert_eq!(listed[&("publisher".into(), "hub".into())].1, 1);
    assert_eq!(listed[&("listener".into(), "devnet/p0".into())].1, 0);

    let checkpoint = wait_committed(&db, devnet.head() + 20).await;
    verify(&devnet, &api_rows(&app.base).await, checkpoint);
    app.stop().await;

    // The desired set and each one's status were saved; the next start lists the same set.
    let mut conn = open_db(&db).await;
    let saved: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, id, desired FROM processes ORDER BY kind, id")
            .fetch_all(&mut conn)
            .await
            .expect("processes rows");
    assert_eq!(
        saved
            .iter()
            .map(|(k, i, _)| format!("{k}/{i}"))
            .collect::<Vec<_>>(),
        all
    );
    assert!(
        saved.iter().all(|(_, _, desired)| *desired == 1),
        "{saved:?}"
    );
    let app = start(&devnet, &db).await;
    assert_eq!(keys(&processes(&app).await), all);
    app.stop().await;
}

/// A provider with no `ws_url` is polled over HTTP; its listener idles instead of returning
/// (which the supervisor would count as a death and restart, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_only_provider_indexes_without_its_listener_restarting() {
    let devnet = devnet(1, 50, 5).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let yaml = support::service_yaml(&devnet, &db);
    let http_only: String = yaml
        .lines()
        .filter(|l| !l.trim_start().starts_with("ws_url:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(http_only, yaml, "the ws_url line was dropped");
    let app = support::start_app(support::parse_config(&http_only)).await;
    wait_committed(&db, 15).await;
    let list = processes(&app).await;
    let listener = list
        .get(&("listener".to_owned(), "devnet/p0".to_owned()))
        .unwrap_or_else(|| panic!("no listener in {:?}", keys(&list)));
    assert_eq!(listener.1, 0, "the listener restarted: {listener:?}");
    assert_eq!(listener.0, "running", "{listener:?}");
    app.stop().await;
}
