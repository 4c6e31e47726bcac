//! One WebSocket caller of the gateway: its calls proxied as over HTTP, its `eth_subscribe`s
//! served from the change feed ([`super::subscribe`]). Knows no socket: the transport hands it
//! each text frame and drains the bounded queue of frames it produces; a caller whose queue
//! fills (it does not read) is cut off through `closing`, never slowing anyone else.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reply::{self, Reply};
use super::request::Call;
use super::subscribe::{self, HeadOrder, Kind};
use super::{Caller, Gateway};
use crate::domain::EventFilter;
use crate::ingest::filters::{self, Lease};
use crate::publish::{Hub, Subscription};
use crate::telemetry::metrics as m;

/// Subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 128;

/// Numbers WebSocket callers (their floors are per connection).
static SESSIONS: AtomicU64 = AtomicU64::new(1);

pub struct Session {
    gateway: Gateway,
    hub: Hub,
    caller: Caller,
    out: mpsc::Sender<String>,
    closing: CancellationToken,
    /// Each subscription's task, and the dynamic filter it holds (released with it).
    feeds: HashMap<String, (JoinHandle<()>, Option<Lease>)>,
    /// The access rules trust the caller with writes.
    may_write: bool,
    /// `gateway.ws_calls_per_second`, for this connection.
    rate: DefaultDirectRateLimiter,
}

impl Session {
    /// `out` carries every frame for the caller (answers and notifications); `closing` fires
    /// when the caller must be cut off.
    pub fn new(
        gateway: Gateway,
        hub: Hub,
        out: mpsc::Sender<String>,
        closing: CancellationToken,
        may_write: bool,
    ) -> Session {
        let per_second =
            NonZeroU32::new(gateway.config().ws_calls_per_second).unwrap_or(NonZeroU32::MIN);
        Session {
            rate: RateLimiter::direct(Quota::per_second(per_second)),
            gateway,
            hub,
            caller: Caller::Session(SESSIONS.fetch_add(1, Ordering::Relaxed)),
            out,
            closing,
            feeds: HashMap::new(),
            may_write,
        }
    }

    /// The answer to one text frame (`None`: nothing to send, all notifications).
    pub async fn handle(&mut self, text: &str) -> Option<String> {
        let gateway = self.gateway.clone();
        let caller = self.caller;
        let answer = gateway
            .handle_with(text.as_bytes(), caller, &mut |call| self.local(call))
            .await;
        (!answer.body.is_empty()).then_some(answer.body)
    }

    /// `eth_subscribe` and `eth_unsubscribe`, answered here; everything else goes upstream.
    fn local(&mut self, call: &Call) -> Option<Reply> {
        if self.rate.check().is_err() {
            let chain = self.gateway.chain().to_owned();
            metrics::counter!(m::GATEWAY_RATE_LIMITED, "chain" => chain).increment(1);
            let limit = self.gateway.config().ws_calls_per_second;
            let message = format!(
                "rate limit: more than {limit} calls a second on this connection \
                 (gateway.ws_calls_per_second); slow down"
            );
            return Some(Reply::error(
                call.id.clone(),
                reply::LIMIT_EXCEEDED,
                &message,
                None,
            ));
        }
        if !self.may_write
            && let Some(refused) = super::methods::write_refused(call)
        {
            return Some(refused);
        }
        let id = call.id.clone();
        match call.method.as_str() {
            "eth_subscribe" => Some(match self.subscribe(call.params.as_deref()) {
                Ok(sub) => Reply::result(id, sub),
                Err((code, message)) => Reply::error(id, code, &message, None),
            }),
            "eth_unsubscribe" => {
                let name: Option<String> = call
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Vec<String>>(p.get()).ok())
                    .and_then(|list| list.into_iter().next());
                let found = name.and_then(|n| self.feeds.remove(&n));
                let was = found.is_some();
                if let Some((feed, _lease)) = found {
                    feed.abort();
                }
                Some(Reply::result(id, json_bool(was)))
            }
            _ => None,
        }
    }

    fn subscribe(&mut self, params: Option<&RawValue>) -> Result<Box<RawValue>, (i64, String)> {
        let kind = subscribe::parse(params).map_err(|why| (reply::INVALID_PARAMS, why))?;
        if self.feeds.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                reply::LIMIT_EXCEEDED,
                format!("too many subscriptions on this connection (at most {MAX_SUBSCRIPTIONS})"),
            ));
        }
        let chain = self.gateway.chain().to_owned();
        let name = format!("0x{:032x}", rand::random::<u128>());
        let filter = subscribe::feed_filter(&chain.as_str().into(), &kind);
        // The hub first: whatever is committed from here on reaches this subscription.
        let subscription = self.hub.subscribe(filter.clone());
        let (lease, from) = match &kind {
            Kind::Logs(logs) if !subscribe::covered(self.gateway.indexed(), logs) => {
                let (lease, from) = self.dynamic(logs)?;
                (Some(lease), from)
            }
            _ => (None, 0),
        };
        let feed = Feed {
            gateway: self.gateway.clone(),
            kind,
            filter,
            name: name.clone(),
            out: self.out.clone(),
            closing: self.closing.clone(),
            from,
        };
        let task = tokio::spawn(feed.run(subscription));
        self.feeds.insert(name.clone(), (task, lease));
        RawValue::from_string(format!("\"{name}\""))
            .map_err(|e| (reply::INTERNAL_ERROR, e.to_string()))
    }

    /// Has the chain follow a `logs` filter its configured subscriptions do not cover, for as
    /// long as the lease is held; and the first block the subscription sends logs of: the first
    /// the range sync asks for with the filter, and past every block seen so far (an earlier
    /// one may have had logs stored before the filter was followed, so only some of its logs
    /// would be sent).
    fn dynamic(&self, logs: &alloy_rpc_types_eth::Filter) -> Result<(Lease, u64), (i64, String)> {
        let chain = self.gateway.chain();
        let lease = self
            .gateway
            .filters()
            .lease(filters::from_request(logs))
            .map_err(|full| {
                (
                    reply::LIMIT_EXCEEDED,
                    format!(
                        "chain {chain}: {full} (gateway.max_dynamic_filters); subscribe to a \
                         filter another caller uses, or index it (chains.{chain}.subscriptions)"
                    ),
                )
            })?;
        let from = lease.start.max(self.gateway.best_head() + 1);
        tracing::debug!(chain, from, filter = ?lease.filter(), "a gateway subscription follows a dynamic log filter");
        Ok((lease, from))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (feed, _) in self.feeds.values() {
            feed.abort();
        }
    }
}

