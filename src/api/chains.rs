//! `GET /v1/chains` (per chain: head, checkpoint, lag, sync progress, providers) and
//! `GET /ready` (the database takes writes, every chain has a healthy provider and none is
//! stuck below its checkpoint).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ErrorBody;
use super::openapi::Status;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chains", get(chains))
        .route("/ready", get(ready))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ChainsJson {
    chains: Vec<ChainJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChainJson {
    name: String,
    chain_id: u64,
    head: u64,
    checkpoint: Option<u64>,
    /// Head minus checkpoint: negative while every provider is below the checkpoint.
    lag_blocks: i64,
    backfill: BackfillJson,
    providers: Vec<String>,
    /// Why the chain cannot advance, if it cannot (also `/ready`'s reason); else null.
    problem: Option<String>,
    /// The blocks held whole, lowest to checkpoint (`/v1/coverage` has the detail).
    retained: Option<RetainedJson>,
    /// The highest blocks the chain calls `safe` and `finalized` (as stored with the
    /// checkpoint); null until known.
    safe_block: Option<u64>,
    finalized_block: Option<u64>,
    /// The latest reorgs walked back from since start, oldest first (at most 32).
    recent_reorgs: Vec<ReorgJson>,
    /// Events committed since the service started (a client's rate is its change over time).
    stored_since_start: StoredJson,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StoredJson {
    blocks: u64,
    logs: u64,
    /// Retracted by reorgs.
    removed: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ReorgJson {
    /// Blocks replaced.
    depth: u64,
    /// The highest block both branches share.
    ancestor_block: u64,
    /// Deeper than the kept window: the chain was read again from its start.
    too_deep: bool,
    /// When it was found, RFC 3339.
    at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RetainedJson {
    from_block: u64,
    to_block: u64,
    /// Every block below this one was pruned by retention; null if none was.
    pruned_below: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BackfillJson {
    /// True while the checkpoint is more than one range behind the head.
    active: bool,
    remaining_blocks: u64,
    range_limit: u64,
    /// While a backfill runs (else null): blocks done since it started and its total (the
    /// head moves on meanwhile), blocks and logs committed per second so far, and the
    /// seconds left at that rate (null before the first block is done).
    done_blocks: Option<u64>,
    total_blocks: Option<u64>,
    blocks_per_second: Option<f64>,
    logs_per_second: Option<f64>,
    eta_seconds: Option<u64>,
}

/// Each chain's head, checkpoint, lag, backfill and retained span.
#[utoipa::path(get, path = "/v1/chains", tag = "state", responses(
    (status = 200, description = "Every configured chain", body = ChainsJson),
    (status = 503, description = "The database is busy: retry", body = ErrorBody),
))]
pub(super) async fn chains(State(state): State<AppState>) -> Result<Json<ChainsJson>, ApiError> {
    let mut chains = Vec::with_capacity(state.chains.len());
    for chain in state.chains.iter() {
        let progress = *chain.progress.borrow();
        let head = progress.head.max(*chain.best_head.borrow());
        // The committed checkpoint, not the sync's: a range sent to the writer but not yet
        // committed must not be reported, or a client reading up to it would miss events.
        let stored = state.store.checkpoint(&chain.name).await?;
        let checkpoint = stored.as_ref().map(|cp| cp.block_number);
        let lag = head.saturating_sub(checkpoint.unwrap_or(0));
        let held = state.store.held(&chain.name).await?;
        let retained = match (held.first_block, checkpoint) {
            (Some((from, _)), Some(to)) if from <= to => Some(RetainedJson {
                from_block: from,
                to_block: to,
                pruned_below: held.mark.map(|m| m.low_block).filter(|l| *l > 0),
            }),
            _ => None,
        };
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        chains.push(ChainJson {
            name: chain.name.to_string(),
            chain_id: chain.chain_id,
            head,
            checkpoint,
            lag_blocks: signed(head) - signed(checkpoint.unwrap_or(0)),
            backfill: backfill_json(lag, progress.range_limit, chain.backfill.get()),
            providers: chain.provider_ids.clone(),
            problem: if paused(chain) {
                Some(format!(
                    "chain {}: every provider is paused by an operator (POST /v1/chains/{}/resume)",
                    chain.name, chain.name
                ))
            } else {
                progress.stuck.map(|stuck| stuck.reason(&chain.name))
            },
            retained,
            safe_block: stored.as_ref().and_then(|cp| cp.safe_block),
            finalized_block: stored.as_ref().and_then(|cp| cp.finalized_block),
            recent_reorgs: chain
                .reorgs
                .recent()
                .into_iter()
                .map(|r| ReorgJson {
                    depth: r.depth,
                    ancestor_block: r.ancestor,
                    too_deep: r.too_deep,
                    at: super::json::rfc3339_ms(r.at_ms),
                })
                .collect(),
            stored_since_start: {
                let s = chain.stored.get();
                StoredJson {
                    blocks: s.blocks,
                    logs: s.logs,
                    removed: s.removed,
                }
            },
        });
    }
    Ok(Json(ChainsJson { chains }))
}

/// Whether an operator paused every provider of `chain` (its ingestion stands still).
fn paused(chain: &crate::ingest::ChainHandle) -> bool {
    let health = &chain.health;
    !health.is_empty() && (0..health.len()).all(|i| health.is_paused(i))
}

/// Readiness: the database takes writes, every chain has a healthy provider, no critical task
/// failed for good.
#[utoipa::path(get, path = "/ready", tag = "service", responses(
    (status = 200, description = "Ready", body = Status),
    (status = 503, description = "Not ready, and why (`not_ready`)", body = ErrorBody),
))]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if !state.supervisor.healthy() {
        return Err(ApiError::NotReady(
            "a critical task keeps failing (see /v1/processes)".into(),
        ));
    }
    if !state.writer.is_ready() {
        let reason = state.writer.fault().map_or_else(
            || "the database is not taking writes".to_owned(),
            |fault| fault.reason(),
        );
        return Err(ApiError::NotReady(reason));
    }
    for chain in state.chains.iter() {
        if paused(chain) {
            continue; // an operator's choice, not a failure
        }
        if chain.progress.borrow().head == 0 && *chain.best_head.borrow() == 0 {
            return Err(ApiError::NotReady(format!(
                "chain {} has no provider answering yet",
                chain.name
            )));
        }
        if let Some(stuck) = chain.progress.borrow().stuck {
            return Err(ApiError::NotReady(stuck.reason(&chain.name)));
        }
        if !chain.health.any_healthy() {
            return Err(ApiError::NotReady(format!(
                "chain {} has no healthy provider",
                chain.name
            )));
        }
    }
    Ok(Json(Status { status: "ready" }))
}

/// A chain's backfill: from the committed checkpoint, and the rate the progress follower
/// measured while one runs (rounded to a tenth).
fn backfill_json(
    lag: u64,
    range_limit: u64,
    rate: Option<crate::ingest::tally::BackfillRate>,
) -> BackfillJson {
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    BackfillJson {
        active: lag > range_limit,
        remaining_blocks: lag,
        range_limit,
        done_blocks: rate.map(|r| r.done_blocks),
        total_blocks: rate.map(|r| r.total_blocks),
        blocks_per_second: rate.map(|r| tenth(r.blocks_per_second)),
        logs_per_second: rate.map(|r| tenth(r.logs_per_second)),
        eta_seconds: rate.and_then(|r| r.eta_seconds),
    }
}
