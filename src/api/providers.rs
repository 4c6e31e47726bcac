//! `GET /v1/providers`: per chain × provider, its breaker, health, head, lag, latency, error
//! rate and delivery race statistics (`docs/api.md`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::json::rfc3339_ms;
use crate::health::ProviderReport;
use crate::ingest::race::{Lateness, ProviderRace};
use crate::provider::{ERROR_KINDS, ErrorTally};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/providers", get(providers))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProvidersJson {
    providers: Vec<ProviderJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ProviderJson {
    id: String,
    chain: String,
    priority: u32,
    healthy: bool,
    /// Why not, when not healthy: `breaker_open`, `unreachable`, `stalled`, `lagging`.
    unhealthy_reason: Option<&'static str>,
    /// Its stream is open but silent while the chain moved on.
    stalled: bool,
    /// Its WebSocket stream is connected.
    connected: bool,
    head: Option<u64>,
    lag_blocks: u64,
    breaker: BreakerJson,
    latency_ms: LatencyJson,
    /// Share of recent requests that failed at the provider's fault (EWMA, 0..=1).
    error_rate: f64,
    requests: u64,
    errors: u64,
    /// Blocks per `eth_getLogs` range it accepts, as learned from its refusals (the range
    /// sync's own limit until it refuses one).
    range_limit: u64,
    /// Every error met talking to it since start (its HTTP calls and its WebSocket), by kind:
    /// `connect`, `transport`, `closed`, `timeout`, `http_status`, `malformed`,
    /// `rate_limited`, `range`, `fault`, `missing`, `caller` (every kind listed, zeros
    /// included).
    errors_by_class: BTreeMap<&'static str, u64>,
    /// Live events it delivered before any other provider.
    delivered_first: u64,
    /// Live events it delivered after another provider had, and how late (`lateness_ms`).
    delivered_late: u64,
    /// Live events it never delivered while they were in the dedupe window.
    missed: u64,
    lateness_ms: Option<LatenessJson>,
}

/// How late a provider's late deliveries were, in milliseconds; null before any.
#[derive(Serialize, utoipa::ToSchema)]
struct LatenessJson {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<u64>,
    mean: Option<f64>,
}

impl From<Lateness> for LatenessJson {
    fn from(l: Lateness) -> Self {
        LatenessJson {
            p50: l.p50,
            p99: l.p99,
            max: l.max,
            mean: l.mean,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct BreakerJson {
    state: &'static str,
    consecutive_failures: u32,
    opened_at: Option<String>,
    /// Its latest transitions since start, oldest first (at most 16).
    history: Vec<TransitionJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TransitionJson {
    from: &'static str,
    to: &'static str,
    /// When, RFC 3339.
    at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LatencyJson {
    p50: Option<f64>,
    p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ewma: Option<f64>,
}

/// Milliseconds rounded to microseconds: enough precision, shorter JSON.
fn round(ms: Option<f64>) -> Option<f64> {
    ms.map(|v| (v * 1000.0).round() / 1000.0)
}

impl ProviderJson {
    fn new(
        chain: &str,
        report: ProviderReport,
        race: Option<ProviderRace>,
        errors: Option<&ErrorTally>,
        range_limit: u64,
    ) -> ProviderJson {
        ProviderJson {
            id: report.id,
            chain: chain.to_owned(),
            priority: report.priority,
            healthy: report.healthy,
            unhealthy_reason: report.unhealthy.map(|u| u.as_str()),
            stalled: report.stalled,
            connected: report.connected,
            head: report.head,
            lag_blocks: report.lag_blocks,
            breaker: BreakerJson {
                state: report.breaker.as_str(),
                consecutive_failures: report.consecutive_failures,
                opened_at: report.opened_at_ms.map(rfc3339_ms),
                history: report
                    .transitions
                    .iter()
                    .map(|t| TransitionJson {
                        from: t.from.as_str(),
                        to: t.to.as_str(),
                        at: rfc3339_ms(t.at_wall_ms),
                    })
                    .collect(),
            },
            latency_ms: LatencyJson {
                p50: round(report.latency_p50_ms),
                p99: round(report.latency_p99_ms),
                ewma: round(report.latency_ewma_ms),
            },
            error_rate: (report.error_rate * 1e4).round() / 1e4,
            requests: report.requests,
            errors: report.errors,
            range_limit,
            errors_by_class: match errors {
                Some(tally) => tally.counts().into_iter().collect(),
                None => ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            },
            delivered_first: race.as_ref().map_or(0, |r| r.delivered_first),
            delivered_late: race.as_ref().map_or(0, |r| r.delivered_late),
            missed: race.as_ref().map_or(0, |r| r.missed),
            lateness_ms: race.map(|r| r.lateness_ms.into()),
        }
    }
}

/// Per chain × provider: health, breaker, latency, and who delivers first.
#[utoipa::path(get, path = "/v1/providers", tag = "state",
    responses((status = 200, description = "Every provider of every chain", body = ProvidersJson)))]
pub(super) async fn providers(State(state): State<AppState>) -> Json<ProvidersJson> {
    let mut providers = Vec::new();
    for chain in state.chains.iter() {
        let mut races = chain.race.snapshot();
        for report in chain.health.report() {
            let race = races
                .iter()
                .position(|r| r.provider == report.id)
                .map(|i| races.swap_remove(i));
            let provider = chain.providers.all().iter().find(|p| p.id == report.id);
            let errors = provider.map(|p| p.http.errors());
            let range_limit = provider.map_or(crate::ingest::sync::MAX_RANGE, |p| {
                p.range_limit.load(std::sync::atomic::Ordering::Relaxed)
            });
            providers.push(ProviderJson::new(
                &chain.name,
                report,
                race,
                errors,
                range_limit,
            ));
        }
    }
    Json(ProvidersJson { providers })
}
