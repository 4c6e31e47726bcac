//! One listener per chain × provider: a WebSocket with `newHeads` and `logs` subscriptions,
//! forwarding every notification to the chain's aggregator, reconnecting with backoff.
//!
//! The listener reads only what routing needs (a head's fields, a log's identity); the full
//! parse of a log happens in the aggregator, and only for the first copy of it.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ChainInput;
use super::filters::LogFilter;
use super::providers::{ChainProvider, backoff};
use crate::domain::ChainName;
use crate::provider::{Notification, ProviderError, WsClient, WsOptions, decode, jsonrpc};
use crate::telemetry::metrics as m;

/// How long to wait for the best-effort `eth_unsubscribe`s at shutdown.
const UNSUBSCRIBE_GRACE: Duration = Duration::from_secs(2);
/// Notifications one connection may have read ahead of the listener; the socket's own buffers
/// hold more. Past this the socket is not read, and TCP slows the provider down.
const NOTIFICATION_QUEUE: usize = 1024;
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Listener {
    pub chain: ChainName,
    pub provider: ChainProvider,
    pub filters: Vec<LogFilter>,
    pub output: mpsc::Sender<ChainInput>,
}

enum Route {
    Heads,
    Logs,
}

/// Metric handles resolved once per connection, not per notification.
struct Meters {
    received: metrics::Counter,
    malformed: metrics::Counter,
}

impl Meters {
    fn new(chain: &ChainName, provider: &str) -> Meters {
        let labels = || {
            [
                ("chain", chain.to_string()),
                ("provider", provider.to_owned()),
            ]
        };
        Meters {
            received: metrics::counter!(m::EVENTS_RECEIVED, &labels()),
            malformed: metrics::counter!(m::PROVIDER_MALFORMED, &labels()),
        }
    }
}

impl Listener {
    /// Runs until `shutdown`; every connection failure is retried after a backoff delay.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(url) = self.provider.ws_url.clone() else {
            return;
        };
        let mut delays = backoff();
        let mut connected_before = false;
        while !shutdown.is_cancelled() {
            let (notes_tx, notes_rx) = mpsc::channel(NOTIFICATION_QUEUE);
            let connection =
                WsClient::connect(&url, WsOptions::default(), notes_tx, shutdown.child_token())
                    .await;
            let outcome = match connection {
                Ok(client) => {
                    if connected_before {
                        metrics::counter!(m::WS_RECONNECTS, "chain" => self.chain.to_string(), "provider" => self.provider.id.clone()).increment(1);
                    }
                    connected_before = true;
                    let since = Instant::now();
                    let served = self.serve(client, notes_rx, &shutdown).await;
                    // A connection that held for a while was a success: the next failure starts
                    // the backoff curve afresh. One that dropped at once keeps climbing it.
                    if served.is_ok() && since.elapsed() >= STABLE_CONNECTION {
                        delays = backoff();
                    }
                    served
                }
                Err(err) => Err(err),
            };
            if shutdown.is_cancelled() {
                break;
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            match outcome {
                Ok(()) => {
                    tracing::warn!(chain = %self.chain, provider = %self.provider.id, "provider socket closed; reconnecting")
                }
                Err(err) => {
                    tracing::warn!(chain = %self.chain, provider = %self.provider.id, error = %err, delay_ms = delay.as_millis() as u64, "provider connection failed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Subscribes, then forwards notifications until the socket or the service ends.
    async fn serve(
        &self,
        client: WsClient,
        mut notes: mpsc::Receiver<Notification>,
        shutdown: &CancellationToken,
    ) -> Result<(), ProviderError> {
        let mut routes: Vec<(String, Route)> = Vec::with_capacity(1 + self.filters.len());
        let heads = client
            .subscribe(jsonrpc::params(&json!(["newHeads"]))?)
            .await?;
        routes.push((heads, Route::Heads));
        for filter in &self.filters {
            let id = client
                .subscribe(jsonrpc::params(&json!(["logs", filter.to_json()]))?)
                .await?;
            routes.push((id, Route::Logs));
        }
        tracing::info!(chain = %self.chain, provider = %self.provider.id, subscriptions = routes.len(), "subscribed");
        let meters = Meters::new(&self.chain, &self.provider.id);
        loop {
            // Biased: shutdown first so unsubscribing is not starved by a busy socket.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.unsubscribe(&client, &routes).await;
                    return Ok(());
                }
                note = notes.recv() => match note {
                    Some(note) => {
                        let route = routes.iter().find(|(id, _)| *id == note.subscription).map(|(_, r)| r);
                        if let Some(route) = route
                            && self.forward(&meters, route, note).await.is_err()
                        {
                            return Ok(()); // the aggregator is gone: shutting down
                        }
                    }
                    None => return Ok(()),
                },
                _ = client.closed() => return Ok(()),
            }
        }
    }

    async fn forward(&self, meters: &Meters, route: &Route, note: Notification) -> Result<(), ()> {
        let provider = self.provider.index;
        let input = match route {
            Route::Heads => decode::head(&note.result).map(|head| ChainInput::Head {
                provider,
                head: Box::new(head),
                at: note.received_at,
            }),
            Route::Logs => decode::log_key(&note.result).map(|key| ChainInput::Log {
                provider,
                key,
                raw: note.result,
                at: note.received_at,
            }),
        };
        meters.received.increment(1);
        match input {
            Ok(input) => self.output.send(input).await.map_err(|_| ()),
            Err(err) => {
                meters.malformed.increment(1);
                tracing::warn!(chain = %self.chain, provider = %self.provider.id, error = %err, "dropping a malformed notification");
                Ok(())
            }
        }
    }

    /// Best effort: a provider bills for open subscriptions, so close ours on the way out.
    async fn unsubscribe(&self, client: &WsClient, routes: &[(String, Route)]) {
        let started = Instant::now();
        for (id, _) in routes {
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
