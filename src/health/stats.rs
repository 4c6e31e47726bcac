//! [`Stats`]: what one provider's traffic says about it — its head, when it last spoke, its
//! latency (EWMA and a p99 over recent requests) and its error rate. Pure: every reading takes
//! `now` as a parameter, so the rules are tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Weight of the newest sample in the latency and error-rate EWMAs: about the last 10 requests
/// dominate, so a provider recovers its rank within seconds of recovering.
const EWMA_ALPHA: f64 = 0.1;
/// Latency samples kept for the quantiles. A sorted copy of 256 numbers per `/v1/providers`
/// read costs microseconds; a sketch crate would buy nothing at this size.
const LATENCY_SAMPLES: usize = 256;

/// One provider's traffic statistics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The provider's head as last shown (a live head, an `eth_blockNumber` answer): the
    /// latest, not the highest, so a node that falls back shows its lag.
    pub head: Option<u64>,
    /// When `head` was last shown.
    pub head_at: Option<Instant>,
    /// For a head an HTTP answer showed, the chain's best head when it was asked: its lag is
    /// measured against that, not against a chain that moved on since (it is not asked again
    /// until it has been idle a while, and on a fast chain any answer is soon blocks old).
    /// `None` for a head its stream delivered: a stream keeps up or lags now.
    pub polled_against: Option<u64>,
    /// The last head its subscription delivered, and when.
    pub stream_head: Option<(u64, Instant)>,
    /// When its stream last delivered anything (heads or logs); `None` while no socket is up.
    pub last_message: Option<Instant>,
    /// When its socket came up, while it is up.
    pub connected_since: Option<Instant>,
    latency_ewma_ms: Option<f64>,
    latencies_ms: VecDeque<f64>,
    error_ewma: f64,
    pub requests: u64,
    pub errors: u64,
}

impl Stats {
    /// A request answered (`ok`) or failed at the provider's fault, after `latency` when that
    /// measures the provider.
    pub fn request(&mut self, latency: Option<Duration>, ok: bool) {
        self.requests = self.requests.saturating_add(1);
        if ok {
            if let Some(latency) = latency {
                let ms = latency.as_secs_f64() * 1000.0;
                self.latency_ewma_ms = Some(match self.latency_ewma_ms {
                    Some(avg) => avg + EWMA_ALPHA * (ms - avg),
                    None => ms,
                });
                if self.latencies_ms.len() == LATENCY_SAMPLES {
                    self.latencies_ms.pop_front();
                }
                self.latencies_ms.push_back(ms);
            }
        } else {
            self.errors = self.errors.saturating_add(1);
        }
        let sample = if ok { 0.0 } else { 1.0 };
        self.error_ewma += EWMA_ALPHA * (sample - self.error_ewma);
    }

    /// A head seen from this provider; `streamed` when its subscription delivered it.
    pub fn head(&mut self, number: u64, now: Instant, streamed: bool) {
        self.head = Some(number);
        self.head_at = Some(now);
        self.polled_against = None;
        if streamed {
            self.stream_head = Some((number, now));
            self.last_message = Some(now);
        }
    }

    /// A head an HTTP answer showed, asked for when the chain's best head was `best_then`.
    pub fn polled(&mut self, number: u64, now: Instant, best_then: u64) {
        self.head(number, now, false);
        self.polled_against = Some(best_then);
    }

    /// Anything delivered by the subscription (a log, a head).
    pub fn message(&mut self, now: Instant) {
        self.last_message = Some(now);
    }

    /// The socket came up (`true`) or went down. What an earlier connection delivered says
    /// nothing about the next one's stream (a reconnect after a long outage is not "lagging").
    pub fn connection(&mut self, up: bool, now: Instant) {
        self.connected_since = up.then_some(now);
        self.last_message = None;
        self.stream_head = None;
    }

    /// Latency EWMA in milliseconds, if any request succeeded.
    pub fn latency_ewma_ms(&self) -> Option<f64> {
        self.latency_ewma_ms
    }

