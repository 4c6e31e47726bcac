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
