//! SQLite storage: the [`Store`] handle, connection settings, migrations, the batched write path
//! and the reads. The only module that knows SQL.
//!
//! - [`error`]: [`StoreError`] and its classification (`is_busy`, `is_retryable`).
//! - [`migrate`]: refinery's async driver traits over a sqlx connection; refuses newer schemas.
//! - [`events`]: the write path, [`Store::write_batch`] (one transaction per batch).
//! - [`query`]: the reads, REST filters and events by cursor.
//! - [`checkpoint`]: per-chain checkpoints and the finality advances they record.
//! - [`rows`]: row ↔ domain mapping, shared by every read.
//! - [`lock`]: one service per database ([`DatabaseLock`]); [`reset`]: `reset-chain`.
//!
//! **Architecture invariant:** one writer per database. The writer pool has exactly one
//! connection and [`Store::write_batch`] serialises on the cursor sequence, so cursors are
//! assigned in commit order; readers use a separate read-only pool and, thanks to WAL, never block
//! the writer nor are blocked by it.

mod breakers;
mod checkpoint;
mod error;
mod events;
mod feed;
mod lock;
mod migrate;
mod names;
mod planner;
mod processes;
mod query;
mod reorg;
mod reset;
mod retention;
mod rows;
mod spans;
mod statements;
mod stats;
mod upsert;
mod wal;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::domain::Cursor;

pub use checkpoint::{Checkpoint, FinalityAdvance};
pub use error::StoreError;
pub use events::{Committed, NewEvent, Redelivery, WriteBatch};
pub use lock::DatabaseLock;
#[doc(hidden)]
pub use migrate::migrate_until;
pub use query::{EventQuery, Order};
pub use reorg::{Canonical, Retraction};
pub use reset::Reset;
pub use retention::{Held, Mark, PruneTarget, Pruned};
pub use stats::{LATENESS_BUCKETS, ProviderStats};

/// Heap bytes SQLite holds across every connection of the process: page caches (bounded by
/// the `cache_size` of each), schemas, prepared statements.
pub fn sqlite_memory_bytes() -> i64 {
    // SAFETY: takes no arguments and reads SQLite's own counter under its own mutex; callable
    // from any thread at any time, before or after any connection exists.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// How long a connection waits for a lock held by another connection or process before
/// failing with `SQLITE_BUSY` (then [`StoreError::is_busy`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections: REST handlers and subscribers catching up read concurrently.
pub(crate) const READ_CONNECTIONS: u32 = 4;
/// Page cache per connection, in KiB (SQLite's negative `cache_size`). The writer's holds the
/// right edges and hot inner pages of every index while inserting millions of rows; the rest
/// comes from the OS page cache. Not larger: it is resident memory, and SQLite scans the whole
/// cache at every commit whose inserts split pages, so a larger one costs writer time without
/// storing faster. Readers share the OS page cache and each get a smaller one.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
const READER_CACHE_KIB: i64 = 16 * 1024;
/// After a checkpoint, truncate the WAL file back to this size (bytes): disk stays bounded even
/// after a burst that grew the WAL.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// A cheap-to-clone handle on one SQLite database: one writer connection, a read pool.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// Exactly one connection: SQLite allows one writer at a time anyway, and a single
    /// connection makes the writer's order the commit order.
    writer: SqlitePool,
    readers: SqlitePool,
    /// The cursor sequence. A tokio mutex because it is held across the whole write
    /// transaction: assigning cursors, committing and advancing must be one critical section.
    sequence: tokio::sync::Mutex<events::Sequence>,
    /// The last committed cursor, readable without waiting for a batch in flight.
    committed: AtomicI64,
    /// Migrations applied by this `open` (empty when the schema was current).
    applied: Vec<String>,
    /// SQL texts built once (sqlx caches each prepared statement by its text).
    statements: statements::Statements,
    /// The WAL size the writer checkpoints at itself ([`wal::Ceiling`]).
    wal_ceiling: wal::Ceiling,
    /// Signalled after each commit: the WAL checkpointer's cue ([`wal`]).
    commits: Arc<Notify>,
    /// The checkpointer task, taken by `close` to wait for it; dropping the store stops it.
    checkpointer: std::sync::Mutex<Option<JoinHandle<()>>>,
    stop_checkpointer: CancellationToken,
    _stop_checkpointer_on_drop: DropGuard,
}

impl Store {
    /// Opens (creating the file and its directories if needed) the database at `path`, sets the
    /// connection pragmas, refuses a schema newer than this binary, and applies any missing
    /// migration.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let common = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            // In WAL mode NORMAL never corrupts; a power loss (not a process crash) may lose the
            // last commits. FULL would fsync the WAL on every commit of the hot write path.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // Sorts and temp B-trees of REST queries stay off the disk.
            .pragma("temp_store", "MEMORY");

        let writer = connect_writer(&common).await?;
        let applied = {
            let mut conn = writer.acquire().await?;
            migrate::run(&mut conn).await
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(err) => {
                writer.close().await;
                return Err(err);
            }
        };
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        if applied.iter().any(|m| m == REBUILDING_MIGRATION) {
            give_back_free_pages(&writer).await;
        }
        let last = events::load_last_cursor(&writer).await?;
        let windows = retention::load(&mut *writer.acquire().await?).await?;
        if let Err(err) = planner::pin(&mut *writer.acquire().await?).await {
            writer.close().await;
            return Err(err);
        }

