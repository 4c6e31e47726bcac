//! Providers dropping their sockets mid-stream: the listeners reconnect (and re-subscribe
//! without leaking subscriptions), and the stored data has no hole and no duplicate.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_sockets_reconnect_and_lose_nothing() {
    let devnet = devnet(3, 20, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    // Provider ids of our own: the metrics registry is shared by every test of this process.
    let app = start_as(&devnet, &db, "sockdrop").await;
    let subscribed = || async {
        (0..3)
            .all(|i| devnet.active_subscriptions(i) == 2)
            .then_some(())
    };
    support::wait_for(WAIT, POLL, subscribed)
        .await
        .expect("every provider subscribed");
    wait_reported(&app, 20).await;

    let faults = |i| devnet.faults(i).expect("provider exists");
    // Provider 0 and 2 lose their sockets at once; provider 1 closes every connection after 50
    // notifications, so for a while no socket may be up at all.
    faults(0).drop_sockets();
    faults(2).drop_sockets();
    faults(1).set_drop_after_messages(Some(50));
    let counts = support::wait_for(WAIT, POLL, || async {
        let counts = [
            reconnects(&app, "sockdrop-p0").await,
            reconnects(&app, "sockdrop-p1").await,
            reconnects(&app, "sockdrop-p2").await,
        ];
        (counts[0] >= 1 && counts[1] >= 3 && counts[2] >= 1).then_some(counts)
    })
    .await
    .expect("the listeners reconnected");
    faults(1).set_drop_after_messages(None);

    // Back to one `newHeads` and one `logs` subscription per provider: none leaked by the
    // dropped connections.
    support::wait_for(WAIT, POLL, subscribed)
        .await
        .unwrap_or_else(|| {
            panic!(
                "subscriptions per provider: {:?}, expected 2 each",
                (0..3)
                    .map(|i| devnet.active_subscriptions(i))
                    .collect::<Vec<_>>()
            )
        });

    let target = devnet.head() + 20;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    let stored = api_rows(&app.base).await;
    let verdict = verify(&devnet, &stored, checkpoint);
    eprintln!(
        "dropped sockets: reconnects {counts:?}, checkpoint {checkpoint}, {} rows complete",
        verdict.complete
    );
    app.stop().await;
}

/// A node that has the blocks but not yet their logs (one behind a load balancer) answers
/// `eth_getLogs` with `[]`. With a filter taking every log, a block with a non-empty logs bloom
/// and no log is refused and read from another provider: nothing is checkpointed without its
/// logs. HTTP only, so the range sync is the only source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answering_no_logs_for_blocks_that_have_some_is_not_believed() {
    let devnet = devnet(3, 20, 0).await;
    let (app, verdict, stored, _dir) = index_with_provider_0_omitting_logs(&devnet, 150).await;
    assert!(
        stored >= 150 * 20,
        "the logs are there ({stored} stored): {verdict:?}"
    );
    app.stop().await;
}

/// The same node during a backfill: three ranges in flight at a time, one per provider. A range
/// the first provider answered without its logs is asked again of the next provider, never of
/// the same one again and again (turns advance once per range, so with as many ranges in
/// flight as providers the retry used to land on the provider that had failed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_range_refused_for_missing_logs_is_asked_of_another_provider() {
    let devnet = devnet(3, 60_000, 1_500).await;
    let (app, verdict, _, _dir) = index_with_provider_0_omitting_logs(&devnet, 1_500).await;
    assert!(
        verdict.complete > 1_500 * 20,
        "every block and log up to the checkpoint: {verdict:?}"
    );
    app.stop().await;
}

/// Indexes `devnet` over HTTP only (the range sync the only source) while its first provider
/// by priority omits every log, until the checkpoint reaches `block`. Returns the service, the
/// verdict, how many logs are stored, and the database's directory (kept alive).
async fn index_with_provider_0_omitting_logs(
    devnet: &TestDevnet,
    block: u64,
) -> (TestApp, Verdict, usize, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    devnet.faults(0).expect("provider 0").set_omit_logs(true);
    let yaml: String = support::service_yaml(devnet, &db)
        .lines()
        .filter(|line| !line.trim_start().starts_with("ws_url:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let app = support::start_app(support::parse_config(&yaml)).await;
    let checkpoint = wait_committed(&db, block).await;
    let stored = api_rows(&app.base).await;
    let verdict = verify(devnet, &stored, checkpoint);
    let logs = stored.iter().filter(|r| r.id.2.is_some()).count();
    (app, verdict, logs, dir)
}
