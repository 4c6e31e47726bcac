//! The race between a chain's providers: who delivers each live event first, how late the
//! others are, and what some never deliver (the `provider_stats` and `provider_lateness` tables,
//! `GET /v1/providers`).
//!
//! The aggregator is the only writer and counts with relaxed atomics (one add per delivery, no
//! lock on the hot path); readers take a [`RaceBoard::snapshot`]. Only live deliveries race:
//! the range sync's copies are a re-read, not a delivery, and count for nobody. Lateness is kept
//! as a histogram of power-of-two millisecond buckets (the tables' shape), so the median and p99
//! are read by interpolating inside a bucket: within a factor of two by construction, good to a
//! few percent for the usual spread of lateness.
//!
//! Totals survive restarts: the board starts from what the tables hold, and [`RaceBoard::flush`]
//! writes it back periodically and at shutdown (absolute values, so a repeated flush is harmless).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::domain::ChainName;
use crate::domain::{ProviderIndex, provider_bit};
use crate::store::{ProviderStats, Store, StoreError};
use crate::telemetry::metrics as m;

/// Lateness buckets: `b` counts deliveries with `2^(b-1) < late_ms <= 2^b` (b = 0: `<= 1`).
pub const BUCKETS: usize = 64;
/// How often the totals are written to the database and the metrics.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// The race statistics of one chain's providers.
#[derive(Debug)]
pub struct RaceBoard {
    chain: ChainName,
    /// Indexed by [`ProviderIndex`].
    cells: Box<[Cell]>,
}

#[derive(Debug)]
struct Cell {
    id: String,
    first: AtomicU64,
    late: AtomicU64,
    missed: AtomicU64,
    late_ms_total: AtomicU64,
    late_ms_max: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// One provider's race record, as `/v1/providers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderRace {
    pub provider: String,
    /// Live events this provider delivered before any other.
    pub delivered_first: u64,
    /// Live events it delivered after another provider had.
    pub delivered_late: u64,
    /// Live events it never delivered while they were in the dedupe window.
    pub missed: u64,
    /// How late its late deliveries were.
    pub lateness_ms: Lateness,
}

/// Quantiles of a provider's lateness, in milliseconds; `None` before any late delivery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lateness {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
}

impl RaceBoard {
    /// A board for `ids` (in [`ProviderIndex`] order), starting from the saved `totals`.
    pub fn new(chain: ChainName, ids: &[String], totals: &[ProviderStats]) -> RaceBoard {
        let cells = ids
            .iter()
            .map(|id| {
                let saved = totals.iter().find(|t| t.provider == *id);
                let get = |f: fn(&ProviderStats) -> u64| AtomicU64::new(saved.map_or(0, f));
                Cell {
                    id: id.clone(),
                    first: get(|s| s.delivered_first),
                    late: get(|s| s.delivered_late),
                    missed: get(|s| s.missed),
                    late_ms_total: get(|s| s.late_ms_total),
                    late_ms_max: get(|s| s.late_ms_max),
                    buckets: std::array::from_fn(|b| {
                        AtomicU64::new(saved.map_or(0, |s| s.lateness[b]))
                    }),
                }
            })
            .collect();
        RaceBoard { chain, cells }
    }