    /// The `q` quantile (0..=1) of the recent latencies, in milliseconds.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.saturating_sub(1)).copied()
    }

    /// Share of recent requests that failed at the provider's fault (an EWMA, 0..=1).
    pub fn error_rate(&self) -> f64 {
        self.error_ewma
    }

    /// Whether the stream is up but has sent nothing for `timeout` while the chain moved past
    /// what the provider last showed (a socket that stays open and sends nothing). Silence
    /// alone is not enough: on a chain whose blocks are slower than the timeout every provider
    /// is silent between blocks, and on an idle chain (a node nobody sends transactions to)
    /// a new stream has nothing to deliver while its provider's HTTP answers already show the
    /// best head.
    pub fn stalled(&self, best_head: u64, timeout: Duration, now: Instant) -> bool {
        let Some(since) = self.connected_since else {
            return false;
        };
        let quiet_since = self.last_message.unwrap_or(since).max(since);
        let shown = self.stream_head.map(|(n, _)| n).or(self.head);
        let behind = shown.is_none_or(|n| n < best_head);
        behind && now.saturating_duration_since(quiet_since) > timeout
    }

    /// Blocks behind `best_head` (0 when its head is unknown: nothing to compare yet), or for a
    /// polled head, behind the best head when it was asked. Its head is refreshed by its stream
    /// or, without one, by the monitor's probe.
    pub fn lag(&self, best_head: u64) -> u64 {
        let best = self.polled_against.unwrap_or(best_head);
        self.head.map_or(0, |h| best.saturating_sub(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_ewma_and_quantiles_follow_the_samples() {
        let mut stats = Stats::default();
        assert_eq!(stats.latency_ewma_ms(), None);
        assert_eq!(stats.latency_quantile_ms(0.99), None);
        for i in 1..=100 {
            stats.request(Some(ms(i)), true);
        }
        assert_eq!(stats.latency_quantile_ms(0.5), Some(50.0));
        assert_eq!(stats.latency_quantile_ms(0.99), Some(99.0));
        assert_eq!(stats.latency_quantile_ms(1.0), Some(100.0));
        let ewma = stats.latency_ewma_ms().unwrap_or_default();
        assert!(
            ewma > 80.0 && ewma < 100.0,
            "recent samples dominate: {ewma}"
        );
    }

    #[test]
    fn quantiles_cover_only_the_recent_window() {
        let mut stats = Stats::default();
        for _ in 0..LATENCY_SAMPLES {
            stats.request(Some(ms(1_000)), true);
        }
        for _ in 0..LATENCY_SAMPLES {
            stats.request(Some(ms(10)), true);
        }
        assert_eq!(stats.latency_quantile_ms(0.99), Some(10.0));
    }

    #[test]
    fn error_rate_rises_with_failures_and_decays_with_successes() {
        let mut stats = Stats::default();
        for _ in 0..30 {
            stats.request(Some(ms(1)), false);
        }
        assert!(stats.error_rate() > 0.9);
        for _ in 0..30 {
            stats.request(Some(ms(1)), true);
        }
        assert!(stats.error_rate() < 0.1);
        assert_eq!((stats.requests, stats.errors), (60, 30));
        assert_eq!(
            stats.latency_quantile_ms(0.99),
            Some(1.0),
            "failures carry no latency"
        );
    }

    #[test]
    fn a_silent_socket_is_stalled_only_once_the_chain_moved_on() {
        let t0 = Instant::now();
        let timeout = ms(1_000);
        let mut stats = Stats::default();
        assert!(!stats.stalled(10, timeout, t0 + ms(60_000)), "no socket");
        stats.connection(true, t0);
        stats.head(10, t0, true);
        assert!(
            !stats.stalled(11, timeout, t0 + ms(999)),
            "not yet silent long"
        );
        assert!(
            !stats.stalled(10, timeout, t0 + ms(5_000)),
            "the chain did not move: a slow chain, not a stall"
        );
        assert!(stats.stalled(11, timeout, t0 + ms(1_001)));
        stats.message(t0 + ms(1_000));
        assert!(!stats.stalled(11, timeout, t0 + ms(1_500)), "a log counts");
        stats.connection(false, t0 + ms(1_600));
        assert!(!stats.stalled(99, timeout, t0 + ms(60_000)), "socket down");
        stats.connection(true, t0 + ms(2_000));
        assert_eq!(stats.stream_head, None, "a new stream starts afresh");
        assert!(
            !stats.stalled(99, timeout, t0 + ms(2_500)),
            "silence counts from the new connection"
        );
        assert!(stats.stalled(99, timeout, t0 + ms(3_001)));
    }

    #[test]
    fn an_idle_chain_is_not_a_stall_until_it_moves_past_the_providers_head() {
        let t0 = Instant::now();
        let timeout = ms(1_000);
        let mut stats = Stats::default();
        stats.connection(true, t0);
        stats.polled(2_001, t0, 0);
        assert!(
            !stats.stalled(2_001, timeout, t0 + ms(60_000)),
            "its HTTP answer shows the best head: nothing to stream"
        );
        assert!(stats.stalled(2_002, timeout, t0 + ms(1_001)));
    }

    #[test]
    fn lag_is_measured_from_the_latest_head_shown() {
        let now = Instant::now();
        let mut stats = Stats::default();
        assert_eq!(stats.lag(100), 0);
        stats.head(90, now, false);
        assert_eq!(stats.lag(100), 10);
        stats.head(80, now, true);
        assert_eq!(stats.lag(100), 20, "a node that fell back shows it");
        assert_eq!(stats.lag(50), 0);
    }

    #[test]
    fn a_polled_head_lags_by_the_best_head_when_it_was_asked() {
        let now = Instant::now();
        let mut stats = Stats::default();
        stats.polled(100, now, 100);
        assert_eq!(
            stats.lag(160),
            0,
            "the chain moved on, the answer was current"
        );
        stats.polled(100, now, 130);
        assert_eq!(stats.lag(160), 30, "asked at 130, still at 100");
        stats.head(150, now, true);
        assert_eq!(stats.lag(160), 10, "a streamed head lags now");
    }
}
