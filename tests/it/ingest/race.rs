//! The race between providers: a provider slowed by the devnet delivers late by about its
//! delay, the others deliver first, and the totals survive a restart (`provider_stats`).

use super::*;
use livechain::ingest::race::ProviderRace;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_late_by_its_delay_and_the_totals_survive_a_restart() {
    let devnet = devnet(3, 20, 0).await;
    // Every notification and response of provider 2 waits 40 ms after its block.
    devnet.faults(2).expect("provider 2").set_latency_ms(40);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;
    support::wait_for(WAIT, POLL, || async {
        (0..3)
            .all(|i| devnet.active_subscriptions(i) >= 2)
            .then_some(())
    })
    .await
    .expect("all three providers subscribed");
    let from = devnet.head();
    assert!(
        devnet.wait_for_head(from + 60, WAIT).await,
        "devnet stalled"
    );
    wait_committed(&db, from + 60).await;

    let race = || -> Vec<ProviderRace> { app.running().ingest.chains[0].race.snapshot() };
    let first = race();
    assert_eq!(
        first
            .iter()
            .map(|r| r.provider.as_str())
            .collect::<Vec<_>>(),
        ["p0", "p1", "p2"]
    );
    let (fast, slow) = (&first[0..2], &first[2]);
    let won: u64 = fast.iter().map(|r| r.delivered_first).sum();
    // 60 blocks of 1 + 20 events delivered live by all three at least.
    assert!(
        won >= 60 * 21,
        "the fast providers won only {won} races: {first:?}"
    );
    assert!(
        slow.delivered_first * 20 < won,
        "the slowed provider won too often: {first:?}"
    );
    assert!(slow.delivered_late >= 60 * 21, "{first:?}");
    let p50 = slow.lateness_ms.p50.expect("a median lateness");
    // About 40 ms late (buckets are powers of two: the median lies in (32, 64]).
    assert!(
        (16.0..=128.0).contains(&p50),
        "slow p50 {p50} ms: {first:?}"
    );
    for r in fast {
        if let Some(p50) = r.lateness_ms.p50 {
            assert!(p50 < 32.0, "a fast provider is late by {p50} ms: {first:?}");
        }
    }
    app.stop().await;

    // Saved at shutdown; a restart starts from the totals.
    let app = start(&devnet, &db).await;
    let resumed = app.running().ingest.chains[0].race.snapshot();
    let stopped_at = &first;
    for (before, after) in stopped_at.iter().zip(&resumed) {
        assert!(
            after.delivered_first >= before.delivered_first
                && after.delivered_late >= before.delivered_late,
            "totals went back after a restart: {before:?} -> {after:?}"
        );
    }
    let mut conn = open_db(&db).await;
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_lateness WHERE chain = ?")
        .bind(CHAIN)
        .fetch_one(&mut conn)
        .await
        .expect("lateness rows");
    assert!(saved > 0, "no lateness histogram saved");
    app.stop().await;
}
