//! A connection's upstream subscriptions: made at connect for the chain's current filter set,
//! then kept in step with it as dynamic filters come and go, and closed on the way out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{EARLY_BURSTS, Listener};
use crate::ingest::filters::LogFilter;
use crate::provider::{Burst, ProviderError, WsClient};

/// How long to wait for the best-effort `eth_unsubscribe`s at shutdown.
const UNSUBSCRIBE_GRACE: Duration = Duration::from_secs(2);

/// What a subscription's notifications are.
pub(super) enum Route {
    Heads,
    Logs(LogFilter),
}

/// The connection's subscriptions, by the id the provider gave each.
#[derive(Default)]
pub(super) struct Routes(pub Vec<(String, Route)>);

impl Routes {
    pub fn find(&self, subscription: &str) -> Option<&Route> {
        self.0
            .iter()
            .find(|(id, _)| id == subscription)
            .map(|(_, route)| route)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn follows(&self, filter: &LogFilter) -> bool {
        self.0
            .iter()
            .any(|(_, r)| matches!(r, Route::Logs(f) if f == filter))
    }

    /// Takes out the log subscriptions whose filter `set` no longer holds.
    fn take_gone(&mut self, set: &[LogFilter]) -> Routes {
        let (gone, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(_, r)| matches!(r, Route::Logs(f) if !set.contains(f)));
        self.0 = kept;
        Routes(gone)
    }
}

impl Listener {
    /// Runs `work` (subscription requests), keeping what the socket delivers meanwhile
    /// (returned with its output).
    ///
    /// The replies come through the same socket as the notifications, behind them: a client
    /// whose notification queue filled up would read no further, and wait for its reply
    /// forever. So the queue is drained while the requests are under way, keeping at most
    /// [`EARLY_BURSTS`] (the oldest are dropped: the range sync fetches their blocks again).
    pub(super) async fn draining<T>(
        &self,
        notes: &mut mpsc::Receiver<Burst>,
        work: impl Future<Output = T>,
    ) -> (T, VecDeque<Burst>) {
        let mut early = VecDeque::new();
        tokio::pin!(work);
        let output = loop {
            tokio::select! {
                output = &mut work => break output,
                Some(burst) = notes.recv() => {
                    if early.len() == EARLY_BURSTS {
                        early.pop_front();
                        tracing::debug!(chain = %self.chain, provider = %self.provider.id, "dropping notifications that came before the subscriptions were made");
                    }
                    early.push_back(burst);
                }
            }
        };
        (output, early)
    }

    /// `newHeads` and a `logs` subscription per filter of `set`; none left behind on failure.
    pub(super) async fn subscribe_all(
        &self,
        client: &WsClient,
        set: &[LogFilter],
    ) -> Result<Routes, ProviderError> {
        let mut routes = Routes(Vec::with_capacity(1 + set.len()));
        let heads = client.subscribe_heads().await?;
        routes.0.push((heads, Route::Heads));
        for filter in set {
            match client.subscribe_logs(filter).await {
                Ok(id) => routes.0.push((id, Route::Logs(filter.clone()))),
                Err(err) => {
                    // Those already made would outlive this failed attempt at the provider.
                    self.unsubscribe(client, &routes).await;
                    return Err(err);
                }
            }
        }
        Ok(routes)
    }

    /// Brings `routes` in step with `set`: unsubscribes from filters gone, subscribes to those
    /// added. A filter the provider refuses is left to the range sync, which asks for it with
    /// every range; the connection carries on with the rest.
    pub(super) async fn follow(&self, client: &WsClient, routes: &mut Routes, set: &[LogFilter]) {
        let gone = routes.take_gone(set);
        self.unsubscribe(client, &gone).await;
        let added: Vec<LogFilter> = set.iter().filter(|f| !routes.follows(f)).cloned().collect();
        for filter in added {
            match client.subscribe_logs(&filter).await {
                Ok(id) => routes.0.push((id, Route::Logs(filter))),
                Err(err) => {
                    tracing::warn!(chain = %self.chain, provider = %self.provider.id, error = %err, "provider refused a dynamic log filter; the range sync reads it alone");
                }
            }
        }
        tracing::debug!(chain = %self.chain, provider = %self.provider.id, subscriptions = routes.len(), "subscriptions follow the chain's filters");
    }

    /// Best effort: a provider bills for open subscriptions, so close ours on the way out.
    pub(super) async fn unsubscribe(&self, client: &WsClient, routes: &Routes) {
        let started = Instant::now();
        for (id, _) in &routes.0 {
            let left = UNSUBSCRIBE_GRACE.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, client.unsubscribe(id))
                .await
                .is_err()
            {
                break;
            }
        }
    }
}
