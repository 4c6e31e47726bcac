//! The JSON-RPC gateway: `/rpc/{chain}` forwards callers' requests to the chain's providers.
//!
//! A body (one request or a batch) is read without touching params (`request`), checked against
//! the method lists, and sent whole to one provider at a time in the order ingestion's health
//! ranking gives (`route`), renumbered upstream and matched back by id (`upstream`). Each answer
//! is judged (`verdict`): the caller's errors pass through unchanged; a provider that is behind,
//! limited or failing is passed over for the next. Tags (`latest`, `safe`, `finalized`) never
//! move backwards for one caller (`floors`). Writes are sent once (see `route`). Knows no SQL
//! and no HTTP server: `api::rpc` hands it bodies.

mod blocks;
mod cache;
mod floors;
mod latency;
mod methods;
mod reply;
mod request;
mod route;
mod session;
mod subscribe;
mod upstream;
mod verdict;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lru::LruCache;
use serde_json::value::RawValue;
use tokio::sync::{OnceCell, watch};

pub use floors::Caller;
pub use session::{Session, cut_off};

use self::floors::Floors;
use self::reply::Reply;
use self::request::{Body, Call, Entry};
use crate::config::GatewayConfig;
use crate::config::Subscription;
use crate::domain::StoredEvent;
use crate::ingest::filters::ChainFilters;
use crate::ingest::providers::ProviderSet;
use crate::ingest::sync::SyncProgress;
use crate::telemetry::metrics as m;

/// One chain's gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    chain: String,
    chain_id: u64,
    providers: ProviderSet,
    config: GatewayConfig,
    floors: Floors,
    /// Each provider's latency per method, for the ranking.
    latency: latency::MethodLatency,
    /// Recent blocks' headers by hash, for `newHeads` (a hash names one header for good).
    headers: Mutex<LruCache<B256, HeaderCell>>,
    indexing: Indexing,
    /// Answers that cannot change.
    answers: cache::Answers,
}

/// What the gateway knows of its chain's ingestion.
pub struct Indexing {
    /// What the chain indexes: a `logs` subscription these cover is served from the feed as
    /// it is; another one has the chain follow its filter for as long as it is held.
    pub subscriptions: Arc<[Subscription]>,
    pub filters: ChainFilters,
    /// The range sync's progress: the finalized height, below which answers are kept.
    pub progress: watch::Receiver<SyncProgress>,
}

/// Headers kept for `newHeads`: a few minutes of blocks on a fast chain.
const HEADERS: usize = 1024;

/// What to send back: the JSON body (empty when every request was a notification) and the
/// provider that answered, if one did.
#[derive(Debug)]
pub struct Answer {
    pub body: String,
    pub provider: Option<String>,
    /// `hit` when every call was answered without a provider, `partial` when some were.
    pub cache: Option<&'static str>,
}

/// The replies to a body's calls, in their order.
struct Served {
    replies: Vec<Option<Reply>>,
    provider: Option<String>,
    cache: Option<&'static str>,
}

impl Gateway {
    pub fn new(
        chain: &str,
        chain_id: u64,
        providers: ProviderSet,
        config: GatewayConfig,
    ) -> Gateway {
        let indexing = Indexing {
            subscriptions: Arc::from([]),
            filters: ChainFilters::new(chain, Vec::new(), config.max_dynamic_filters),
            progress: watch::channel(SyncProgress::default()).1,
        };
        Gateway::with_indexing(chain, chain_id, providers, config, indexing)
    }

