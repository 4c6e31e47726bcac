//! Admin routes: pause and resume a provider, or every provider of a chain (`ingest::control`).
//! A pause is saved before the answer and survives restarts. Only callers on loopback or
//! presenting `server.auth_token` may use them (`access`).

use axum::Extension;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::access::Grant;
use super::{ApiError, AppState};
use crate::ingest::ChainHandle;
use crate::ingest::control::{self, ControlError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/providers/{chain}/{provider}/{action}", post(provider))
        .route("/v1/chains/{chain}/{action}", post(whole_chain))
}

/// What a pause or resume did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ControlJson {
    chain: String,
    providers: Vec<ControlledJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ControlledJson {
    id: String,
    /// Paused now.
    paused: bool,
    /// False when it already was as asked.
    changed: bool,
}

/// The access rules let admin routes through only with [`Grant::Admin`]; checked again here so
/// that a route reached some other way stays closed.
fn admin_only(grant: Option<Extension<Grant>>) -> Result<(), ApiError> {
    match grant {
        Some(Extension(Grant::Admin)) => Ok(()),
        _ => Err(ApiError::Forbidden(
            "pausing and resuming needs a caller on this host or server.auth_token".into(),
        )),
    }
}

fn chain<'a>(state: &'a AppState, name: &str) -> Result<&'a ChainHandle, ApiError> {
    state
        .chains
        .iter()
        .find(|c| &*c.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no chain {name:?}")))
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::UnknownProvider { .. } => ApiError::NotFound(err.to_string()),
            ControlError::Registry(err) => ApiError::Internal(Box::new(err)),
        }
    }
}

/// Pauses or resumes `providers` of `chain`.
async fn set(
    state: &AppState,
    chain: &ChainHandle,
    providers: Vec<String>,
    paused: bool,
) -> Result<Json<ControlJson>, ApiError> {
    let mut out = Vec::with_capacity(providers.len());
    for id in providers {
        let changed = if paused {
            control::pause(&state.supervisor, chain, &id).await?
        } else {
            control::resume(&state.supervisor, chain, &id).await?
        };
        out.push(ControlledJson {
            id,
            paused,
            changed,
        });
    }
    Ok(Json(ControlJson {
        chain: chain.name.to_string(),
        providers: out,
    }))
}

/// `pause` or `resume`.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Action {
    Pause,
    Resume,
}

/// Pauses a provider (nothing is asked of it — stream, ranges, gateway calls, probes — until
/// resumed, across restarts) or resumes it.
#[utoipa::path(post, path = "/v1/providers/{chain}/{provider}/{action}", tag = "control",
    params(("chain" = String, Path), ("provider" = String, Path), ("action" = Action, Path)),
    responses(
        (status = 200, description = "Done, and saved before this answer", body = ControlJson),
        (status = 401, description = "Not on this host and no or a wrong server.auth_token", body = super::error::ErrorBody),
        (status = 403, description = "Not on this host, and no server.auth_token configured", body = super::error::ErrorBody),
        (status = 404, description = "No such chain, provider or action", body = super::error::ErrorBody),
    ))]
pub(super) async fn provider(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    Path((chain_name, provider, action)): Path<(String, String, String)>,
) -> Result<Json<ControlJson>, ApiError> {
    admin_only(grant)?;
    let paused = pausing(&action)?;
    let chain = chain(&state, &chain_name)?;
    set(&state, chain, vec![provider], paused).await
}

/// Pauses or resumes a chain's ingestion: every one of its providers.
#[utoipa::path(post, path = "/v1/chains/{chain}/{action}", tag = "control",
    params(("chain" = String, Path), ("action" = Action, Path)),
    responses(
        (status = 200, description = "Done for every provider, saved before this answer", body = ControlJson),
        (status = 401, description = "Not on this host and no or a wrong server.auth_token", body = super::error::ErrorBody),
        (status = 403, description = "Not on this host, and no server.auth_token configured", body = super::error::ErrorBody),
        (status = 404, description = "No such chain or action", body = super::error::ErrorBody),
    ))]
pub(super) async fn whole_chain(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    Path((chain_name, action)): Path<(String, String)>,
) -> Result<Json<ControlJson>, ApiError> {
    admin_only(grant)?;
    let paused = pausing(&action)?;
    let chain = chain(&state, &chain_name)?;
    set(&state, chain, chain.provider_ids.clone(), paused).await
}

/// Whether `action` pauses (`pause`) or resumes (`resume`).
fn pausing(action: &str) -> Result<bool, ApiError> {
    match action {
        "pause" => Ok(true),
        "resume" => Ok(false),
        other => Err(ApiError::NotFound(format!(
            "no action {other:?}: pause or resume"
        ))),
    }
}