    /// `provider` delivered a live event before any other.
    pub fn first(&self, provider: ProviderIndex) {
        if let Some(cell) = self.cells.get(usize::from(provider)) {
            cell.first.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `provider` delivered a live event `by` after the first provider did.
    pub fn late(&self, provider: ProviderIndex, by: Duration) {
        let Some(cell) = self.cells.get(usize::from(provider)) else {
            return;
        };
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        cell.late.fetch_add(1, Ordering::Relaxed);
        cell.late_ms_total.fetch_add(ms, Ordering::Relaxed);
        cell.late_ms_max.fetch_max(ms, Ordering::Relaxed);
        cell.buckets[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// A live event left the dedupe window delivered only by the providers in `delivered`: the
    /// others missed it.
    pub fn retired(&self, delivered: u64) {
        for (i, cell) in (0..=ProviderIndex::MAX).zip(self.cells.iter()) {
            if delivered & provider_bit(i) == 0 {
                cell.missed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every provider's record, in [`ProviderIndex`] order.
    pub fn snapshot(&self) -> Vec<ProviderRace> {
        self.totals()
            .into_iter()
            .map(|t| ProviderRace {
                lateness_ms: Lateness {
                    // Interpolation inside a bucket can overshoot the largest value seen.
                    p50: quantile(&t.lateness, 0.5).map(|q| q.min(t.late_ms_max as f64)),
                    p99: quantile(&t.lateness, 0.99).map(|q| q.min(t.late_ms_max as f64)),
                    max: (t.delivered_late > 0).then_some(t.late_ms_max),
                    mean: (t.delivered_late > 0)
                        .then(|| t.late_ms_total as f64 / t.delivered_late as f64),
                },
                provider: t.provider,
                delivered_first: t.delivered_first,
                delivered_late: t.delivered_late,
                missed: t.missed,
            })
            .collect()
    }

    fn totals(&self) -> Vec<ProviderStats> {
        self.cells
            .iter()
            .map(|cell| ProviderStats {
                provider: cell.id.clone(),
                delivered_first: cell.first.load(Ordering::Relaxed),
                delivered_late: cell.late.load(Ordering::Relaxed),
                missed: cell.missed.load(Ordering::Relaxed),
                late_ms_total: cell.late_ms_total.load(Ordering::Relaxed),
                late_ms_max: cell.late_ms_max.load(Ordering::Relaxed),
                lateness: std::array::from_fn(|b| cell.buckets[b].load(Ordering::Relaxed)),
            })
            .collect()
    }

    /// Writes the totals to the database and the metrics.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let totals = self.totals();
        for t in &totals {
            let labels = [
                ("chain", self.chain.to_string()),
                ("provider", t.provider.clone()),
            ];
            metrics::counter!(m::PROVIDER_DELIVERED_FIRST, &labels).absolute(t.delivered_first);
            metrics::counter!(m::PROVIDER_DELIVERED_LATE, &labels).absolute(t.delivered_late);
            metrics::counter!(m::PROVIDER_MISSED, &labels).absolute(t.missed);
        }
        store.save_provider_stats(&self.chain, &totals).await
    }

    /// Flushes every [`FLUSH_EVERY`] until `shutdown`, then once more.
    pub async fn run(self: std::sync::Arc<Self>, store: Store, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            if let Err(err) = self.flush(&store).await {
                tracing::warn!(chain = %self.chain, error = %err, "saving provider race statistics failed; retrying later");
            }
            if stop {
                break;
            }
        }
    }
}

/// The lateness bucket of `ms` milliseconds.
pub fn bucket_of(ms: u64) -> usize {
    if ms <= 1 {
        0
    } else {
        // ceil(log2(ms)): 2 -> 1, 3..=4 -> 2, 5..=8 -> 3, …
        let bits = u64::BITS - (ms - 1).leading_zeros();
        (bits as usize).min(BUCKETS - 1)
    }
}

/// The `q`-quantile of a bucketed distribution, interpolated linearly inside its bucket.
pub fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
    let mut below = 0u64;
    for (b, &n) in buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (below + n) as f64 >= rank {
            let high = 2f64.powi(b as i32);
            let low = if b == 0 { 0.0 } else { high / 2.0 };
            let within = (rank - below as f64) / n as f64;
            return Some(low + (high - low) * within);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(n: usize) -> RaceBoard {
        let ids: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        RaceBoard::new("devnet".into(), &ids, &[])
    }

    #[test]
    fn buckets_are_powers_of_two() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (1024, 10),
            (1025, 11),
            (u64::MAX, 63),
        ];
        for (ms, bucket) in cases {
            assert_eq!(bucket_of(ms), bucket, "{ms} ms");
        }
    }

    #[test]
    fn quantiles_fall_inside_the_right_bucket() {
        let mut buckets = [0u64; BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), None);
        // 98 deliveries 3-4 ms late, 2 deliveries 100-128 ms late.
        buckets[2] = 98;
        buckets[7] = 2;
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((2.0..=4.0).contains(&p50), "{p50}");
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((64.0..=128.0).contains(&p99), "{p99}");
        assert_eq!(quantile(&buckets, 1.0), Some(128.0));
    }

    #[test]
    fn first_late_and_missed_are_counted_per_provider() {
        let board = board(3);
        board.first(0);
        board.first(0);
        board.late(1, Duration::from_millis(3));
        board.late(1, Duration::from_millis(40));
        board.late(2, Duration::from_micros(200));
        // Retired having been delivered by 0 and 1 only: 2 missed it.
        board.retired(0b011);
        board.first(7); // not a provider of this chain: ignored, no panic
        let race = board.snapshot();
        assert_eq!(race.len(), 3);
        assert_eq!(
            (
                race[0].delivered_first,
                race[0].delivered_late,
                race[0].missed
            ),
            (2, 0, 0)
        );
        assert_eq!(race[0].lateness_ms.p50, None);
        assert_eq!(
            (
                race[1].delivered_first,
                race[1].delivered_late,
                race[1].missed
            ),
            (0, 2, 0)
        );
        assert_eq!(race[1].lateness_ms.max, Some(40));
        assert_eq!(race[1].lateness_ms.mean, Some(21.5));
        assert_eq!((race[2].delivered_late, race[2].missed), (1, 1));
        // 200 µs late: 0 whole milliseconds, and no quantile above the largest value.
        assert_eq!(race[2].lateness_ms.max, Some(0));
        assert_eq!(race[2].lateness_ms.p99, Some(0.0));
        assert!(race[1].lateness_ms.p99.is_some_and(|p| p <= 40.0));
    }

    #[test]
    fn a_board_resumes_from_saved_totals() {
        let board = board(2);
        board.first(1);
        board.late(0, Duration::from_millis(5));
        let saved = board.totals();
        let ids = vec!["p0".to_owned(), "p1".to_owned(), "p2".to_owned()];
        let resumed = RaceBoard::new("devnet".into(), &ids, &saved);
        resumed.first(1);
        let race = resumed.snapshot();
        assert_eq!(race[1].delivered_first, 2);
        assert_eq!(race[0].delivered_late, 1);
        assert_eq!(race[0].lateness_ms.max, Some(5));
        assert_eq!(race[2].delivered_first, 0, "a new provider starts at zero");
    }
}