    /// A gateway that knows its chain's ingestion: `logs` subscriptions are served as its
    /// subscriptions and dynamic filters allow, answers kept below its finalized height.
    pub fn with_indexing(
        chain: &str,
        chain_id: u64,
        providers: ProviderSet,
        config: GatewayConfig,
        indexing: Indexing,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                chain: chain.to_owned(),
                chain_id,
                providers,
                answers: cache::Answers::new(config.cache_bytes),
                config,
                indexing,
                floors: Floors::new(),
                latency: latency::MethodLatency::default(),
                headers: Mutex::new(LruCache::new(
                    NonZeroUsize::new(HEADERS).unwrap_or(NonZeroUsize::MIN),
                )),
            }),
        }
    }

    /// Whether `/rpc/{key}` names this chain: its configured name or its chain id in decimal.
    pub fn answers_to(&self, key: &str) -> bool {
        key == self.inner.chain || key.parse::<u64>().is_ok_and(|id| id == self.inner.chain_id)
    }

    pub fn chain(&self) -> &str {
        &self.inner.chain
    }

    /// The chain's configured subscriptions.
    pub fn indexed(&self) -> &[Subscription] {
        &self.inner.indexing.subscriptions
    }

    /// The chain's log filters, where a `logs` subscription the configured ones do not cover
    /// takes a lease.
    pub fn filters(&self) -> &ChainFilters {
        &self.inner.indexing.filters
    }

    /// The chain's finalized height, as the range sync last read it.
    fn finalized(&self) -> Option<u64> {
        self.inner.indexing.progress.borrow().finalized
    }

    /// The best head any provider of the chain has shown.
    pub fn best_head(&self) -> u64 {
        self.inner.providers.health().best_head()
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The answer to a whole body from `caller` over HTTP (where subscriptions do not exist);
    /// writes only when `may_write` (the access rules trust the caller).
    pub async fn handle(&self, body: &[u8], caller: Caller, may_write: bool) -> Answer {
        self.handle_with(body, caller, &mut |call: &Call| {
            if !may_write && let Some(refused) = methods::write_refused(call) {
                return Some(refused);
            }
            matches!(call.method.as_str(), "eth_subscribe" | "eth_unsubscribe").then(|| {
                Reply::error(
                    call.id.clone(),
                    reply::METHOD_NOT_FOUND,
                    "notifications not supported: subscribe over a WebSocket on this path",
                    None,
                )
            })
        })
        .await
    }

    /// [`Gateway::handle`], with `local` answering the calls it knows itself (the WebSocket
    /// session's subscriptions) instead of a provider.
    pub(crate) async fn handle_with(
        &self,
        body: &[u8],
        caller: Caller,
        local: &mut (dyn FnMut(&Call) -> Option<Reply> + Send),
    ) -> Answer {
        let started = Instant::now();
        let (label, answer) = match request::parse(body, self.inner.config.max_batch) {
            Err(reply) => {
                self.count("invalid", "none", "invalid");
                ("invalid", one(reply))
            }
            Ok(Body::Single(Entry::Invalid(reply))) => {
                self.count("invalid", "none", "invalid");
                ("invalid", one(reply))
            }
            Ok(Body::Single(Entry::Call(call))) => {
                let label = methods::label(&call.method);
                let mut served = self.serve(vec![call], caller, local).await;
                let body = served.replies.pop().flatten().map(|r| r.to_json());
                (
                    label,
                    Answer {
                        body: body.unwrap_or_default(),
                        provider: served.provider,
                        cache: served.cache,
                    },
                )
            }
            Ok(Body::Batch(entries)) => ("batch", self.batch(entries, caller, local).await),
        };
        metrics::histogram!(m::GATEWAY_DURATION, "chain" => self.inner.chain.clone(), "method" => label)
            .record(started.elapsed().as_secs_f64());
        answer
    }

    /// A batch: its valid calls served together, every answer in its entry's place.
    async fn batch(
        &self,
        entries: Vec<Entry>,
        caller: Caller,
        local: &mut (dyn FnMut(&Call) -> Option<Reply> + Send),
    ) -> Answer {
        let mut slots: Vec<Option<Reply>> = Vec::with_capacity(entries.len());
        let mut calls = Vec::new();
        let mut places = Vec::new();
        for entry in entries {
            match entry {
                Entry::Invalid(reply) => {
                    self.count("invalid", "none", "invalid");
                    slots.push(Some(reply));
                }
                Entry::Call(call) => {
                    places.push(slots.len());
                    slots.push(None);
                    calls.push(call);
                }
            }
        }
        let served = self.serve(calls, caller, local).await;
        for (place, reply) in places.into_iter().zip(served.replies) {
            slots[place] = reply;
        }
        let replies: Vec<Reply> = slots.into_iter().flatten().collect();
        let body = if replies.is_empty() {
            String::new()
        } else {
            reply::batch_json(&replies)
        };
        Answer {
            body,
            provider: served.provider,
            cache: served.cache,
        }
    }

    /// Serves `calls` (one provider answers them all); one reply per call, `None` for
    /// notifications, and the provider's id.
    async fn serve(
        &self,
        calls: Vec<Call>,
        caller: Caller,
        local: &mut (dyn FnMut(&Call) -> Option<Reply> + Send),
    ) -> Served {
        let mut replies: Vec<Option<Reply>> = (0..calls.len()).map(|_| None).collect();
        let mut forwarded = Vec::new();
        let mut kept = 0;
        for (i, call) in calls.iter().enumerate() {
            if let Some(reply) = local(call) {
                let outcome = if reply.is_error() { "refused" } else { "ok" };
                self.count(methods::label(&call.method), "none", outcome);
                replies[i] = Some(reply);
                continue;
            }
            match methods::refusal(&self.inner.config, &call.method) {
                Some(why) => {
                    self.count(methods::label(&call.method), "none", "refused");
                    replies[i] = Some(Reply::error(
                        call.id.clone(),
                        reply::METHOD_NOT_FOUND,
                        &why,
                        None,
                    ));
                }
                None => match self.without_provider(call, caller) {
                    Some((result, source)) => {
                        self.count(methods::label(&call.method), source, "ok");
                        replies[i] = Some(Reply::result(call.id.clone(), result));
                        kept += 1;
                    }
                    None => forwarded.push(i),
                },
            }
        }
        let cache = match (kept, forwarded.is_empty()) {
            (0, _) => None,
            (_, true) => Some("hit"),
            (_, false) => Some("partial"),
        };
        if forwarded.is_empty() {
            let replies = drop_notifications(&calls, replies);
            return Served {
                replies,
                provider: None,
                cache,
            };
        }
        let group: Vec<&Call> = forwarded.iter().map(|&i| &calls[i]).collect();
        let served = route::serve(self, &group, caller).await;
        for (&i, reply) in forwarded.iter().zip(served.replies) {
            self.keep(&calls[i], &reply);
            replies[i] = Some(reply);
        }
        Served {
            replies: drop_notifications(&calls, replies),
            provider: served.provider,
            cache,
        }
    }

    /// The answer to `call` no provider need be asked for, and where it came from: a kept
    /// final answer (`cache`), or for `eth_blockNumber` the head the healthy providers'
    /// streams delivered last (`stream`), never below what the caller was told before.
    fn without_provider(
        &self,
        call: &Call,
        caller: Caller,
    ) -> Option<(Box<RawValue>, &'static str)> {
        let no_params = call
            .params
            .as_deref()
            .is_none_or(|p| p.get().trim_start().starts_with("[]"));
        if call.method == "eth_blockNumber" && no_params && self.inner.config.head_from_streams {
            let head = self.inner.providers.health().streamed_head()?;
            let floor = self.inner.floors.get(caller)[blocks::Tag::Latest.slot()];
            let head = head.max(floor);
            self.inner.floors.raise(caller, blocks::Tag::Latest, head);
            return quantity_json(head).map(|q| (q, "stream"));
        }
        self.inner.answers.get(call).map(|a| (a, "cache"))
    }

    /// Keeps a provider's answer to `call` if it can never change.
    fn keep(&self, call: &Call, reply: &Reply) {
        let Some(result) = reply.result_raw() else {
            return;
        };
        let finalized = self.finalized();
        let keep = match cache::finality(call, finalized) {
            Some(cache::Final::Always) => true,
            Some(cache::Final::IfItsBlockIs) => cache::answer_final(result, finalized),
            None => false,
        };
        if keep {
            self.inner.answers.put(call, result);
            metrics::gauge!(m::GATEWAY_CACHE_BYTES, "chain" => self.inner.chain.clone())
                .set(self.inner.answers.bytes() as f64);
        }
    }

    /// Counts one call by method label, provider and outcome.
    fn count(&self, method: &'static str, provider: &str, outcome: &'static str) {
        metrics::counter!(m::GATEWAY_REQUESTS, "chain" => self.inner.chain.clone(), "method" => method, "provider" => provider.to_owned(), "outcome" => outcome)
            .increment(1);
    }

    /// How long one provider may take on `calls`: the longest of their methods' timeouts.
    fn timeout_of(&self, calls: &[&Call]) -> Duration {
        let config = &self.inner.config;
        calls
            .iter()
            .map(|c| {
                config
                    .method_timeouts
                    .get(&c.method)
                    .copied()
                    .unwrap_or(config.timeout)
            })
            .max()
            .unwrap_or(config.timeout)
    }
}

