//! Provider race statistics (`provider_stats`, `provider_lateness`): totals per chain and
//! provider, written whole by the chain's race board (see `ingest::race`) and read back at start.

use super::{Store, StoreError};

/// Lateness histogram buckets per provider (see `provider_lateness` in `V1__initial.sql`).
pub const LATENESS_BUCKETS: usize = 64;

/// One provider's totals on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStats {
    pub provider: String,
    pub delivered_first: u64,
    pub delivered_late: u64,
    pub missed: u64,
    pub late_ms_total: u64,
    pub late_ms_max: u64,
    /// Late deliveries per power-of-two millisecond bucket.
    pub lateness: [u64; LATENESS_BUCKETS],
}

fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Replaces the saved totals of `chain`'s providers with `totals`, in one transaction.
    pub async fn save_provider_stats(
        &self,
        chain: &str,
        totals: &[ProviderStats],
    ) -> Result<(), StoreError> {
        let now = super::events::now_ms();
        let mut tx = self.shared.writer.begin().await?;
        for t in totals {
            sqlx::query(
                "INSERT INTO provider_stats (chain, provider, delivered_first, delivered_late, \
                     late_ms_total, late_ms_max, missed, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (chain, provider) DO UPDATE SET \
                     delivered_first = excluded.delivered_first, \
                     delivered_late = excluded.delivered_late, \
                     late_ms_total = excluded.late_ms_total, \
                     late_ms_max = excluded.late_ms_max, \
                     missed = excluded.missed, updated_at = excluded.updated_at",
            )
            .bind(chain)
            .bind(&t.provider)
            .bind(sql_count(t.delivered_first))
            .bind(sql_count(t.delivered_late))
            .bind(sql_count(t.late_ms_total))
            .bind(sql_count(t.late_ms_max))
            .bind(sql_count(t.missed))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (bucket, &count) in t.lateness.iter().enumerate() {
                if count == 0 {
                    continue; // a bucket never filled has no row
                }
                sqlx::query(
                    "INSERT INTO provider_lateness (chain, provider, bucket, count) \
                     VALUES (?, ?, ?, ?) \
                     ON CONFLICT (chain, provider, bucket) DO UPDATE SET count = excluded.count",
                )
                .bind(chain)
                .bind(&t.provider)
                .bind(bucket as i64)
                .bind(sql_count(count))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.wrote();
        Ok(())
    }

    /// The saved totals of `chain`'s providers.
    pub async fn load_provider_stats(&self, chain: &str) -> Result<Vec<ProviderStats>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT provider, delivered_first, delivered_late, late_ms_total, late_ms_max, missed \
             FROM provider_stats WHERE chain = ? ORDER BY provider",
        )
        .bind(chain)
        .fetch_all(&self.shared.readers)
        .await?;
        let buckets: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT provider, bucket, count FROM provider_lateness WHERE chain = ?")
                .bind(chain)
                .fetch_all(&self.shared.readers)
                .await?;
        let count = |provider: &str, what: &str, n: i64| {
            u64::try_from(n).map_err(|_| {
                StoreError::Corrupt(format!(
                    "provider_stats {chain}/{provider}: negative {what}"
                ))
            })
        };
        let mut out = Vec::with_capacity(rows.len());
        for (provider, first, late, total, max, missed) in rows {
            let mut stats = ProviderStats {
                delivered_first: count(&provider, "delivered_first", first)?,
                delivered_late: count(&provider, "delivered_late", late)?,
                late_ms_total: count(&provider, "late_ms_total", total)?,
                late_ms_max: count(&provider, "late_ms_max", max)?,
                missed: count(&provider, "missed", missed)?,
                lateness: [0; LATENESS_BUCKETS],
                provider,
            };
            for (_, bucket, n) in buckets.iter().filter(|(p, _, _)| *p == stats.provider) {
                let slot = usize::try_from(*bucket)
                    .ok()
                    .and_then(|b| stats.lateness.get_mut(b))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "provider_lateness {chain}/{}: bucket {bucket}",
                            stats.provider
                        ))
                    })?;
                *slot = count(&stats.provider, "lateness count", *n)?;
            }
            out.push(stats);
        }
        Ok(out)
    }
}
