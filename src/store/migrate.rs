//! Schema migrations: refinery's async driver traits implemented over a sqlx SQLite connection.
//!
//! refinery ships drivers for rusqlite, postgres and others, not for sqlx. Linking rusqlite next
//! to sqlx would put two `libsqlite3-sys` (`links = "sqlite3"`) in one build, which Cargo refuses,
//! so [`RefineryConn`] implements `AsyncTransaction`, `AsyncQuery` and `AsyncMigrate` the way
//! refinery's own tokio-postgres driver does: every `execute` is one transaction, and refinery
//! passes a migration's SQL and its history row in the same call, so each migration lands
//! atomically with its record.

use refinery::{Migration, Runner};
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use super::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// refinery's history table (its default name).
pub(crate) const HISTORY_TABLE: &str = "refinery_schema_history";

/// The migrations compiled into this binary.
pub(crate) fn runner() -> Runner {
    embedded::migrations::runner()
}

/// The newest schema version this binary knows.
pub(crate) fn newest_embedded_version() -> i64 {
    runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Refuses a database migrated by a newer livechain, then applies what is missing. Returns the
/// names (`V1__initial`) applied now: empty when the schema was already current.
///
/// The version check runs before refinery touches anything (refinery itself would only log a
/// "missing from the filesystem" error for an unknown newer version and carry on).
pub(crate) async fn run(conn: &mut SqliteConnection) -> Result<Vec<String>, StoreError> {
    let known = newest_embedded_version();
    if let Some(found) = applied_version(conn).await?
        && found > known
    {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    // Off while migrating, as SQLite's procedure for rebuilding a table asks: dropping the old
    // table must not cascade into the tables that refer to it. Checked once they are in place.
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let report = runner().run_async(&mut RefineryConn(&mut *conn)).await;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    let report = report?;
    let dangling: Vec<(String, i64)> =
        sqlx::query_as("SELECT \"table\", rowid FROM pragma_foreign_key_check LIMIT 5")
            .fetch_all(&mut *conn)
            .await?;
    if !dangling.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "after migrating, rows refer to rows that do not exist: {dangling:?}"
        )));
    }
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// Applies the embedded migrations up to `version` only, to a database file at `path` (created
/// if missing): how the tests build a database as an older release left it.
#[doc(hidden)]
pub async fn migrate_until(path: &std::path::Path, version: i32) -> Result<(), StoreError> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await?;
    runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut RefineryConn(&mut conn))
        .await?;
    conn.close().await?;
    Ok(())
}

/// The highest version in refinery's history, `None` for a database never migrated.
pub(crate) async fn applied_version(
    conn: &mut SqliteConnection,
) -> Result<Option<i64>, StoreError> {
    let has_history: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)",
    )
    .bind(HISTORY_TABLE)
    .fetch_one(&mut *conn)
    .await?;
    if !has_history {
        return Ok(None);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM refinery_schema_history")
            .fetch_one(&mut *conn)
            .await?;
    Ok(version)
}

/// A sqlx SQLite connection seen through refinery's driver traits.
struct RefineryConn<'c>(&'c mut SqliteConnection);

impl AsyncTransaction for RefineryConn<'_> {
    type Error = sqlx::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so two processes
        // opening the same file cannot interleave schema changes.
        let mut tx = self.0.begin_with("BEGIN IMMEDIATE").await?;
        let mut count = 0;
        for query in queries {
            // raw_sql: a migration file holds many statements; it is not a prepared statement
            // worth caching. The text comes from refinery (embedded files and its own history
            // statements), never from user input.
            sqlx::raw_sql(AssertSqlSafe(query))
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for RefineryConn<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = sqlx::query(AssertSqlSafe(query))
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter().map(applied_migration).collect()
    }
}

impl AsyncMigrate for RefineryConn<'_> {}

/// One row of refinery's history table as the `Migration` refinery compares checksums against.
fn applied_migration(row: &sqlx::sqlite::SqliteRow) -> Result<Migration, sqlx::Error> {
    let version: i64 = row.try_get(0)?;
    let name: String = row.try_get(1)?;
    // refinery writes the checksum as quoted text into a VARCHAR column.
    let checksum: String = row.try_get(3)?;
    let decode = |what: &str| sqlx::Error::Decode(format!("{HISTORY_TABLE}: bad {what}").into());
    let version = version.try_into().map_err(|_| decode("version"))?;
    let checksum = checksum.parse().map_err(|_| decode("checksum"))?;
    // `Migration::applied` wants the `applied_on` time as a `time::OffsetDateTime`, a crate
    // livechain does not depend on directly. refinery only logs that value (verification
    // compares version, name and checksum), so we hand it the current time, obtained from
    // refinery itself by marking a throwaway migration applied.
    let mut stamp = Migration::unapplied("V0__stamp", "").map_err(|_| decode("stamp"))?;
    stamp.set_applied();
    let applied_on = *stamp.applied_on().ok_or_else(|| decode("stamp"))?;
    Ok(Migration::applied(version, name, applied_on, checksum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_named_and_versioned() {
        let runner = runner();
        let migrations = runner.get_migrations();
        assert!(!migrations.is_empty());
        assert_eq!(migrations[0].to_string(), "V1__initial");
        assert_eq!(migrations[1].to_string(), "V2__providers_mask");
        assert_eq!(migrations[2].to_string(), "V3__removed_index");
        assert!(newest_embedded_version() >= 1);
    }
}
