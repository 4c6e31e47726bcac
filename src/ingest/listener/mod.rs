//! One listener per chain × provider: a WebSocket with `newHeads` and `logs` subscriptions,
//! forwarding every notification to the chain's aggregator, reconnecting with backoff.
//!
//! Every (re)connect goes through the provider's breaker: an open breaker holds the listener
//! back until it half-opens, and the connection is then a probe. A connection counts as a
//! success once it delivers its first notification (a provider that accepts, subscribes and
//! stays silent is not healthy); a socket that drops or stalls counts as a failure. The stall
//! watchdog recycles a connection that is open but silent for `health.stall_timeout` while the
//! chain moves on, or whose heads lag more than `health.max_lag_blocks` behind where the best
//! head was at its previous look.
//!
//! Until its provider has answered once since start, failed connections do not open the
//! breaker: the breaker holds the listener back for a short start-up delay (200 ms doubling to
//! 2 s, jittered) and nothing longer, so a provider still coming up is connected within
//! seconds of being up.
//!
//! The listener reads only what routing needs (a head's fields, a log's identity); the full
//! parse of a log happens in the aggregator, and only for the first copy of it.

mod routes;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::filters::ChainFilters;
use super::providers::ChainProvider;
use super::{ChainInput, Live, LiveItem};
use crate::backoff::{Delays, RETRY};
use crate::breaker::{Outcome, Permit};
use crate::domain::ChainName;
use crate::health::ChainHealth;
use crate::provider::{Burst, Notification, ProviderError, WsClient, WsOptions, decode};
use crate::telemetry::metrics as m;
use routes::{Route, Routes};

/// Bursts (each at most [`crate::provider::ws::MAX_BURST`] frames) one connection may have
/// read ahead of the listener; the socket's own buffers hold more. Past this the socket is not
/// read, and TCP slows the provider down.
const NOTIFICATION_QUEUE: usize = 8;
/// Bursts kept while the subscriptions are being made (see [`Listener::subscribe`]).
pub(super) const EARLY_BURSTS: usize = 64;
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Longest wait for an open breaker before asking it again (it half-opens on its own clock).
const MAX_GATE_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Listener {
    pub chain: ChainName,
    pub provider: ChainProvider,
    /// The chain's log filters, followed while connected.
    pub filters: ChainFilters,
    pub output: mpsc::Sender<ChainInput>,
    pub health: ChainHealth,
}

