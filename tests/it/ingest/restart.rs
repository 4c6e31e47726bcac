//! A graceful restart resumes from the committed checkpoint: the blocks produced while the
//! service was down are filled, nothing below the checkpoint is fetched again, and cursors only
//! grow.

use std::collections::HashMap;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_and_fills_the_gap() {
    let devnet = devnet(3, 20, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");

    let app = start(&devnet, &db).await;
    wait_reported(&app, 50).await;
    wait_committed(&db, 50).await;
    app.stop().await;
    let stopped_at = committed_checkpoint(&db)
        .await
        .expect("a checkpoint was committed");
    let before = db_rows(&db).await;
    verify(&devnet, &before, stopped_at);

    // The chain moves on while the service is down.
    let head = devnet.head();
    assert!(
        devnet.wait_for_head(head + 50, WAIT).await,
        "devnet did not produce 50 blocks"
    );

    let app = start(&devnet, &db).await;
    // The first checkpoint the restarted sync reports is the stored one or later: it resumes
    // rather than starting over.
    let first = support::wait_for(WAIT, POLL, || support::checkpoint(&app.base, CHAIN))
        .await
        .expect("the restarted service reports a checkpoint");
    assert!(
        first >= stopped_at,
        "restarted at checkpoint {first}, below the stored {stopped_at}"
    );
    let target = devnet.head() + 10;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    let after = api_rows(&app.base).await;
    let verdict = verify(&devnet, &after, checkpoint);

    // Rows stored before the stop are the same rows (same cursor). Those at or below the
    // checkpoint were not delivered again (no fetch below the checkpoint: their delivery count
    // is unchanged); those above it were stored live ahead of the sync, which re-reads them.
    let now: HashMap<&Identity, &Stored> = after.iter().map(|r| (&r.id, r)).collect();
    for old in &before {
        let new = now
            .get(&old.id)
            .unwrap_or_else(|| panic!("{:?} was stored before the restart and is gone", old.id));
        assert_eq!(new.cursor, old.cursor, "{:?} changed its cursor", old.id);
        if old.id.0 <= stopped_at {
            assert_eq!(
                new.providers_seen, old.providers_seen,
                "{:?} (at or below the checkpoint {stopped_at}) was delivered again",
                old.id
            );
        }
    }
    // Everything new has a cursor above everything old.
    let last_old = before.iter().map(|r| r.cursor).max().unwrap_or(0);
    let known: BTreeSet<&Identity> = before.iter().map(|r| &r.id).collect();
    let fresh: Vec<&Stored> = after.iter().filter(|r| !known.contains(&r.id)).collect();
    assert!(!fresh.is_empty(), "nothing was stored after the restart");
    if let Some(low) = fresh.iter().min_by_key(|r| r.cursor) {
        assert!(
            low.cursor > last_old,
            "{:?} stored after the restart has cursor {}, not above the last cursor before it \
             ({last_old})",
            low.id,
            low.cursor
        );
    }
    eprintln!(
        "restart: stopped at checkpoint {stopped_at} with {} rows, resumed at {first}, caught up \
         to {checkpoint}: {} rows complete, {} new rows",
        before.len(),
        verdict.complete,
        fresh.len()
    );
    app.stop().await;
}

/// `providers_seen` counts providers, not deliveries: after a restart the aggregator's memory of
/// what it sent is empty, so the range sync's re-read of rows stored live ahead of the
/// checkpoint is a first sighting and reaches the writer again; the row's providers mask makes
/// that copy count nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_seen_never_exceeds_the_providers_across_a_restart() {
    let devnet = devnet(3, 20, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;
    let stalled_at = wait_committed(&db, 10).await;
    // Every provider refuses every `eth_getLogs` (HTTP only: the WebSocket streams go on), so
    // the checkpoint stops while all three providers keep delivering new blocks live.
    let faults = |i| devnet.faults(i).expect("provider exists");
    for i in 0..3 {
        faults(i).set_max_logs_range(Some(0));
    }
    assert!(
        devnet.wait_for_head(devnet.head() + 40, WAIT).await,
        "devnet stalled"
    );
    app.stop().await;
    let stopped_at = committed_checkpoint(&db).await.expect("a checkpoint");
    let before = db_rows(&db).await;
    let ahead = before
        .iter()
        .filter(|r| r.id.0 > stopped_at && r.providers_seen == 3)
        .count();
    assert!(
        ahead > 0,
        "no row delivered by all three providers ahead of the checkpoint {stopped_at} \
         (stalled at {stalled_at}): nothing to re-read"
    );

    for i in 0..3 {
        faults(i).set_max_logs_range(None);
    }
    let app = start(&devnet, &db).await;
    let target = devnet.head() + 10;
    let checkpoint = wait_committed(&db, target).await;
    let after = api_rows(&app.base).await;
    verify(&devnet, &after, checkpoint);
    let over: Vec<_> = after
        .iter()
        .filter(|r| r.providers_seen > 3)
        .map(|r| (&r.id, r.providers_seen))
        .collect();
    assert!(
        over.is_empty(),
        "{} rows count more deliveries than the chain has providers (3), e.g. {:?}; {ahead} \
         rows delivered by all three were ahead of the checkpoint {stopped_at} at the stop",
        over.len(),
        &over[..over.len().min(3)]
    );
    app.stop().await;
}
