//! Interned names (`names` table): chain names and provider ids are stored once and referred to
//! by integer from every event row and index entry.
//!
//! The writer keeps the ids it has committed in memory ([`Names`], under the sequence lock) and
//! adds a name it has not seen in the transaction that first uses it; ids join the cache only
//! after that transaction commits, so a rolled-back id is never reused from memory.

use std::collections::HashMap;

use sqlx::SqliteConnection;

use super::StoreError;

/// Committed name → id pairs.
#[derive(Debug, Default)]
pub(crate) struct Names {
    ids: HashMap<String, i64>,
}

/// Ids resolved inside a transaction: the committed ones and those it added.
pub(crate) struct Resolved<'a> {
    committed: &'a HashMap<String, i64>,
    added: HashMap<String, i64>,
}

impl Names {
    /// Resolves every name in `wanted`, adding the missing ones to `names` in `conn`'s
    /// transaction.
    pub(crate) async fn resolve<'a>(
        &'a self,
        conn: &mut SqliteConnection,
        wanted: &[&str],
    ) -> Result<Resolved<'a>, StoreError> {
        let mut added: HashMap<String, i64> = HashMap::new();
        for &name in wanted {
            if self.ids.contains_key(name) || added.contains_key(name) {
                continue;
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO names (name) VALUES (?) \
                 ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
            )
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
            added.insert(name.to_owned(), id);
        }
        Ok(Resolved {
            committed: &self.ids,
            added,
        })
    }

    /// Keeps the ids a committed transaction added.
    pub(crate) fn keep(&mut self, added: HashMap<String, i64>) {
        self.ids.extend(added);
    }
}

impl Resolved<'_> {
    pub(crate) fn id(&self, name: &str) -> Result<i64, StoreError> {
        self.committed
            .get(name)
            .or_else(|| self.added.get(name))
            .copied()
            .ok_or_else(|| StoreError::Invalid(format!("name {name:?} was not resolved")))
    }

    /// The ids this transaction added, for [`Names::keep`] after its commit.
    pub(crate) fn into_added(self) -> HashMap<String, i64> {
        self.added
    }
}
