//! Retention end to end: a devnet producing fast with a small `max_events` stays within its
//! window while the file stops growing; `max_age` prunes exactly the expired blocks; `kill -9`
//! in the middle of pruning leaves no half block and a mark that agrees with the data.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use livechain::devnet::GENESIS_TIMESTAMP;

use super::crash::Service;
use super::*;

const LOGS_PER_BLOCK: u64 = 5;

/// A devnet of two providers, one block every `block_time_ms`, five logs a block.
async fn small_devnet(block_time_ms: u64, initial_blocks: u64) -> TestDevnet {
    support::devnet(2, block_time_ms, LOGS_PER_BLOCK as usize, initial_blocks).await
}

/// The service's YAML for `devnet` with a `retention` section for the chain.
fn yaml_with_retention(devnet: &TestDevnet, db: &Path, retention: &str) -> String {
    support::service_yaml(devnet, db) + &format!("    retention: {retention}\n")
}

/// (rows held, lowest block, mark's low block, main file bytes, WAL bytes) of the database.
async fn window(db: &Path) -> (i64, Option<i64>, Option<i64>, i64, u64) {
    let mut conn = open_db(db).await;
    let (rows, lowest): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(block_number) FROM events WHERE chain = (SELECT id FROM names WHERE name = ?)")
            .bind(CHAIN)
            .fetch_one(&mut conn)
            .await
            .expect("count");
    let mark: Option<i64> = sqlx::query_scalar("SELECT low_block FROM retention WHERE chain = ?")
        .bind(CHAIN)
        .fetch_optional(&mut conn)
        .await
        .expect("mark");
    let _ = conn.close().await;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let main = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    (
        rows,
        lowest,
        mark,
        i64::try_from(main).unwrap_or(i64::MAX),
        wal,
    )
}

