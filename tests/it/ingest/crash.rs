//! `kill -9` at several moments, restarting the real binary on the same database each time:
//! the committed checkpoint never lies, never moves back, and the final data has no hole and no
//! duplicate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::*;

/// The real `livechain run` process. SIGKILLed if dropped; prints its log's tail if the test
/// fails while it runs.
pub(super) struct Service {
    child: Child,
    pub(super) base: String,
    log: PathBuf,
    /// Held so the process never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Service {
    /// Starts `livechain run --config config` and waits (bounded) for the API address it
    /// prints. Its log is appended to `log`.
    pub(super) async fn spawn(config: &Path, log: &Path) -> Service {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log file");
        let mut child = Command::new(support::livechain_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn livechain run");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // `livechain is running; API on http://127.0.0.1:PORT`
        let base = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some((_, url)) = line.split_once("API on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let mut service = Service {
            child,
            base: String::new(),
            log: log.to_owned(),
            _stdout: stdout,
        };
        match base {
            Some(base) => service.base = base,
            None => panic!(
                "livechain run printed no API address (exit: {:?})",
                service.child.try_wait()
            ),
        }
        service
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id().expect("the service runs")
    }

    /// SIGKILL, and reap the process.
    pub(super) async fn kill(mut self) {
        assert!(
            self.child.try_wait().expect("poll the child").is_none(),
            "livechain run exited before it was killed"
        );
        self.child.kill().await.expect("SIGKILL livechain run");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(text) = std::fs::read_to_string(&self.log)
        {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        // `kill_on_drop` sends the SIGKILL; tokio reaps the orphan.
    }
}

/// What the database holds right after a kill: checked against the devnet, and against what
/// the previous kill left (nothing committed is lost or renumbered, the checkpoint never moves
/// back). Returns the committed checkpoint.
async fn after_kill(
    devnet: &TestDevnet,
    db: &Path,
    previous: &mut (Option<u64>, Vec<Stored>),
    moment: &str,
) -> Option<u64> {
    let checkpoint = committed_checkpoint(db).await;
    let rows = db_rows(db).await;
    if let Some(cp) = checkpoint {
        verify(devnet, &rows, cp);
    }
    assert!(
        checkpoint >= previous.0,
        "after a kill {moment}, the checkpoint moved back from {:?} to {checkpoint:?}",
        previous.0
    );
    let now: HashMap<&Identity, i64> = rows.iter().map(|r| (&r.id, r.cursor)).collect();
    for old in &previous.1 {
        assert_eq!(
            now.get(&old.id),
            Some(&old.cursor),
            "{:?} (cursor {}) was lost or renumbered by the kill {moment}",
            old.id,
            old.cursor
        );
    }
    eprintln!(
        "kill {moment}: committed checkpoint {checkpoint:?}, {} rows, devnet head {}",
        rows.len(),
        devnet.head()
    );
    *previous = (checkpoint, rows);
    checkpoint
}

/// The highest cursor stored (0 for none).
async fn last_cursor(db: &Path) -> i64 {
    let mut conn = open_db(db).await;
    let last: Option<i64> = sqlx::query_scalar("SELECT max(cursor) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("read the last cursor");
    let _ = conn.close().await;
    last.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_and_duplicates_nothing() {
    // History to backfill, in small ranges (the providers refuse more than 20 blocks per
    // `eth_getLogs`), so that the first kill lands mid-backfill.
    const HISTORY: u64 = 300;
    let devnet = devnet(3, 20, HISTORY).await;
    for i in 0..3 {
        devnet
            .faults(i)
            .expect("provider exists")
            .set_max_logs_range(Some(20));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let config = dir.path().join("livechain.yaml");
    std::fs::write(&config, support::service_yaml(&devnet, &db)).expect("write the config");
    let log = dir.path().join("livechain.log");
    let mut previous = (None, Vec::new());
    let downtime = async |devnet: &TestDevnet| {
        let head = devnet.head();
        assert!(
            devnet.wait_for_head(head + 20, WAIT).await,
            "devnet stalled"
        );
    };

    // 1. Mid-backfill: a third of the history committed.
    let service = Service::spawn(&config, &log).await;
    wait_committed(&db, HISTORY / 3).await;
    service.kill().await;
    after_kill(&devnet, &db, &mut previous, "mid-backfill").await;
    downtime(&devnet).await;

    // 2. Live: caught up with the head, the listeners storing new blocks.
    let service = Service::spawn(&config, &log).await;
    wait_committed(&db, devnet.head()).await;
    let head = devnet.head();
    assert!(
        devnet.wait_for_head(head + 10, WAIT).await,
        "devnet stalled"
    );
    service.kill().await;
    let live = after_kill(&devnet, &db, &mut previous, "while live").await;
    downtime(&devnet).await;

    // 3. Mid catch-up: right after the first range past the old checkpoint commits.
    let service = Service::spawn(&config, &log).await;
    wait_committed(&db, live.map_or(0, |cp| cp + 1)).await;
    service.kill().await;
    after_kill(&devnet, &db, &mut previous, "mid catch-up").await;
    downtime(&devnet).await;

    // 4. Right after the first new row commits, live or backfilled, whichever came first.
    let service = Service::spawn(&config, &log).await;
    let before = last_cursor(&db).await;
    support::wait_for(WAIT, POLL, || async {
        (last_cursor(&db).await > before).then_some(())
    })
    .await
    .expect("the restarted service stores something");
    service.kill().await;
    after_kill(&devnet, &db, &mut previous, "after the first write").await;
    downtime(&devnet).await;

    // Last run: catch up and compare everything, through the API and in the file.
    let service = Service::spawn(&config, &log).await;
    let target = devnet.head() + 10;
    let checkpoint = wait_committed(&db, target).await;
    let stored = from_api(
        &support::all_events(
            &service.base,
            &format!("chain={CHAIN}&include_removed=true"),
        )
        .await,
    );
    let verdict = verify(&devnet, &stored, checkpoint);
    service.kill().await;
    let last = after_kill(&devnet, &db, &mut previous, "at the end").await;
    eprintln!(
        "sigkill: four kills, final checkpoint {checkpoint} (committed {last:?} at the last \
         kill), {} rows complete through the API",
        verdict.complete
    );
}