        // Opened after the writer: the file exists and is already in WAL mode, which read-only
        // connections can use but not set.
        let checkpointing = match wal::connect(&common).await {
            Ok(conn) => conn,
            Err(err) => {
                writer.close().await;
                return Err(err);
            }
        };
        let reader_options = common
            .read_only(true)
            .pragma("cache_size", (-READER_CACHE_KIB).to_string());
        // Read connections live as long as the store: one reopened (sqlx closes them after 10
        // idle minutes and at 30 minutes of age by default) starts with a cold page cache and
        // no prepared statements, a latency step for its next pages and a churn in memory.
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(reader_options)
            .await?;

        let commits = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let wal_ceiling =
            wal::Ceiling::new(wal::wal_path(path), crate::config::DEFAULT_MAX_WAL_MB << 20);
        let checkpointer = tokio::spawn({
            let (commits, stop) = (commits.clone(), stop.clone());
            let wal_path = wal::wal_path(path);
            let turn = wal_ceiling.turn();
            async move { wal::run(checkpointing, turn, &wal_path, &commits, stop).await }
        });
        Ok(Store {
            shared: Arc::new(Shared {
                writer,
                readers,
                sequence: tokio::sync::Mutex::new(events::Sequence::new(last, windows)),
                committed: AtomicI64::new(last),
                applied,
                statements: statements::Statements::new(),
                wal_ceiling,
                commits,
                checkpointer: std::sync::Mutex::new(Some(checkpointer)),
                stop_checkpointer: stop.clone(),
                _stop_checkpointer_on_drop: stop.drop_guard(),
            }),
        })
    }

    /// Sets the WAL size past which the writer checkpoints before its next transaction
    /// (`database.max_wal_mb`).
    pub fn set_max_wal_bytes(&self, bytes: u64) {
        self.shared.wal_ceiling.set(bytes);
    }

    /// Names (`V1__initial`) of the migrations this `open` applied; empty on a current schema.
    pub fn applied_migrations(&self) -> &[String] {
        &self.shared.applied
    }

    /// The highest applied migration version.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM refinery_schema_history")
                .fetch_one(&self.shared.readers)
                .await?;
        let version = version.unwrap_or(0);
        u32::try_from(version).map_err(|_| StoreError::Corrupt(format!("schema version {version}")))
    }

    /// The last committed cursor of the change feed (0 for an empty database).
    pub async fn max_cursor(&self) -> Cursor {
        self.shared.committed.load(Ordering::Acquire)
    }

    /// Closes both pools and the checkpointer, waiting for checked-out connections. The writer
    /// closes last so that its close checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.shared.readers.close().await;
        self.stop_checkpointer().await;
        self.shared.writer.close().await;
    }
}

impl Store {
    /// Cues the WAL checkpointer after a commit.
    fn wrote(&self) {
        self.shared.commits.notify_one();
    }

    async fn stop_checkpointer(&self) {
        self.shared.stop_checkpointer.cancel();
        let task = match self.shared.checkpointer.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "the WAL checkpointer ended abnormally");
        }
    }
}

/// The migration that rebuilt `events`, leaving the old table's pages free.
const REBUILDING_MIGRATION: &str = "V5__compact_events";

/// Returns every free page to the file system in a database with incremental auto-vacuum (a
/// no-op otherwise: such a file reuses them for new rows). Once, after a rebuild.
async fn give_back_free_pages(writer: &SqlitePool) {
    let started = std::time::Instant::now();
    match sqlx::query("PRAGMA incremental_vacuum")
        .execute(writer)
        .await
    {
        Ok(_) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "returned the rebuilt table's free pages to the file system"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "returning free pages failed; they will be reused")
        }
    }
}

/// The one writer connection: WAL, incremental auto-vacuum, its page cache, no checkpoints of
/// its own.
async fn connect_writer(common: &SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
    let writer_options = common
        .clone()
        .create_if_missing(true)
        // Pages that retention frees can be handed back to the file system
        // (`Store::reclaim_free_pages`). Takes effect only in a new file: an older one keeps
        // reusing its free pages for new rows instead (docs/operations.md, "Retention").
        .auto_vacuum(SqliteAutoVacuum::Incremental)
        // WAL: readers see the last commit while the writer appends; persistent in the file.
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("cache_size", (-WRITER_CACHE_KIB).to_string())
        .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
        // Commits never checkpoint: the `wal` task does, beside them.
        .pragma("wal_autocheckpoint", "0")
        // sqlx's worker thread hands rows to the async side through a channel of 50 by
        // default, and stops every 50 rows until this task has drained them: room for
        // more (a batch read back after duplicates, a reorg's rows) before it stops.
        .row_buffer_size(statements::ROW_BUFFER);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        // A local file connection does not go stale; pinging it would cost every batch a
        // round trip to the connection's worker thread.
        .test_before_acquire(false)
        // SQLite rolls a transaction back by itself on some failures (an I/O error, a full
        // disk) and sqlx then still counts it open, so that connection would refuse every
        // later BEGIN: one left in a transaction is closed, and the next write opens another.
        .after_release(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
        .connect_with(writer_options)
        .await?;
    Ok(writer)
}

#[cfg(test)]
mod tests;