/// Every stored block from the lowest to the committed checkpoint is there with all its logs,
/// and no log is stored without its block: pruning took whole blocks only.
async fn whole_blocks(db: &Path) -> (u64, u64) {
    let checkpoint = committed_checkpoint(db).await.expect("a checkpoint");
    let mut conn = open_db(db).await;
    let per_block: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT block_number, sum(log_index = -1), sum(log_index >= 0) FROM events \
         WHERE chain = (SELECT id FROM names WHERE name = ?) AND removed = 0 AND block_number <= ? \
         GROUP BY block_number ORDER BY block_number",
    )
    .bind(CHAIN)
    .bind(i64::try_from(checkpoint).expect("checkpoint"))
    .fetch_all(&mut conn)
    .await
    .expect("blocks");
    let _ = conn.close().await;
    for (n, blocks, logs) in &per_block {
        assert_eq!(*blocks, 1, "block {n}: {blocks} headers");
        assert_eq!(*logs, LOGS_PER_BLOCK as i64, "block {n}: {logs} logs");
    }
    let first = per_block.first().map_or(0, |b| b.0);
    let last = per_block.last().map_or(0, |b| b.0);
    assert_eq!(
        per_block.len() as i64,
        last - first + 1,
        "a hole between blocks {first} and {last}"
    );
    (u64::try_from(first).unwrap(), u64::try_from(last).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_chain_stays_within_max_events_and_the_file_stops_growing() {
    const MAX: i64 = 3000;
    // 100 blocks a second of 6 events: 600 events/s, the window is five seconds' worth.
    let devnet = small_devnet(10, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let yaml = yaml_with_retention(&devnet, &db, &format!("{{ max_events: {MAX} }}"));
    let app = support::start_app(support::parse_config(&yaml)).await;

    // Warm up: the window fills and the first batches are pruned.
    support::wait_for(WAIT, POLL, || async {
        let (_, _, mark, _, _) = window(&db).await;
        mark.filter(|low| *low > 200).map(|_| ())
    })
    .await
    .expect("retention pruned within the wait");

    let mut series = Vec::new();
    let started = Instant::now();
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (rows, lowest, mark, main, wal) = window(&db).await;
        series.push((started.elapsed().as_millis(), rows, lowest, mark, main, wal));
    }
    for (ms, rows, lowest, mark, main, wal) in &series {
        eprintln!(
            "retention window: t={ms}ms rows={rows} lowest={lowest:?} mark={mark:?} \
             main_bytes={main} wal_bytes={wal}"
        );
    }
    for (ms, rows, lowest, mark, ..) in &series {
        assert!(
            (MAX * 9 / 10..=MAX * 11 / 10).contains(rows),
            "at {ms} ms the chain held {rows} events (max_events {MAX})"
        );
        assert!(
            lowest >= mark,
            "a row below the mark: lowest {lowest:?}, mark {mark:?}"
        );
    }
    let half = series.len() / 2;
    let mid = series[half].4;
    let end = series.last().expect("samples").4;
    assert!(
        end <= mid + mid / 10,
        "the database file grew from {mid} to {end} bytes over the second half"
    );
    // The API still answers, from the lowest retained block.
    let (status, page) =
        support::get_json(&app.url("/v1/events?chain=devnet&kind=block&limit=1")).await;
    assert_eq!(status, 200, "{page}");
    let (_, lowest, ..) = window(&db).await;
    let first = page["events"][0]["block_number"].as_i64();
    assert!(first >= lowest.map(|l| l - 1), "{page}");
    let checkpoint = committed_checkpoint(&db).await.expect("a checkpoint");
    let (low, _) = whole_blocks(&db).await;
    verify_window(&devnet, &db_rows(&db).await, low, checkpoint);
    let metrics = support::metrics_text(&app).await;
    assert!(
        metrics.contains("livechain_pruned_events_total{chain=\"devnet\"}"),
        "no pruned events counted"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_prunes_exactly_the_blocks_older_than_it() {
    // Block n has timestamp GENESIS_TIMESTAMP + n: an age that expires blocks below 100 now.
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    let before = now();
    let age_secs = before - (GENESIS_TIMESTAMP + 100);
    let devnet = small_devnet(1000, 300).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let yaml = yaml_with_retention(&devnet, &db, &format!("{{ max_age: \"{age_secs}s\" }}"));
    let app = support::start_app(support::parse_config(&yaml)).await;
    wait_committed(&db, 300).await;
    let low = support::wait_for(WAIT, POLL, || async {
        let (_, lowest, mark, ..) = window(&db).await;
        mark.and(lowest).filter(|l| *l >= 100)
    })
    .await
    .expect("the expired blocks were pruned");
    let after = now();
    // The cutoff moves a block a second: it was at 100 when the test began.
    let latest = 100 + (after - before) + 1;
    assert!(
        (100..=latest as i64).contains(&low),
        "lowest block {low}, expected 100..={latest}"
    );
    let (first, _) = whole_blocks(&db).await;
    assert_eq!(first as i64, low);
    let checkpoint = committed_checkpoint(&db).await.expect("a checkpoint");
    verify_window(&devnet, &db_rows(&db).await, first, checkpoint);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_pruning_leaves_whole_blocks_and_a_mark_that_agrees() {
    let devnet = small_devnet(10, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let config = dir.path().join("livechain.yaml");
    std::fs::write(
        &config,
        yaml_with_retention(&devnet, &db, "{ max_events: 1200 }"),
    )
    .expect("write the config");
    let log = dir.path().join("livechain.log");
    let mut last_mark = 0;
    for round in 0..4u64 {
        let service = Service::spawn(&config, &log).await;
        // Let pruning run (the mark moves), then kill at a moment that varies by round.
        support::wait_for(WAIT, POLL, || async {
            let (_, _, mark, ..) = window(&db).await;
            mark.filter(|m| *m > last_mark).map(|_| ())
        })
        .await
        .expect("the restarted service prunes");
        tokio::time::sleep(Duration::from_millis(37 * round + 10)).await;
        service.kill().await;

        let (rows, lowest, mark, ..) = window(&db).await;
        let mark = mark.expect("a mark after pruning");
        assert!(mark >= last_mark, "the mark moved back to {mark}");
        assert_eq!(lowest, Some(mark), "the mark is not the lowest block held");
        let (first, _) = whole_blocks(&db).await;
        let checkpoint = committed_checkpoint(&db).await.expect("a checkpoint");
        verify_window(&devnet, &db_rows(&db).await, first, checkpoint);
        eprintln!("kill {round}: {rows} rows, blocks {mark}..={checkpoint}");
        last_mark = mark;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_keep_working_while_pruning_runs() {
    use livechain::devnet::DevnetConfig;
    // A reorg of depth 3 every 20 blocks, while retention prunes every few seconds.
    let config = DevnetConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        providers: 2,
        block_time_ms: 20,
        logs_per_block: LOGS_PER_BLOCK as usize,
        initial_blocks: 0,
        reorg_every: Some(20),
        reorg_depth: 3,
        ..DevnetConfig::default()
    };
    let devnet = support::devnet_with(config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let yaml = yaml_with_retention(&devnet, &db, "{ max_events: 1500 }");
    let app = support::start_app(support::parse_config(&yaml)).await;
    // Several reorgs and several prunes.
    let reorgs_before = devnet.reorgs();
    support::wait_for(WAIT, POLL, || async {
        let (_, _, mark, ..) = window(&db).await;
        (mark > Some(300) && devnet.reorgs() >= reorgs_before + 5).then_some(())
    })
    .await
    .expect("pruning and reorgs both ran");
    let head = devnet.head();
    let checkpoint = wait_committed(&db, head).await;
    // Canonical rows from the mark to the checkpoint equal the devnet's chain there.
    let (_, _, mark, ..) = window(&db).await;
    let low = u64::try_from(mark.expect("a mark")).expect("mark");
    let stored: BTreeSet<(u64, String, Option<u64>)> = db_rows(&db)
        .await
        .into_iter()
        .filter(|r| !r.removed && (low..=checkpoint).contains(&r.id.0))
        .map(|r| r.id)
        .collect();
    let truth: BTreeSet<(u64, String, Option<u64>)> =
        expected(&devnet, low..=checkpoint).into_keys().collect();
    assert_eq!(
        stored.len(),
        truth.len(),
        "canonical rows in {low}..={checkpoint}"
    );
    assert!(
        stored == truth,
        "the stored canonical chain differs from the devnet's"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_provider_below_the_mark_is_dropped_and_counted() {
    let devnet = small_devnet(10, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    // A provider that far behind stays connected (it is only ranked last).
    let yaml = yaml_with_retention(&devnet, &db, "{ max_events: 600 }")
        .replace("chains:\n  devnet:\n", "chains:\n  late:\n")
        + "health: { max_lag_blocks: 1000 }\n";
    // Provider 1 serves the chain 250 blocks behind: once the window (100 blocks) has moved
    // on, everything it delivers is below the mark.
    devnet.faults(1).expect("provider 1").set_lag_blocks(250);
    let app = support::start_app(support::parse_config(&yaml)).await;
    let below = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("livechain_events_below_retention_total{chain=\"late\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let counted = support::wait_for(WAIT, POLL, || async {
        let n = below(&support::metrics_text(&app).await);
        (n > 0.0).then_some(n)
    })
    .await;
    let counted = counted.expect("deliveries below the mark are counted");
    let mut conn = open_db(&db).await;
    let (lowest, mark): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT min(block_number) FROM events \
                 WHERE chain = (SELECT id FROM names WHERE name = 'late')), \
                (SELECT low_block FROM retention WHERE chain = 'late')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("mark");
    assert!(mark.is_some(), "the chain pruned");
    assert!(
        lowest >= mark,
        "a row below the mark: {lowest:?} < {mark:?}"
    );
    eprintln!("late provider: {counted} events dropped below the mark");
    app.stop().await;
}