fn one(reply: Reply) -> Answer {
    Answer {
        body: reply.to_json(),
        provider: None,
        cache: None,
    }
}

/// Notifications get no answer (JSON-RPC 2.0 §4.1).
fn drop_notifications(calls: &[Call], replies: Vec<Option<Reply>>) -> Vec<Option<Reply>> {
    calls
        .iter()
        .zip(replies)
        .map(|(call, reply)| reply.filter(|_| call.id.is_some()))
        .collect()
}

/// A JSON-RPC error body for what is refused before any body is read (unknown chain, body too
/// large), in the shape a node answers.
pub fn refusal_body(code: i64, message: &str) -> String {
    Reply::error(None, code, message, None).to_json()
}

pub use reply::{INVALID_REQUEST, LIMIT_EXCEEDED, METHOD_NOT_FOUND};

/// For the fuzz target (`crate::fuzzing`): reads `body` as the gateway reads a caller's, then
/// renders what it would answer to the invalid entries and which blocks the calls need.
#[doc(hidden)]
pub fn fuzz_body(body: &[u8]) {
    let entries = match request::parse(body, 1000) {
        Ok(request::Body::Single(entry)) => vec![entry],
        Ok(request::Body::Batch(entries)) => entries,
        Err(reply) => {
            let _ = reply.to_json();
            return;
        }
    };
    for entry in entries {
        match entry {
            request::Entry::Invalid(reply) => {
                let _ = reply.to_json();
            }
            request::Entry::Call(call) => {
                let _ = methods::is_write(&call.method);
                let _ = blocks::need(&call);
                let _ = cache::finality(&call, Some(100));
            }
        }
    }
}

