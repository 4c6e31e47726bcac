//! `GET /v1/coverage` agrees with the rows in the database and the devnet's chain; a
//! subscription starting past the first stored block and a range every provider refuses show
//! up as holes with their reasons.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, SqliteConnection};

use crate::support::{self, get_json, parse_config, start_app};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

async fn devnet_coverage(base: &str) -> Value {
    let (status, body) = get_json(&format!("{base}/v1/coverage")).await;
    assert_eq!(status, 200, "{body}");
    body["chains"]
        .as_array()
        .and_then(|chains| chains.iter().find(|c| c["name"] == "devnet"))
        .cloned()
        .unwrap_or_else(|| panic!("no devnet chain in {body}"))
}

/// Canonical block rows stored in `from..=to`.
async fn stored_blocks(db: &Path, from: u64, to: u64) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE chain = (SELECT id FROM names WHERE name = 'devnet') AND log_index = -1 \
         AND removed = 0 AND block_number BETWEEN ? AND ?",
    )
    .bind(from as i64)
    .bind(to as i64)
    .fetch_one(&mut conn)
    .await
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_matches_the_database_and_names_each_hole() {
    let net = support::devnet(2, 100, 5, 80).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let contract = net.contracts()[0];
    let yaml = support::service_yaml(&net, &db)
        + &format!("      - logs: {{ address: [\"{contract}\"], from_block: 50 }}\n");
    let app = start_app(parse_config(&yaml)).await;
    support::wait_for(WAIT, POLL, || async {
        support::checkpoint(&app.base, "devnet")
            .await
            .filter(|cp| *cp >= 80)
    })
    .await
    .expect("synced past the history");

    let chain = devnet_coverage(&app.base).await;
    let retained = &chain["retained"];
    let from = retained["from_block"].as_u64().expect("from_block");
    let to = retained["to_block"].as_u64().expect("to_block");
    assert_eq!(from, 0, "{chain}");
    let hash_of = |n: u64| net.block(n).expect("devnet block").header.hash.to_string();
    assert_eq!(retained["from_hash"], hash_of(from).as_str(), "{chain}");
    assert_eq!(retained["to_hash"], hash_of(to).as_str(), "{chain}");
    assert_eq!(stored_blocks(&db, from, to).await, (to - from + 1) as i64);
    assert!(chain["pruned"].is_null());
    assert!(chain["cursors"]["newest"].as_i64() > chain["cursors"]["oldest"].as_i64());

    let subs = chain["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(subs.len(), 3, "{chain}");
    // blocks, and logs from block 0: complete from the first block, no hole below.
    for sub in &subs[..2] {
        assert_eq!(sub["complete"]["from_block"], 0, "{sub}");
        let holes = sub["holes"].as_array().expect("holes");
        assert!(
            holes.iter().all(|h| h["reason"] == "not_yet_synced"),
            "{sub}"
        );
    }
    // The address subscription from block 50: its logs below 50 were never asked for.
    let late = &subs[2];
    assert_eq!(late["subscription"]["logs"]["from_block"], 50, "{late}");
    assert_eq!(late["complete"]["from_block"], 50, "{late}");
    assert_eq!(
        late["complete"]["from_hash"],
        hash_of(50).as_str(),
        "{late}"
    );
    assert_eq!(late["holes"][0]["from_block"], 0, "{late}");
    assert_eq!(late["holes"][0]["to_block"], 49, "{late}");
    assert_eq!(late["holes"][0]["reason"], "before_from_block", "{late}");

    // Every provider answers 500 now: the next range is refused by all of them.
    for i in 0..2 {
        net.faults(i).expect("provider").set_server_error(Some(500));
    }
    let refused = support::wait_for(WAIT, POLL, || async {
        let chain = devnet_coverage(&app.base).await;
        let holes = chain["subscriptions"][0]["holes"].as_array()?.clone();
        holes
            .iter()
            .find(|h| h["reason"] == "refused_by_providers")
            .map(|h| (h.clone(), chain["checkpoint"]["number"].as_u64()))
    })
    .await;
    let (hole, checkpoint) = refused.expect("a refused range shows as a hole");
    let checkpoint = checkpoint.expect("a checkpoint");
    assert!(hole["from_block"].as_u64() > Some(checkpoint), "{hole}");
    // The providers recover: the hole goes once a range is stored again.
    for i in 0..2 {
        net.faults(i).expect("provider").set_server_error(None);
    }
    let cleared = support::wait_for(WAIT, POLL, || async {
        let chain = devnet_coverage(&app.base).await;
        let holes = chain["subscriptions"][0]["holes"].as_array()?.clone();
        holes
            .iter()
            .all(|h| h["reason"] != "refused_by_providers")
            .then_some(())
    })
    .await;
    assert!(cleared.is_some(), "the refused hole stayed after recovery");
    let (status, chains) = get_json(&app.url("/v1/chains")).await;
    assert_eq!(status, 200);
    assert_eq!(chains["chains"][0]["retained"]["from_block"], 0, "{chains}");
    app.stop().await;
}
