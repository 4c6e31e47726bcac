//! `GET /v1/processes`: every supervised task, its status and its restarts.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::json::rfc3339_ms;
use crate::registry::ProcessInfo;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/processes", get(processes))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProcessesJson {
    /// False once a critical task has failed for good (`/ready` is then false too).
    healthy: bool,
    processes: Vec<ProcessJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ProcessJson {
    kind: String,
    id: String,
    /// `running`, `restarting`, `stopped`, `failed`, or `paused` (a listener an operator
    /// paused: not running until resumed).
    status: &'static str,
    restarts: u32,
    last_error: Option<String>,
    /// When its current run started; null for a paused listener.
    started_at: Option<String>,
}

impl From<ProcessInfo> for ProcessJson {
    fn from(info: ProcessInfo) -> Self {
        ProcessJson {
            status: info.status.as_str(),
            started_at: Some(rfc3339_ms(info.started_at_ms)),
            kind: info.kind,
            id: info.id,
            restarts: info.restarts,
            last_error: info.last_error,
        }
    }
}

/// Every supervised task: status, restarts, last error.
#[utoipa::path(get, path = "/v1/processes", tag = "state",
    responses((status = 200, description = "The supervised tasks", body = ProcessesJson)))]
pub(super) async fn processes(State(state): State<AppState>) -> Json<ProcessesJson> {
    let mut processes: Vec<ProcessJson> = state
        .supervisor
        .registry()
        .list()
        .into_iter()
        .map(ProcessJson::from)
        .collect();
    // A paused provider's listener is not running: listed as such, not left out.
    for chain in state.chains.iter() {
        for listener in chain.listeners.iter() {
            let id = format!("{}/{}", chain.name, listener.provider.id);
            let index = usize::from(listener.provider.index);
            let listed = processes.iter().any(|p| p.kind == "listener" && p.id == id);
            if chain.health.is_paused(index) && !listed {
                processes.push(ProcessJson {
                    kind: "listener".into(),
                    id,
                    status: "paused",
                    restarts: 0,
                    last_error: None,
                    started_at: None,
                });
            }
        }
    }
    processes.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    Json(ProcessesJson {
        healthy: state.supervisor.healthy(),
        processes,
    })
}
