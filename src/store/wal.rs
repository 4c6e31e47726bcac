//! WAL checkpoints off the write path.
//!
//! SQLite's default checkpoints the WAL inside the commit that grows it past 1000 pages: that
//! commit also copies every page of the log into the database file and syncs both, many times
//! its own cost, and the live tail waits for it. Instead the writer connection never checkpoints
//! (`wal_autocheckpoint = 0`) and this task does, on a connection of its own, after commits:
//! a `PASSIVE` checkpoint copies what no reader still needs without taking the write lock, so
//! the writer goes on appending meanwhile. When a checkpoint catches up with the log between two
//! commits, the next transaction starts the WAL over (and `journal_size_limit` truncates it).
//!
//! The log only starts over when a transaction begins after a checkpoint copied all of it, and a
//! checkpoint takes about as long as the interval between commits under load (every
//! random-keyed index dirties pages all over its tree), so a commit nearly always lands in
//! between and the log would grow forever. Past
//! [`WAL_RESTART_PAGES`] the passive checkpoint is followed by a `RESTART` one, which waits for
//! the transaction in flight, holds the next one back while it copies the few pages committed
//! since the passive one, and makes the next transaction start the log over: disk and recovery
//! time stay bounded under any load, at the cost of a pause of a millisecond or two per
//! `WAL_RESTART_PAGES` pages written.
//!
//! That restarting checkpoint still has to catch the writer between two transactions, and a
//! writer that is never idle (a long backfill at full speed) leaves it no gap: the log grew to
//! gigabytes that way. [`Ceiling`] is the backstop: before each transaction the writer looks at
//! the log's size, and when its next transaction would pass `database.max_wal_mb` (by the
//! growth of the recent ones) it runs a truncating checkpoint itself, on its own connection, so
//! nothing it waits for is the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics as m;

use super::StoreError;

/// Log pages past which a checkpoint stops being passive (about 64 MiB of 4 KiB pages).
pub(crate) const WAL_RESTART_PAGES: i64 = 16_384;
/// Least time between two checkpoints: pages rewritten by several commits meanwhile are copied
/// once, and the task's two syncs per checkpoint stay few.
const MIN_GAP: Duration = Duration::from_millis(20);
/// How long a restarting checkpoint may wait for the transaction in flight and for readers of
/// older snapshots. It holds new transactions back while it waits, so it gives up soon (and
/// tries again after a later commit) rather than stall the writer behind a long REST read.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The WAL size past which the writer checkpoints before its next transaction.
#[derive(Debug)]
pub(crate) struct Ceiling {
    wal: PathBuf,
    /// Held by whichever checkpoint runs (the checkpointer's or the writer's): SQLite refuses a
    /// checkpoint at once, without waiting, while another connection runs one, and the
    /// checkpointer runs one after nearly every commit.
    turn: Arc<tokio::sync::Mutex<()>>,
    bytes: AtomicU64,
    /// How much one transaction grows the log, as the recent ones did: the writer checkpoints
    /// when the next one would pass the ceiling, not after it has. A transaction dirties pages
    /// all over the random-keyed indexes, so this reaches tens of MiB on a large database.
    growth: AtomicU64,
    /// Whether the last attempt found readers holding the log (said once until it clears).
    held: AtomicBool,
}

impl Ceiling {
    pub(crate) fn new(wal: PathBuf, bytes: u64) -> Ceiling {
        Ceiling {
            wal,
            turn: Arc::default(),
            bytes: AtomicU64::new(bytes),
            growth: AtomicU64::new(0),
            held: AtomicBool::new(false),
        }
    }

    pub(crate) fn set(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// The turn the checkpointer takes for each of its checkpoints.
    pub(crate) fn turn(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.turn.clone()
    }

    /// Called by the writer between transactions, on its connection: a restarting checkpoint
    /// when the log is past the ceiling (the next transaction then starts the log over and
    /// `journal_size_limit` truncates the file). It waits for readers of older snapshots up to
    /// the connection's busy timeout; if they still hold the log, the writer goes on (a reader
    /// ends within its query) and tries again before the next transaction.
    /// Returns the log's size before the transaction, for [`Ceiling::committed`].
    pub(crate) async fn hold(&self, conn: &mut SqliteConnection) -> Result<u64, StoreError> {
        let limit = self.bytes.load(Ordering::Relaxed);
        let Some(size) = wal_bytes(&self.wal).and_then(|s| u64::try_from(s).ok()) else {
            return Ok(0);
        };
        // A quarter more than the recent growth: transactions vary in size.
        let growth = self.growth.load(Ordering::Relaxed);
        if size.saturating_add(growth + growth / 4) <= limit {
            return Ok(size);
        }
        let started = Instant::now();
        let outcome = {
            let _turn = self.turn.lock().await;
            // TRUNCATE: RESTART, and the file cut to nothing, so that its size is the log's
            // again (a restarted log is rewritten from the start of a file that kept its size).
            pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)").await?
        };
        let pause = started.elapsed();
        metrics::counter!(m::WAL_CEILING_CHECKPOINTS).increment(1);
        metrics::histogram!(m::WAL_CEILING_PAUSE).record(pause.as_secs_f64());
        if outcome.busy {
            if !self.held.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    wal_bytes = size,
                    ceiling = limit,
                    "the WAL is past its ceiling and readers hold it; checkpointing again \
                     before each transaction"
                );
            }
        } else if self.held.swap(false, Ordering::Relaxed) {
            tracing::info!(wal_bytes = size, "the WAL is back under its ceiling");
        }
        tracing::debug!(
            wal_bytes = size,
            pause_ms = pause.as_millis() as u64,
            busy = outcome.busy,
            "WAL ceiling checkpoint"
        );
        Ok(wal_bytes(&self.wal)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0))
    }

    /// After a commit: how much it grew the file (`before` from [`Ceiling::hold`]) becomes the
    /// estimate when larger, and otherwise lowers it by a sixteenth. A transaction written
    /// inside a file that a restarted log left long says nothing, and changes nothing.
    pub(crate) fn committed(&self, before: u64) {
        let after = wal_bytes(&self.wal)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0);
        let grew = after.saturating_sub(before);
        if grew > 0 {
            let old = self.growth.load(Ordering::Relaxed);
            self.growth
                .store(grew.max(old - old / 16), Ordering::Relaxed);
        }
    }
}