fn json_bool(b: bool) -> Box<RawValue> {
    let text = if b { "true" } else { "false" };
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// One subscription: the feed's matching items, as notifications, in feed order.
struct Feed {
    gateway: Gateway,
    kind: Kind,
    filter: EventFilter,
    name: String,
    out: mpsc::Sender<String>,
    closing: CancellationToken,
    /// The first block whose logs are sent.
    from: u64,
}

impl Feed {
    /// Sends until the caller goes. The caller is cut off when it does not keep up, and when
    /// the hub drops this subscriber (it lagged): from then on it could not be given every
    /// event in order.
    async fn run(self, mut subscription: Subscription) {
        let mut heads = HeadOrder::default();
        while let Some(batch) = subscription.recv().await {
            for published in batch.iter() {
                let item = &published.item;
                if !item.matches(&self.filter) {
                    continue;
                }
                let results = match &self.kind {
                    Kind::NewHeads => {
                        let Some(event) = subscribe::new_head(item) else {
                            continue;
                        };
                        let mut results = Vec::new();
                        for head in heads.push(event.clone()) {
                            results.push(self.gateway.head_json(&head).await);
                        }
                        results
                    }
                    Kind::Logs(logs) => match subscribe::log_result(logs, item, self.from) {
                        Some(Ok(json)) => vec![json],
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "a log could not be rendered for a subscription");
                            continue;
                        }
                        None => continue,
                    },
                };
                if !self.send(results) {
                    return;
                }
            }
        }
        if subscription.lagged() {
            cut_off(self.gateway.chain(), "lagged", &self.closing);
        } else {
            self.closing.cancel();
        }
    }

    /// Queues notifications for the caller; false when the subscription is over (the caller
    /// is cut off or gone).
    fn send(&self, results: Vec<String>) -> bool {
        for result in results {
            match self
                .out
                .try_send(subscribe::notification(&self.name, &result))
            {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    cut_off(self.gateway.chain(), "queue_full", &self.closing);
                    return false;
                }
                Err(TrySendError::Closed(_)) => return false, // the session ended
            }
        }
        true
    }
}

/// Cuts a WebSocket caller off, counted by `why` (`queue_full`, `lagged`, `write_timeout`).
pub fn cut_off(chain: &str, why: &'static str, closing: &CancellationToken) {
    if !closing.is_cancelled() {
        tracing::info!(chain, reason = why, "a gateway WebSocket caller is cut off");
        metrics::counter!(m::GATEWAY_WS_CUT_OFF, "chain" => chain.to_owned(), "reason" => why)
            .increment(1);
    }
    closing.cancel();
}
