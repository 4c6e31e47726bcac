//! Breaker state per provider: saved on every transition, loaded at start
//! so an open breaker stays open across a restart.

use std::str::FromStr;

use super::{Store, StoreError};
use crate::breaker::{BreakerState, Snapshot};

impl Store {
    /// Records `snapshot` as the breaker of `provider` on `chain`.
    pub async fn save_breaker(
        &self,
        chain: &str,
        provider: &str,
        snapshot: &Snapshot,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO breakers (chain, provider, state, consecutive_failures, \
                 consecutive_successes, opened_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (chain, provider) DO UPDATE SET state = excluded.state, \
                 consecutive_failures = excluded.consecutive_failures, \
                 consecutive_successes = excluded.consecutive_successes, \
                 opened_at = excluded.opened_at, updated_at = excluded.updated_at",
        )
        .bind(chain)
        .bind(provider)
        .bind(snapshot.state.as_str())
        .bind(i64::from(snapshot.consecutive_failures))
        .bind(i64::from(snapshot.consecutive_successes))
        .bind(snapshot.opened_at_wall_ms)
        .bind(now_ms)
        .execute(&self.shared.writer)
        .await?;
        self.wrote();
        Ok(())
    }

    /// Every saved breaker of `chain`, by provider id.
    pub async fn load_breakers(&self, chain: &str) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let rows: Vec<(String, String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT provider, state, consecutive_failures, consecutive_successes, opened_at \
             FROM breakers WHERE chain = ? ORDER BY provider",
        )
        .bind(chain)
        .fetch_all(&self.shared.readers)
        .await?;
        rows.into_iter()
            .map(|(provider, state, failures, successes, opened_at)| {
                let corrupt =
                    |what: &str| StoreError::Corrupt(format!("breaker {chain}/{provider}: {what}"));
                let snapshot = Snapshot {
                    state: BreakerState::from_str(&state).map_err(|_| corrupt("state"))?,
                    consecutive_failures: u32::try_from(failures)
                        .map_err(|_| corrupt("consecutive_failures"))?,
                    consecutive_successes: u32::try_from(successes)
                        .map_err(|_| corrupt("consecutive_successes"))?,
                    opened_at_wall_ms: opened_at,
                };
                Ok((provider, snapshot))
            })
            .collect()
    }
}
