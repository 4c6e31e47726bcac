//! `StoreError`: everything the store can fail with, and whether trying again can help.

use std::path::PathBuf;

/// SQLite primary result codes the classification needs (<https://sqlite.org/rescode.html>).
/// sqlx reports the *extended* code; its low byte is the primary one.
mod code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const READONLY: i64 = 8;
    pub const INTERRUPT: i64 = 9;
    pub const IOERR: i64 = 10;
    pub const FULL: i64 = 13;
    pub const CONSTRAINT: i64 = 19;
}

/// An error from the store. Messages name tables, paths and versions, never a provider URL:
/// the store is only ever given provider ids.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the database's directory failed.
    #[error("cannot create database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database was migrated by a newer livechain; running this one could corrupt it.
    #[error(
        "database schema is at version {found} but this livechain knows only up to {known}: \
         upgrade livechain"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// refinery refused or failed a migration (divergent checksum, missing version, bad SQL).
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The caller handed the store something it cannot represent (more than four topics, a
    /// number beyond SQLite's signed 64 bits). Permanent: the same input fails the same way.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored row does not map back to a domain value (a schema invariant was broken).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Another livechain process holds the database (its lock file is taken).
    #[error(
        "database {path} is in use by another livechain process (lock file {lock}); stop it \
         first"
    )]
    InUse { path: PathBuf, lock: PathBuf },
    /// The lock file could not be created or locked.
    #[error("cannot lock database {path} (lock file {lock}): {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A read ran past its time budget and SQLite stopped it.
    #[error("the query ran longer than its budget of {0:?}")]
    TooCostly(std::time::Duration),
    /// Anything from SQLite or the sqlx pool.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

impl StoreError {
    /// SQLite could not take a lock in `busy_timeout` (`SQLITE_BUSY`, `SQLITE_LOCKED`): another
    /// connection or process holds the database. Retrying later can succeed.
    pub fn is_busy(&self) -> bool {
        matches!(self.sqlite_primary_code(), Some(code::BUSY | code::LOCKED))
    }

    /// Whether the same operation may succeed if retried after a pause: busy/locked, disk I/O
    /// errors and a full disk (an operator can free space; the writer should wait, not drop
    /// events), a pool that timed out or an I/O error talking to the worker. Constraint
    /// violations, bad input, corrupt rows, migrations and a closed pool are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlx(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => true,
            StoreError::Sqlx(sqlx::Error::Database(_)) => matches!(
                self.sqlite_primary_code(),
                Some(code::BUSY | code::LOCKED | code::IOERR | code::FULL)
            ),
            _ => false,
        }
    }

    /// What kind of fault keeps writes from landing, for `/ready` and the writer's metric:
    /// `full` (no space, or a file at its size limit), `locked` (another connection holds the
    /// database), `io` (the disk or OS failed a read or write), `read_only`, or `other`.
    pub fn fault_kind(&self) -> &'static str {
        match self {
            StoreError::Sqlx(sqlx::Error::Io(_)) => "io",
            StoreError::Sqlx(sqlx::Error::PoolTimedOut) => "locked",
            _ => match self.sqlite_primary_code() {
                Some(code::FULL) => "full",
                Some(code::BUSY | code::LOCKED) => "locked",
                Some(code::IOERR) => "io",
                Some(code::READONLY) => "read_only",
                _ => "other",
            },
        }
    }

    /// SQLite stopped the statement because its progress handler said so.
    pub fn is_interrupted(&self) -> bool {
        self.sqlite_primary_code() == Some(code::INTERRUPT)
    }

    /// A UNIQUE, PRIMARY KEY, CHECK, NOT NULL or FOREIGN KEY constraint refused a write.
    pub fn is_constraint_violation(&self) -> bool {
        self.sqlite_primary_code() == Some(code::CONSTRAINT)
    }

    /// The primary SQLite result code, when the error came from SQLite itself.
    fn sqlite_primary_code(&self) -> Option<i64> {
        let StoreError::Sqlx(sqlx::Error::Database(db)) = self else {
            return None;
        };
        let extended: i64 = db.code()?.parse().ok()?;
        Some(extended & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_new_schema_message_tells_the_operator_what_to_do() {
        let err = StoreError::SchemaTooNew { found: 7, known: 3 };
        assert_eq!(
            err.to_string(),
            "database schema is at version 7 but this livechain knows only up to 3: upgrade livechain"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn io_and_pool_timeouts_are_retryable_bad_input_is_not() {
        let io = StoreError::Sqlx(sqlx::Error::Io(std::io::Error::other("disk")));
        assert!(io.is_retryable());
        assert!(!io.is_busy());
        assert!(StoreError::Sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::Sqlx(sqlx::Error::PoolClosed).is_retryable());
        assert!(!StoreError::Invalid("five topics".into()).is_retryable());
        assert!(!StoreError::Corrupt("bad hash".into()).is_retryable());
    }
}
