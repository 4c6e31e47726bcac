//! `GET /v1/coverage`: the ledger of what is stored. Per chain and per configured subscription,
//! the block range held completely (with the hash at each end) and every hole with its reason,
//! so that "no logs for my address in blocks A..B" can be told apart from "we don't have them".

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::config::Subscription;
use crate::domain::Cursor;
use crate::ingest::ChainHandle;
use crate::store::{Held, Mark};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/coverage", get(coverage))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CoverageJson {
    chains: Vec<ChainCoverage>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChainCoverage {
    name: String,
    head: u64,
    checkpoint: Option<BlockJson>,
    safe_block: Option<u64>,
    finalized_block: Option<u64>,
    /// Every block from here to the checkpoint is stored whole; null before the first range.
    retained: Option<RangeJson>,
    cursors: Option<CursorsJson>,
    pruned: Option<PrunedJson>,
    subscriptions: Vec<SubscriptionCoverage>,
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
struct BlockJson {
    number: u64,
    hash: String,
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
struct RangeJson {
    from_block: u64,
    from_hash: Option<String>,
    to_block: u64,
    to_hash: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CursorsJson {
    /// The chain's oldest and newest stored event.
    oldest: Cursor,
    newest: Cursor,
    /// The lowest cursor a reader may resume after without `cursor_expired` (0: any).
    resume_after: Cursor,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PrunedJson {
    /// Every block below this one was pruned.
    below_block: u64,
    events: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SubscriptionCoverage {
    subscription: serde_json::Value,
    /// The range stored completely for this subscription (none before the first range).
    complete: Option<RangeJson>,
    holes: Vec<Hole>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
struct Hole {
    /// Null when unknown (the chain's first indexed block was pruned).
    from_block: Option<u64>,
    to_block: u64,
    reason: &'static str,
}

/// Why a range is not stored, as `/v1/coverage` names it.
mod reason {
    /// Retention deleted it.
    pub const PRUNED: &str = "pruned";
    /// Below where the chain's indexing began (a `from_block` added after it began).
    pub const NOT_INDEXED: &str = "not_indexed";
    /// Below the subscription's own `from_block`: its logs there were never asked for.
    pub const BEFORE_FROM_BLOCK: &str = "before_from_block";
    /// Every provider tried failed this range; it is being retried.
    pub const REFUSED: &str = "refused_by_providers";
    /// Above the checkpoint: not synced yet.
    pub const NOT_YET_SYNCED: &str = "not_yet_synced";
}

/// Per chain and subscription: the blocks stored whole, and every hole with its reason.
#[utoipa::path(get, path = "/v1/coverage", tag = "state", responses(
    (status = 200, description = "Every configured chain", body = CoverageJson),
    (status = 503, description = "The database is busy: retry", body = super::error::ErrorBody),
))]
pub(super) async fn coverage(
    State(state): State<AppState>,
) -> Result<Json<CoverageJson>, ApiError> {
    let mut chains = Vec::with_capacity(state.chains.len());
    for chain in state.chains.iter() {
        chains.push(chain_coverage(&state, chain).await?);
    }
    Ok(Json(CoverageJson { chains }))
}

async fn chain_coverage(state: &AppState, chain: &ChainHandle) -> Result<ChainCoverage, ApiError> {
    let store = &state.store;
    let checkpoint = store.checkpoint(&chain.name).await?;
    let held = store.held(&chain.name).await?;
    let progress = *chain.progress.borrow();
    let head = progress.head.max(*chain.best_head.borrow());
    let top = checkpoint.as_ref().map(|cp| BlockJson {
        number: cp.block_number,
        hash: cp.block_hash.to_string(),
    });
    let first = held
        .first_block
        .filter(|(n, _)| Some(*n) <= top.as_ref().map(|t| t.number));
    let retained = match (&first, &top) {
        (Some((n, hash)), Some(top)) => Some(RangeJson {
            from_block: *n,
            from_hash: Some(hash.to_string()),
            to_block: top.number,
            to_hash: top.hash.clone(),
        }),
        _ => None,
    };
    let mut subscriptions = Vec::with_capacity(chain.subscriptions.len());
    for sub in &chain.subscriptions {
        let wanted = match sub {
            Subscription::Logs(logs) => logs.from_block,
            Subscription::Blocks => None,
        };
        let complete = match &retained {
            Some(range) if wanted.is_some_and(|w| w > range.from_block) => {
                let from = wanted.unwrap_or(range.from_block);
                match from <= range.to_block {
                    true => Some(RangeJson {
                        from_block: from,
                        from_hash: store
                            .block_hash_at(&chain.name, from)
                            .await?
                            .map(|h| h.to_string()),
                        ..range.clone()
                    }),
                    false => None,
                }
            }
            other => other.clone(),
        };
        let frame = Frame {
            wanted,
            first: first.map(|(n, _)| n),
            checkpoint: top.as_ref().map(|t| t.number),
            head,
            failing: progress.failing,
            mark: held.mark,
        };
        subscriptions.push(SubscriptionCoverage {
            subscription: describe(sub),
            complete,
            holes: frame.holes(),
        });
    }
    Ok(ChainCoverage {
        name: chain.name.to_string(),
        head,
        safe_block: checkpoint.as_ref().and_then(|cp| cp.safe_block),
        finalized_block: checkpoint.as_ref().and_then(|cp| cp.finalized_block),
        checkpoint: top,
        retained,
        cursors: cursors(&held),
        pruned: held.mark.map(|m| PrunedJson {
            below_block: m.low_block,
            events: m.pruned_events,
        }),
        subscriptions,
    })
}

fn cursors(held: &Held) -> Option<CursorsJson> {
    let (oldest, newest) = held.cursors?;
    Some(CursorsJson {
        oldest,
        newest,
        resume_after: held.mark.map_or(0, |m| m.oldest_cursor),
    })
}

/// A subscription as configured, in the config's own words.
fn describe(sub: &Subscription) -> serde_json::Value {
    match sub {
        Subscription::Blocks => serde_json::json!({ "blocks": true }),
        Subscription::Logs(logs) => serde_json::json!({ "logs": {
            "address": logs.address.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "topics": logs.topics.iter().map(|t| t.as_ref().map(|list| {
                list.iter().map(|h| h.to_string()).collect::<Vec<_>>()
            })).collect::<Vec<_>>(),
            "from_block": logs.from_block,
        }}),
    }
}

/// What a subscription's holes are computed from.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The subscription's `from_block`, if it names one.
    wanted: Option<u64>,
    /// The lowest block stored.
    first: Option<u64>,
    checkpoint: Option<u64>,
    head: u64,
    failing: Option<(u64, u64)>,
    mark: Option<Mark>,
}

impl Frame {
    /// The holes, lowest first.
    fn holes(&self) -> Vec<Hole> {
        let mut holes = Vec::new();
        let hole = |from: Option<u64>, to: u64, reason| Hole {
            from_block: from,
            to_block: to,
            reason,
        };
        let low = self.mark.map(|m| m.low_block).filter(|l| *l > 0);
        if let Some(low) = low
            && self.wanted.is_none_or(|w| w < low)
        {
            holes.push(hole(self.wanted, low - 1, reason::PRUNED));
        }
        if let (Some(wanted), Some(first)) = (self.wanted, self.first) {
            let floor = low.unwrap_or(0).max(wanted);
            if floor < first {
                holes.push(hole(Some(floor), first - 1, reason::NOT_INDEXED));
            } else if wanted > first {
                holes.push(hole(Some(first), wanted - 1, reason::BEFORE_FROM_BLOCK));
            }
        }
        let next = self.checkpoint.map_or(self.wanted.unwrap_or(0), |c| c + 1);
        let mut synced_from = next;
        if let Some((from, to)) = self.failing.filter(|(_, to)| *to >= next) {
            holes.push(hole(Some(from.max(next)), to, reason::REFUSED));
            synced_from = to + 1;
        }
        if self.head >= synced_from {
            holes.push(hole(Some(synced_from), self.head, reason::NOT_YET_SYNCED));
        }
        holes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            wanted: None,
            first: Some(100),
            checkpoint: Some(200),
            head: 200,
            failing: None,
            mark: None,
        }
    }

    fn reasons(frame: Frame) -> Vec<(Option<u64>, u64, &'static str)> {
        frame
            .holes()
            .into_iter()
            .map(|h| (h.from_block, h.to_block, h.reason))
            .collect()
    }

    #[test]
    fn a_synced_unpruned_chain_has_no_hole() {
        assert!(reasons(frame()).is_empty());
    }

    #[test]
    fn pruning_and_the_unsynced_top_are_holes() {
        let f = Frame {
            mark: Some(Mark {
                low_block: 150,
                oldest_cursor: 9,
                pruned_events: 10,
            }),
            first: Some(150),
            head: 210,
            ..frame()
        };
        assert_eq!(
            reasons(f),
            [
                (None, 149, reason::PRUNED),
                (Some(201), 210, reason::NOT_YET_SYNCED)
            ]
        );
        let from_120 = Frame {
            wanted: Some(120),
            ..f
        };
        assert_eq!(reasons(from_120)[0], (Some(120), 149, reason::PRUNED));
    }

    #[test]
    fn a_from_block_past_the_first_block_and_one_below_it_are_told_apart() {
        let later = Frame {
            wanted: Some(150),
            ..frame()
        };
        assert_eq!(
            reasons(later),
            [(Some(100), 149, reason::BEFORE_FROM_BLOCK)]
        );
        let earlier = Frame {
            wanted: Some(40),
            ..frame()
        };
        assert_eq!(reasons(earlier), [(Some(40), 99, reason::NOT_INDEXED)]);
    }

    #[test]
    fn a_range_every_provider_refuses_is_its_own_hole() {
        let f = Frame {
            failing: Some((201, 220)),
            head: 300,
            ..frame()
        };
        assert_eq!(
            reasons(f),
            [
                (Some(201), 220, reason::REFUSED),
                (Some(221), 300, reason::NOT_YET_SYNCED)
            ]
        );
    }
}