impl Gateway {
    /// The `newHeads` notification's `result` for a stored block: its header as the providers
    /// give it (asked once per block, then cached), or the fields Livechain stores when none
    /// can give it.
    async fn head_json(&self, event: &StoredEvent) -> String {
        let hash = event.event.block.hash;
        // One fetch per block whatever the number of sessions: the first to ask creates the
        // cell, the others wait on it.
        let cell = self
            .headers()
            .get_or_insert(hash, || Arc::new(OnceCell::new()))
            .clone();
        let header = cell.get_or_init(|| self.fetch_header(hash)).await.clone();
        match header {
            Some(header) => header.to_string(),
            None => {
                // Not kept: a later block's subscriber may find a provider that has it.
                self.headers().pop(&hash);
                subscribe::stored_head(event)
            }
        }
    }

    /// The block's header by hash from the providers (`None` when none gives it).
    async fn fetch_header(&self, hash: B256) -> Option<Arc<str>> {
        let call = Call {
            id: Some(RawValue::NULL.to_owned()),
            method: "eth_getBlockByHash".to_owned(),
            params: RawValue::from_string(format!("[\"{hash}\",false]")).ok(),
        };
        let served = route::serve(self, &[&call], Caller::Session(0)).await;
        served
            .replies
            .first()
            .and_then(Reply::result_raw)
            .and_then(subscribe::header_of)
            .map(Arc::from)
    }

    fn headers(&self) -> std::sync::MutexGuard<'_, LruCache<B256, HeaderCell>> {
        self.inner
            .headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A block's header, fetched once: `None` inside when no provider gave it.
type HeaderCell = Arc<OnceCell<Option<Arc<str>>>>;

/// The raw JSON of a height, as nodes write quantities.
fn quantity_json(n: u64) -> Option<Box<RawValue>> {
    RawValue::from_string(format!("\"0x{n:x}\"")).ok()
}
