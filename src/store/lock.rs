//! One service per database: an exclusive advisory lock on `<database>.lock`, held for the life
//! of the process that writes it. SQLite itself would let two services write the same file in
//! turns, each with its own idea of the next cursor and checkpoint; and `reset-chain` must not
//! run under a live service.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    /// Takes the lock of the database at `database`, creating its directory and lock file if
    /// needed; `InUse` if another process holds it.
    pub fn acquire(database: &Path) -> Result<DatabaseLock, StoreError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let failed = |source| StoreError::Lock {
            path: database.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => Ok(DatabaseLock {
                _file: file,
                path: lock,
            }),
            Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
                path: database.to_path_buf(),
                lock,
            }),
            Err(TryLockError::Error(source)) => Err(failed(source)),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("nested/livechain.db");
        let first = DatabaseLock::acquire(&db).expect("the first lock");
        assert!(first.path().ends_with("livechain.db.lock"));
        match DatabaseLock::acquire(&db) {
            Err(err @ StoreError::InUse { .. }) => {
                let text = err.to_string();
                assert!(
                    text.contains("in use by another livechain process"),
                    "{text}"
                );
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
        drop(first);
        DatabaseLock::acquire(&db).expect("free again once dropped");
    }
}
