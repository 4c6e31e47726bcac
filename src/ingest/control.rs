//! Pausing and resuming a provider at run time, as an operator asks: its listener is stopped
//! through the supervisor (its `desired` cleared and saved before the answer) and its health
//! refuses every permit, so nothing is asked of it until it is resumed. The stored `desired`
//! is what makes a pause survive restarts: at start a listener stored as not desired is
//! started stopped and its provider paused.

use serde_json::json;

use super::ChainHandle;
use super::listener::Listener;
use crate::registry::{Criticality, ProcessKey, RegistryError, Supervisor};

/// The supervised key of a provider's listener.
pub fn listener_key(chain: &str, provider: &str) -> ProcessKey {
    ProcessKey::new("listener", format!("{chain}/{provider}"))
}

/// Why a pause or resume could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("chain {chain} has no provider {provider}")]
    UnknownProvider { chain: String, provider: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Starts `listener` under the supervisor; `saved`: its row is on disk before this returns.
pub async fn spawn_listener(
    supervisor: &Supervisor,
    listener: Listener,
    saved: bool,
) -> Result<(), RegistryError> {
    let key = listener_key(&listener.chain, &listener.provider.id);
    let spec = json!({ "chain": listener.chain, "provider": listener.provider.id });
    let factory = move |token| {
        let listener = listener.clone();
        Box::pin(async move {
            listener.run(token).await;
            Ok(())
        }) as futures_util::future::BoxFuture<'static, _>
    };
    if saved {
        supervisor
            .spawn_saved(key, spec, Criticality::Ordinary, factory)
            .await
    } else {
        supervisor.spawn(key, spec, Criticality::Ordinary, factory)
    }
}

fn find<'a>(chain: &'a ChainHandle, provider: &str) -> Result<&'a Listener, ControlError> {
    chain
        .listeners
        .iter()
        .find(|l| l.provider.id == provider)
        .ok_or_else(|| ControlError::UnknownProvider {
            chain: chain.name.to_string(),
            provider: provider.to_owned(),
        })
}

/// Pauses `provider` of `chain`; whether it was running (false: already paused).
pub async fn pause(
    supervisor: &Supervisor,
    chain: &ChainHandle,
    provider: &str,
) -> Result<bool, ControlError> {
    let listener = find(chain, provider)?;
    chain
        .health
        .set_paused(usize::from(listener.provider.index), true);
    let stopped = supervisor
        .stop_saved(&listener_key(&chain.name, provider))
        .await?;
    tracing::info!(chain = %chain.name, provider, "provider paused by an operator");
    Ok(stopped)
}

/// Resumes `provider` of `chain`; whether it was paused.
pub async fn resume(
    supervisor: &Supervisor,
    chain: &ChainHandle,
    provider: &str,
) -> Result<bool, ControlError> {
    let listener = find(chain, provider)?;
    let index = usize::from(listener.provider.index);
    let was_paused = chain.health.is_paused(index);
    if !was_paused {
        return Ok(false);
    }
    // The stopped run may still be ending: its key frees up within its stop grace.
    let mut tries = 0;
    loop {
        match spawn_listener(supervisor, listener.clone(), true).await {
            Ok(()) => break,
            Err(err) if err.is_conflict() && tries < 100 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    chain.health.set_paused(index, false);
    tracing::info!(chain = %chain.name, provider, "provider resumed by an operator");
    Ok(true)
}