/// Why a connection that came up ended.
#[derive(Debug)]
enum Ended {
    /// The service is stopping (or the aggregator is gone).
    Shutdown,
    /// The provider closed the socket.
    Closed,
    /// The watchdog recycled it.
    Recycled(&'static str),
}

/// The connection's breaker bookkeeping, updated notification by notification.
struct Tally {
    /// The connection's permit, until its first well-formed notification.
    permit: Option<Permit>,
    /// A fault since the last success: the next good notification records one, so that only
    /// consecutive bad frames add up to an open breaker.
    owe_success: bool,
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
            // An HTTP-only provider: the range sync polls it. Returning would be a death the
            // supervisor restarts, over and over.
            shutdown.cancelled().await;
            return;
        };
        let index = usize::from(self.provider.index);
        // A provider that takes longer than the stall timeout to answer a subscribe is stalled.
        let timeout = self
            .health
            .config()
            .stall_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        let options = WsOptions {
            connect_timeout: timeout,
            request_timeout: timeout,
            rules: self.provider.http.error_rules().clone(),
            ..WsOptions::default()
        };
        let mut delays = RETRY.delays();
        let mut connected_before = false;
        while !shutdown.is_cancelled() {
            let permit = match self.health.acquire(index) {
                Ok(permit) => permit,
                Err(retry_in) => {
                    tracing::debug!(chain = %self.chain, provider = %self.provider.id, retry_in_ms = retry_in.as_millis() as u64, "breaker holds the listener back");
                    if wait(&shutdown, retry_in.min(MAX_GATE_WAIT)).await {
                        break;
                    }
                    continue;
                }
            };
            let (notes_tx, notes_rx) = mpsc::channel(NOTIFICATION_QUEUE);
            let started = Instant::now();
            let connection =
                WsClient::connect(&url, options.clone(), notes_tx, shutdown.child_token()).await;
            let outcome = match connection {
                Ok(client) => {
                    if connected_before {
                        metrics::counter!(m::WS_RECONNECTS, "chain" => self.chain.to_string(), "provider" => self.provider.id.clone()).increment(1);
                    }
                    connected_before = true;
                    self.health.connection(index, true);
                    let served = self.serve(client, notes_rx, &shutdown, permit).await;
                    self.health.connection(index, false);
                    // A connection that held for a while was a success: the next failure starts
                    // the backoff curve afresh. One that dropped at once keeps climbing it.
                    if served.is_ok() && started.elapsed() >= STABLE_CONNECTION {
                        delays = RETRY.delays();
                    }
                    served
                }
                Err(err) => {
                    self.provider.http.errors().record(&err);
                    self.health
                        .record(index, permit, Outcome::of_error(&err), None);
                    Err(err)
                }
            };
            if shutdown.is_cancelled() || matches!(outcome, Ok(Ended::Shutdown)) {
                break;
            }
            let delay = self.reconnect_delay(&outcome, &mut delays);
            if wait(&shutdown, delay).await {
                break;
            }
        }
    }

    /// How long to wait before connecting again after `outcome`, said in the log.
    ///
    /// A failure of a provider that has not answered yet started its breaker's short start-up
    /// delay, which the next `acquire` waits out: a delay of the listener's own on top would
    /// only keep it from connecting once the provider is up.
    fn reconnect_delay(
        &self,
        outcome: &Result<Ended, ProviderError>,
        delays: &mut Delays,
    ) -> Duration {
        let failed = match outcome {
            Err(err) => Outcome::of_error(err) == Outcome::Failure,
            Ok(Ended::Closed | Ended::Recycled(_)) => true,
            Ok(Ended::Shutdown) => false,
        };
        let delay = if failed && !self.health.answered(usize::from(self.provider.index)) {
            Duration::ZERO
        } else {
            delays.next_delay()
        };
        let (chain, provider) = (&self.chain, &self.provider.id);
        match outcome {
            Ok(Ended::Shutdown) => {}
            Ok(Ended::Closed) => {
                tracing::warn!(chain = %chain, provider = %provider, "provider socket closed; reconnecting")
            }
            Ok(Ended::Recycled(why)) => {
                tracing::warn!(chain = %chain, provider = %provider, why, "recycling the provider connection")
            }
            Err(err) if delay.is_zero() => {
                tracing::warn!(chain = %chain, provider = %provider, error = %err, "provider not answering yet; retrying after a short delay")
            }
            Err(err) => {
                tracing::warn!(chain = %chain, provider = %provider, error = %err, delay_ms = delay.as_millis() as u64, "provider connection failed; retrying")
            }
        }
        delay
    }

    /// Subscribes, then forwards notifications until the socket or the service ends, or the
    /// watchdog recycles the connection. `permit` is recorded as a success at the first
    /// notification, as a failure if the connection ends before one.
    async fn serve(
        &self,
        client: WsClient,
        mut notes: mpsc::Receiver<Burst>,
        shutdown: &CancellationToken,
        permit: Permit,
    ) -> Result<Ended, ProviderError> {
        let index = usize::from(self.provider.index);
        let mut tally = Tally {
            permit: Some(permit),
            owe_success: false,
        };
        let mut filters = self.filters.watch();
        let set = filters.borrow_and_update().clone();
        let (subscribed, early) = self
            .draining(&mut notes, self.subscribe_all(&client, &set))
            .await;
        let mut routes = match subscribed {
            Ok(routes) => routes,
            Err(err) => {
                self.provider.http.errors().record(&err);
                if let Some(permit) = tally.permit.take() {
                    self.health
                        .record(index, permit, Outcome::of_error(&err), None);
                }
                return Err(err);
            }
        };
        tracing::info!(chain = %self.chain, provider = %self.provider.id, subscriptions = routes.len(), "subscribed");
        let meters = Meters::new(&self.chain, &self.provider.id);
        let stall_timeout = self.health.config().stall_timeout;
        let every = (stall_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(1));
        let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The best head at the watchdog's previous look: where this stream should be by now.
        let mut best_before = self.health.best_head();
        for burst in early {
            if self
                .forward(&meters, &routes, burst, &mut tally)
                .await
                .is_err()
            {
                return Ok(Ended::Shutdown);
            }
        }
        let ended = 'serve: loop {
            // Biased: shutdown first so unsubscribing is not starved by a busy socket; the
            // watchdog before notifications is harmless (it only reads the health record).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.unsubscribe(&client, &routes).await;
                    break Ended::Shutdown;
                }
                _ = watchdog.tick() => {
                    if self.health.stalled(index) {
                        break Ended::Recycled("stream stalled: open but silent while the chain moved on");
                    }
                    if self.health.stream_lagging(index, best_before) {
                        self.unsubscribe(&client, &routes).await;
                        break Ended::Recycled("stream lagging behind the best head");
                    }
                    best_before = self.health.best_head();
                }
                changed = filters.changed() => {
                    if changed.is_err() {
                        break Ended::Shutdown; // the chain's filter set is gone with the service
                    }
                    let set = filters.borrow_and_update().clone();
                    let ((), early) = self
                        .draining(&mut notes, self.follow(&client, &mut routes, &set))
                        .await;
                    for burst in early {
                        if self.forward(&meters, &routes, burst, &mut tally).await.is_err() {
                            break 'serve Ended::Shutdown;
                        }
                    }
                }
                burst = notes.recv() => match burst {
                    Some(burst) => {
                        if self.forward(&meters, &routes, burst, &mut tally).await.is_err() {
                            break Ended::Shutdown; // the aggregator is gone
                        }
                    }
                    None => break Ended::Closed,
                },
                _ = client.closed() => break Ended::Closed,
            }
        };
        if matches!(ended, Ended::Closed) {
            self.provider.http.errors().record(&ProviderError::Closed);
        }
        match (tally.permit.take(), &ended) {
            (Some(permit), Ended::Shutdown) => {
                self.health.record(index, permit, Outcome::Neutral, None)
            }
            (Some(permit), _) => self.health.record(index, permit, Outcome::Failure, None),
            (None, Ended::Shutdown) => {}
            (None, _) => self.health.fault(index),
        }
        Ok(ended)
    }

    /// Reads a burst's notifications and hands them on, a block's worth per input; malformed
    /// ones are counted and dropped. `Err` if the aggregator is gone.
    async fn forward(
        &self,
        meters: &Meters,
        routes: &Routes,
        burst: Burst,
        tally: &mut Tally,
    ) -> Result<(), ()> {
        let provider = self.provider.index;
        let index = usize::from(provider);
        // Carried by the block read last, whatever became of the notification that bore it.
        let burst_end = burst.last().is_some_and(|note| note.burst_end);
        meters.received.increment(burst.len() as u64);
        let mut group: Option<Live> = None;
        let mut logs = false;
        for note in burst {
            let Some(route) = routes.find(&note.subscription) else {
                continue;
            };
            let (block, item) = match self.read(route, note) {
                Ok(item) => item,
                Err(err) => {
                    meters.malformed.increment(1);
                    tracing::warn!(chain = %self.chain, provider = %self.provider.id, error = %err, "dropping a malformed notification");
                    self.tally(tally, false);
                    continue;
                }
            };
            self.tally(tally, true);
            logs |= matches!(item, LiveItem::Log { .. });
            match &mut group {
                Some(live) if live.block == block => live.items.push(item),
                _ => {
                    let next = Live {
                        provider,
                        block,
                        items: vec![item],
                        burst_end: false,
                    };
                    if let Some(done) = group.replace(next) {
                        self.output
                            .send(ChainInput::Live(done))
                            .await
                            .map_err(|_| ())?;
                    }
                }
            }
        }
        if logs {
            self.health.observe_message(index);
        }
        match group {
            Some(last) => {
                let last = Live { burst_end, ..last };
                self.output
                    .send(ChainInput::Live(last))
                    .await
                    .map_err(|_| ())
            }
            None => Ok(()),
        }
    }

    /// Reads a notification as far as routing needs: its block and the item to hand on. A head
    /// also updates the provider's head in its health record.
    fn read(&self, route: &Route, note: Notification) -> Result<(u64, LiveItem), ProviderError> {
        let at = note.received_at;
        match route {
            Route::Heads => decode::head(&note.result).map(|head| {
                let index = usize::from(self.provider.index);
                self.health.observe_head(index, head.block.number, true);
                let block = head.block.number;
                let head = Box::new(head);
                (block, LiveItem::Head { head, at })
            }),
            Route::Logs(_) => decode::log_key(&note.result).map(|key| {
                let raw = note.result;
                (key.block_number, LiveItem::Log { key, raw, at })
            }),
        }
    }

    /// Records a well-formed notification as a success of the provider (the connection's
    /// permit at the first one; then only after a fault, so that only consecutive bad frames
    /// add up to an open breaker), a malformed one as a fault.
    fn tally(&self, tally: &mut Tally, well_formed: bool) {
        let index = usize::from(self.provider.index);
        if !well_formed {
            self.health.fault(index);
            tally.owe_success = true;
            return;
        }
        if let Some(permit) = tally.permit.take() {
            self.health.record(index, permit, Outcome::Success, None);
        } else if tally.owe_success
            && let Ok(permit) = self.health.acquire(index)
        {
            self.health.record(index, permit, Outcome::Success, None);
        }
        tally.owe_success = false;
    }
}

/// Sleeps `delay` unless shut down first; true when shut down.
async fn wait(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