/// What one `PRAGMA wal_checkpoint` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Whether it could not run to completion (a lock held by another connection).
    pub busy: bool,
    /// Pages in the log.
    pub log: i64,
    /// Pages of the log now in the database file.
    pub copied: i64,
}

/// Opens the checkpointing connection (writable: a checkpoint writes the database file).
pub(crate) async fn connect(
    options: &SqliteConnectOptions,
) -> Result<SqliteConnection, StoreError> {
    Ok(options
        .clone()
        // Never checkpoint from a commit of this connection either (it commits nothing).
        .pragma("wal_autocheckpoint", "0")
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await?)
}

/// Checkpoints after commits (signalled through `commits`) until `stop`; then closes its
/// connection, so that the writer's close finds itself the last connection and checkpoints
/// the rest.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    turn: Arc<tokio::sync::Mutex<()>>,
    wal_path: &Path,
    commits: &Notify,
    stop: CancellationToken,
) {
    // A failing disk fails every checkpoint: said once when it starts and once when it ends,
    // not fifty times a second.
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = commits.notified() => {}
        }
        let started = Instant::now();
        let done = {
            let _turn = turn.lock().await;
            checkpoint(&mut conn).await
        };
        match done {
            Ok(outcome) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(pages = outcome.log, "WAL checkpoints work again");
                }
                metrics::histogram!(m::WAL_CHECKPOINT_DURATION)
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!(m::WAL_PAGES).set(outcome.log as f64);
                match database_pages(&mut conn).await {
                    Ok((bytes, free)) => {
                        let wal = wal_bytes(wal_path).unwrap_or_default();
                        metrics::gauge!(m::DATABASE_SIZE).set((bytes + wal) as f64);
                        metrics::gauge!(m::DATABASE_FREE_PAGES).set(free as f64);
                    }
                    Err(err) => tracing::debug!(error = %err, "reading the database size failed"),
                }
            }
            // The next commit asks again; a lasting failure shows as a growing WAL.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying after each commit");
            }
            Err(err) => tracing::debug!(error = %err, "WAL checkpoint failed again"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(MIN_GAP) => {}
        }
    }
    if let Err(err) = conn.close().await {
        tracing::debug!(error = %err, "closing the checkpointing connection failed");
    }
}

/// One passive checkpoint, followed by a restarting one once the log has grown past
/// [`WAL_RESTART_PAGES`]: the passive one copied nearly all of it without stopping the writer,
/// the restarting one holds the writer back only while it copies what was committed meanwhile,
/// and makes the next transaction start the log over.
pub(crate) async fn checkpoint(conn: &mut SqliteConnection) -> Result<Outcome, StoreError> {
    let passive = pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)").await?;
    if passive.log < WAL_RESTART_PAGES {
        return Ok(passive);
    }
    let restarted = pragma(conn, "PRAGMA wal_checkpoint(RESTART)").await?;
    tracing::debug!(pages = passive.log, busy = restarted.busy, "WAL restarted");
    Ok(restarted)
}

/// The database file's size as SQLite sees it (pages in use and free), after the checkpoint
/// copied the log into it, and its free pages.
async fn database_pages(conn: &mut SqliteConnection) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(
        "SELECT page_count * page_size, freelist_count \
         FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// The WAL file's size on disk (it is truncated back after a restarting checkpoint).
fn wal_bytes(path: &Path) -> Option<i64> {
    let len = std::fs::metadata(path).ok()?.len();
    i64::try_from(len).ok()
}

/// `<database>-wal`, where SQLite keeps the log.
pub(crate) fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

async fn pragma(conn: &mut SqliteConnection, sql: &'static str) -> Result<Outcome, StoreError> {
    let (busy, log, copied): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(&mut *conn).await?;
    Ok(Outcome {
        busy: busy != 0,
        log,
        copied,
    })
}
