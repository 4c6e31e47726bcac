//! The hub's run as a supervised process (`publisher/hub`), restarts included.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::{Hub, Render};
use crate::registry::{Criticality, ProcessKey, RegistryError, Supervisor};
use crate::store::Committed;

/// Spawns the publisher under `supervisor`: committed batches from `committed` to `hub`,
/// rendered by `render`.
///
/// The first run's subscription to `committed` is taken now, before anything can commit, so
/// the first run misses no batch (a stream session's seam relies on it: what commits after the
/// session subscribed to the hub must reach the hub). A restart missed the batches committed
/// while it was down: it cuts every subscriber off, and each catches up from the database.
pub fn spawn_publisher(
    supervisor: &Supervisor,
    hub: Hub,
    committed: broadcast::Sender<Arc<Committed>>,
    render: Render,
) -> Result<(), RegistryError> {
    let first = Mutex::new(Some(committed.subscribe()));
    supervisor.spawn(
        ProcessKey::new("publisher", "hub"),
        serde_json::json!({}),
        Criticality::Ordinary,
        move |token| {
            let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            let batches = first.unwrap_or_else(|| {
                // Subscribed before the cut: a session cut off now catches up from the store
                // and finds, in this subscription, everything committed after its catch-up.
                let batches = committed.subscribe();
                hub.cut_all();
                batches
            });
            let (hub, render) = (hub.clone(), render.clone());
            Box::pin(async move {
                hub.run(batches, render, token).await;
                Ok(())
            })
        },
    )
}
