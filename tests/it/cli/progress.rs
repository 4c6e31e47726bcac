//! Backfill progress as the binary prints it without a terminal: a line when a long backfill
//! starts, one every few seconds with blocks done of the total, the rate and an ETA, and one
//! when it is done; on a terminal (a pseudo-terminal from `script`), a bar.

use super::*;

/// The value of `key=` in a log line (quotes dropped).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// A config whose devnet chain has 60,000 blocks of history to backfill.
fn long_history(dir: &Path) -> PathBuf {
    let port = free_port();
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:{port}\" }}\n\
         database: {{ path: \"{}\" }}\n\
         chains:\n  devnet:\n    chain_id: 31337\n    \
         devnet: {{ providers: 1, block_time_ms: 1000, logs_per_block: 1, initial_blocks: 60000 }}\n    \
         subscriptions: [ {{ blocks: true }}, {{ logs: {{ from_block: 0 }} }} ]\n",
        dir.join("p.db").display()
    );
    write_file(dir, "progress.yaml", &yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backfill_prints_its_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = long_history(dir.path());
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

/// On a terminal the backfill draws a bar instead: the chain, blocks done of the total, the
/// rate and an ETA, redrawn as it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_long_backfill_draws_a_bar() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = long_history(dir.path());
    let typescript = dir.path().join("terminal.txt");
    let command = format!(
        "exec {} run --config {}",
        env!("CARGO_BIN_EXE_livechain"),
        config.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it draws to a file.
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-f", "-c", &command])
        .arg(&typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs");
    let bar = |text: &str| {
        text.lines()
            .flat_map(|l| l.split('\r'))
            .filter(|l| l.contains("devnet [") && l.contains(" blocks") && l.contains("ETA"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let drawn = support::wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        let text = std::fs::read_to_string(&typescript).unwrap_or_default();
        let lines = bar(&text);
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await;
    let _ = child.kill().await;
    let text = std::fs::read_to_string(&typescript).unwrap_or_default();
    let drawn = drawn.unwrap_or_else(|| panic!("no bar drawn twice on the terminal\n{text}"));
    // `{pos}/{len} blocks`: done of a total of at least the history.
    let counts: Vec<(u64, u64)> = drawn
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] ")?;
            let (pos, rest) = rest.split_once('/')?;
            let len = rest.split_whitespace().next()?;
            Some((pos.trim().parse().ok()?, len.parse().ok()?))
        })
        .collect();
    assert!(
        counts.iter().all(|(pos, len)| pos <= len && *len > 50_000),
        "{counts:?}\n{text}"
    );
    assert!(
        !text.contains("backfill progress"),
        "a terminal gets the bar, not the log lines\n{text}"
    );
}
