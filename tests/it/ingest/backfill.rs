//! Backfill over HTTP: history fetched in ranges the providers accept, meeting the live stream
//! with neither a gap nor a duplicate.

use super::*;

/// `/v1/chains`' `backfill.range_limit` for the chain.
async fn range_limit(app: &TestApp) -> u64 {
    let (status, body) = support::get_json(&app.url("/v1/chains")).await;
    assert_eq!(status, 200, "{body}");
    body["chains"]
        .as_array()
        .and_then(|chains| chains.iter().find(|c| c["name"] == CHAIN))
        .and_then(|c| c["backfill"]["range_limit"].as_u64())
        .unwrap_or_else(|| panic!("no range_limit for {CHAIN} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_sync_halves_refused_ranges_until_accepted() {
    const LIMIT: u64 = 50;
    let devnet = devnet(3, 50, 600).await;
    for i in 0..3 {
        devnet
            .faults(i)
            .expect("provider exists")
            .set_max_logs_range(Some(LIMIT));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;

    let target = 600 + 10;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    let stored = api_rows(&app.base).await;
    let verdict = verify(&devnet, &stored, checkpoint);

    // Halving stops at the first range the providers accept: within the limit, and more than
    // half of it.
    let limit = range_limit(&app).await;
    assert!(
        limit <= LIMIT && limit > LIMIT / 2,
        "range_limit {limit}: expected the first halving of 256 within {LIMIT}"
    );
    eprintln!(
        "range limit: learned {limit} (providers refuse more than {LIMIT}), checkpoint \
         {checkpoint}, {} rows complete",
        verdict.complete
    );
    app.stop().await;
}

/// Each provider's `range_limit` from `/v1/providers`, by id.
async fn provider_limits(app: &TestApp) -> Vec<(String, u64)> {
    let (status, body) = support::get_json(&app.url("/v1/providers")).await;
    assert_eq!(status, 200, "{body}");
    body["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["chain"] == CHAIN)
        .map(|p| {
            let limit = p["range_limit"].as_u64();
            let limit = limit.unwrap_or_else(|| panic!("no range_limit in {p}"));
            (p["id"].as_str().unwrap_or("?").to_owned(), limit)
        })
        .collect()
}

/// One provider refusing long ranges learns its own limit; the other keeps its own and is
/// asked the long ranges, so the chain's ranges stay long and the history is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusing_long_ranges_gets_its_own_limit() {
    const LIMIT: u64 = 50;
    let devnet = devnet(2, 50, 1_500).await;
    devnet
        .faults(0)
        .expect("provider 0")
        .set_max_logs_range(Some(LIMIT));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;

    let target = 1_500 + 10;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    let stored = api_rows(&app.base).await;
    verify(&devnet, &stored, checkpoint);

    let limits = provider_limits(&app).await;
    let limit_of = |id: &str| limits.iter().find(|(p, _)| p == id).map(|(_, l)| *l);
    let p0 = limit_of("p0").unwrap_or_else(|| panic!("p0 in {limits:?}"));
    // Halved below each range it refused; once below the chain's ranges it is asked them last,
    // so it may stop above its true limit: it refused, and never more than that.
    assert!(p0 <= 128, "p0 learned {p0}: {limits:?}");
    assert_eq!(limit_of("p1"), Some(256), "p1 refused nothing: {limits:?}");
    let chain = range_limit(&app).await;
    assert!(
        chain > LIMIT,
        "the chain's ranges stay longer than p0's limit: {chain}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_meets_live_with_neither_gap_nor_duplicate() {
    const HISTORY: u64 = 400;
    let devnet = devnet(3, 20, HISTORY).await;
    // The range sync reads from provider 0 first: slowing it keeps the backfill running while
    // the live stream (providers 1 and 2, and 0 a little later) already stores new blocks.
    devnet.faults(0).expect("provider 0").set_latency_ms(150);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;

    let target = devnet.head() + 50;
    wait_reported(&app, target).await;
    let checkpoint = wait_committed(&db, target).await;
    let stored = api_rows(&app.base).await;
    let verdict = verify(&devnet, &stored, checkpoint);

    // The seam was really crossed: some live block was stored before some history was.
    let first_live = stored
        .iter()
        .filter(|r| r.id.0 > HISTORY)
        .map(|r| r.cursor)
        .min()
        .expect("live blocks stored");
    let last_history = stored
        .iter()
        .filter(|r| r.id.0 <= HISTORY)
        .map(|r| r.cursor)
        .max()
        .expect("history stored");
    assert!(
        first_live < last_history,
        "backfill finished (cursor {last_history}) before the first live row (cursor \
         {first_live}): the seam was not exercised"
    );
    eprintln!(
        "backfill meets live: history 0..={HISTORY}, checkpoint {checkpoint}, {} rows \
         complete; first live cursor {first_live} < last history cursor {last_history}",
        verdict.complete
    );
    app.stop().await;
}

/// `/v1/chains` shows `SyncProgress::checkpoint`, which the range sync sets as soon as it has
/// *sent* a range to the aggregator, before the writer commits it: a client that trusts it and
/// reads `/v1/events?to_block=checkpoint` can miss that range's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_checkpoint_is_always_committed() {
    // A long backfill in wide ranges: each range is a large transaction, the window in which
    // a checkpoint can be announced before it is committed.
    let devnet = devnet(3, 1000, 2000).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = start(&devnet, &db).await;
    let mut samples = 0;
    let mut ahead = Vec::new();
    let started = std::time::Instant::now();
    loop {
        // Reported first: the committed checkpoint only grows, so reading it second is lenient.
        let reported = support::checkpoint(&app.base, CHAIN).await;
        let committed = committed_checkpoint(&db).await;
        samples += 1;
        if reported > committed {
            ahead.push((reported, committed));
        }
        if committed >= Some(2000) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the backfill did not finish within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        ahead.is_empty(),
        "/v1/chains announced a checkpoint not yet committed in {} of {samples} samples \
         (reported, committed): {:?}",
        ahead.len(),
        &ahead[..ahead.len().min(5)]
    );
    app.stop().await;
}

/// `/v1/chains`' `backfill` while one runs (`done_blocks` and the rest null otherwise).
async fn backfill_of(app: &TestApp) -> Value {
    let (_, body) = support::get_json(&app.url("/v1/chains")).await;
    body["chains"][0]["backfill"].clone()
}

/// A long history backfilled in small ranges, the service stopped in the middle and started
/// again on the same file: `/v1/chains` shows the backfill's blocks done moving, its rate and
/// ETA, both times; the end result holds every block and log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_shows_its_progress_and_survives_a_restart() {
    const HISTORY: u64 = 3_000;
    let devnet = devnet(1, 1_000, HISTORY).await;
    devnet
        .faults(0)
        .expect("provider 0")
        .set_max_logs_range(Some(25));
    // Every answer held 50 ms: each run's backfill lasts seconds (progress is read every
    // 500 ms), however fast the machine.
    devnet.faults(0).expect("provider 0").set_latency_ms(50);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("progress.db");
    for run in 0..2 {
        let app = start(&devnet, &db).await;
        let mut seen = Vec::new();
        for _ in 0..400 {
            let backfill = backfill_of(&app).await;
            if let Some(done) = backfill["done_blocks"].as_u64() {
                assert!(
                    backfill["total_blocks"].as_u64() >= Some(done),
                    "{backfill}"
                );
                assert!(
                    backfill["blocks_per_second"].as_f64().is_some(),
                    "{backfill}"
                );
                assert!(backfill["logs_per_second"].as_f64().is_some(), "{backfill}");
                if done > 0 {
                    assert!(backfill["eta_seconds"].as_u64().is_some(), "{backfill}");
                }
                seen.push(done);
            }
            if seen.iter().collect::<BTreeSet<_>>().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("run {run}: blocks done seen {seen:?}");
        let distinct: BTreeSet<u64> = seen.iter().copied().collect();
        assert!(
            distinct.len() >= 3,
            "run {run}: blocks done did not move: {seen:?}"
        );
        if run == 0 {
            app.stop().await;
            continue;
        }
        let checkpoint = wait_committed(&db, devnet.head()).await;
        let gone = support::wait_for(WAIT, POLL, || async {
            backfill_of(&app).await["done_blocks"]
                .is_null()
                .then_some(())
        })
        .await;
        assert!(gone.is_some(), "the progress stays after the backfill");
        verify(&devnet, &db_rows(&db).await, checkpoint);
        app.stop().await;
    }
}

/// An idle node's socket stays up through a backfill several times longer than the stall
/// timeout: a stream with nothing to deliver is not a stalled one while its node's head is the
/// best head (the watchdog once recycled it in the middle of every long backfill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_nodes_socket_stays_up_through_a_long_backfill() {
    const HISTORY: u64 = 2_000;
    // No block during the test: the node's stream has nothing to deliver.
    let devnet = devnet(1, 600_000, HISTORY).await;
    let faults = devnet.faults(0).expect("provider 0");
    faults.set_max_logs_range(Some(25));
    faults.set_latency_ms(40);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("idle.db");
    let yaml = support::service_yaml(&devnet, &db).replace("- id: p", "- id: idle-p")
        + "health: { stall_timeout: 500 }\n";
    let app = support::start_app(support::parse_config(&yaml)).await;

    let started = std::time::Instant::now();
    wait_reported(&app, HISTORY).await;
    let took = started.elapsed();
    let checkpoint = wait_committed(&db, HISTORY).await;
    verify(&devnet, &api_rows(&app.base).await, checkpoint);
    assert!(
        took > std::time::Duration::from_secs(2),
        "the backfill must outlast the stall timeout several times to mean anything: {took:?}"
    );
    assert_eq!(
        reconnects(&app, "idle-p0").await,
        0,
        "the socket was recycled during a {took:?} backfill"
    );
    app.stop().await;
}
