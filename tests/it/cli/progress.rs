//! Backfill progress as the binary prints it without a terminal: a line when a long backfill
//! starts, one every few seconds with blocks done of the total, the rate and an ETA, and one
//! when it is done.

use super::*;

/// The value of `key=` in a log line (quotes dropped).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backfill_prints_its_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:{port}\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: 31337\n    \
         devnet: {{ providers: 1, block_time_ms: 1000, logs_per_block: 1, initial_blocks: 60000 }}\n    \
         subscriptions: [ {{ blocks: true }}, {{ logs: {{ from_block: 0 }} }} ]\n",
        dir.path().join("p.db").display()
    );
    let config = write_file(dir.path(), "progress.yaml", &yaml);
    let log = dir.path().join("stderr.log");
    let mut child = Running::spawn(
        livechain()
            .env("RUST_LOG", "info")
            .args(["run", "--progress-every", "300ms", "--config"])
            .arg(&config),
        log.clone(),
    );
    let done = support::wait_for(Duration::from_secs(180), Duration::from_millis(200), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("backfill done").then_some(text) }
    })
    .await;
    let text = done.unwrap_or_else(|| panic!("the backfill never finished\n{}", child.output()));
    let lines: Vec<&str> = text.lines().collect();
    let started = lines
        .iter()
        .find(|l| l.contains("backfill started"))
        .unwrap_or_else(|| panic!("no start line\n{text}"));
    let total: u64 = field(started, "blocks")
        .and_then(|n| n.parse().ok())
        .expect("blocks");
    assert!(total > 50_000, "{started}");
    let progress: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("backfill progress"))
        .collect();
    assert!(!progress.is_empty(), "no progress line\n{text}");
    let mut last_done = 0;
    for line in &progress {
        let done: u64 = field(line, "done")
            .and_then(|n| n.parse().ok())
            .expect("done");
        let of: u64 = field(line, "total")
            .and_then(|n| n.parse().ok())
            .expect("total");
        assert!(done >= last_done && done <= of, "{line}");
        last_done = done;
        for key in ["percent", "blocks_per_s", "eta"] {
            assert!(
                field(line, key).is_some_and(|v| !v.is_empty()),
                "{key} in {line}"
            );
        }
    }
    let end = lines
        .iter()
        .find(|l| l.contains("backfill done"))
        .expect("done line");
    let blocks: u64 = field(end, "blocks")
        .and_then(|n| n.parse().ok())
        .expect("blocks");
    // Done: within one range of the head (the live path has the rest).
    let range = livechain::ingest::sync::MAX_RANGE;
    assert!(blocks + range >= total && blocks >= last_done, "{end}");
    let status = child.terminate().await;
    assert!(status.success(), "exited with {status}\n{}", child.output());
}
