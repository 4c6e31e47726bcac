//! `eth_subscribe` on the gateway's WebSocket, served from Livechain's own change feed: which
//! subscriptions there are, whether the chain's configured subscriptions cover them (so the
//! feed holds every event they ask for), and each feed item in the shape a node sends it.
//!
//! `newHeads` follows the chain's canonical blocks in feed order: after a reorg the new
//! branch's heads follow (heights may repeat, as nodes send them). `logs` sends each matching
//! log once when stored and again with `removed: true` when a reorg retracts it (and once more,
//! not removed, if a later reorg restores it), in feed order across provider failover.

use std::collections::{HashMap, HashSet, VecDeque};

use alloy_primitives::{Address, B256};
use alloy_rpc_types_eth::Filter;
use serde_json::value::RawValue;

use crate::config::Subscription;
use crate::domain::{ChainName, EventFilter, EventKind, StoredEvent};
use crate::publish::FeedItem;

/// What a client subscribed to.
#[derive(Debug, Clone)]
pub enum Kind {
    NewHeads,
    Logs(Box<Filter>),
}

/// Reads `eth_subscribe`'s params; the error is the message of a `-32602`.
pub fn parse(params: Option<&RawValue>) -> Result<Kind, String> {
    let list: Vec<&RawValue> = match params {
        Some(p) => {
            serde_json::from_str(p.get()).map_err(|_| "params must be an array".to_owned())?
        }
        None => Vec::new(),
    };
    let name: String = list
        .first()
        .and_then(|n| serde_json::from_str(n.get()).ok())
        .ok_or("the first param must name the subscription (newHeads or logs)")?;
    match (name.as_str(), list.get(1)) {
        ("newHeads", None) => Ok(Kind::NewHeads),
        ("newHeads", Some(_)) => Err("newHeads takes no filter".into()),
        ("logs", filter) => {
            let filter: Filter = match filter {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|e| format!("invalid logs filter: {e}"))?,
                None => Filter::new(),
            };
            if filter.get_block_hash().is_some() {
                return Err("a logs subscription takes no blockHash".into());
            }
            Ok(Kind::Logs(Box::new(filter)))
        }
        (other, _) => Err(format!(
            "no such subscription {other:?}: the gateway serves newHeads and logs from its own feed"
        )),
    }
}

/// Whether the chain's configured subscriptions store every log `filter` asks for.
pub fn covered(subscriptions: &[Subscription], filter: &Filter) -> bool {
    subscriptions.iter().any(|s| match s {
        Subscription::Logs(sub) => {
            let addresses_in = sub.address.is_empty()
                || (!filter.address.is_empty()
                    && filter.address.iter().all(|a| sub.address.contains(a)));
            let topics_in = sub
                .topics
                .iter()
                .enumerate()
                .all(|(i, wanted)| match wanted {
                    None => true,
                    Some(list) => {
                        let asked = &filter.topics[i];
                        !asked.is_empty() && asked.iter().all(|t| list.contains(t))
                    }
                });
            addresses_in && topics_in
        }
        Subscription::Blocks => false,
    })
}

/// What the feed is asked for: the chain's blocks, or its logs of the filter's single address
/// (the rest of the filter is checked per item by [`wants`]).
pub fn feed_filter(chain: &ChainName, kind: &Kind) -> EventFilter {
    let mut filter = EventFilter {
        chain: Some(chain.to_string()),
        ..EventFilter::default()
    };
    match kind {
        Kind::NewHeads => filter.kind = Some(EventKind::Block),
        Kind::Logs(logs) => {
            filter.kind = Some(EventKind::Log);
            filter.addresses = logs.address.iter().copied().collect::<Vec<Address>>();
        }
    }
    filter
}

/// A `logs` notification's `result` for `item`, when the subscription sends one for it (a log
/// of block `from` or later, matching `filter`).
pub fn log_result(
    filter: &Filter,
    item: &FeedItem,
    from: u64,
) -> Option<Result<String, serde_json::Error>> {
    let (event, removed) = match item {
        FeedItem::Added(event) | FeedItem::Restored { event, .. } => (event, false),
        FeedItem::Removed { event, .. } => (event, true),
        FeedItem::Finality(_) => return None,
    };
    let log = event.event.log.as_ref()?;
    if event.event.block.number < from {
        return None;
    }
    let wanted = filter.matches_address(log.address) && filter.matches_topics(&log.topics);
    wanted.then(|| log_json(event, removed))
}

/// The block a `newHeads` subscription announces for `item`: a block joining the chain (a
/// retracted one is followed by its replacement, which is announced).
pub fn new_head(item: &FeedItem) -> Option<&StoredEvent> {
    match item {
        FeedItem::Added(event) | FeedItem::Restored { event, .. } if event.event.log.is_none() => {
            Some(event)
        }
        _ => None,
    }
}

/// The header fields Livechain stores, for when no provider can give the whole header.
pub fn stored_head(event: &StoredEvent) -> String {
    let block = &event.event.block;
    format!(
        r#"{{"number":"0x{:x}","hash":"{}","parentHash":"{}","timestamp":"0x{:x}"}}"#,
        block.number, block.hash, block.parent_hash, event.event.block_timestamp
    )
}

/// A block object (`eth_getBlockByHash`) cut to the header fields nodes send in `newHeads`.
pub fn header_of(block: &RawValue) -> Option<String> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(block.get()).ok()?;
    for body in [
        "transactions",
        "uncles",
        "size",
        "totalDifficulty",
        "withdrawals",
    ] {
        fields.remove(body);
    }
    serde_json::to_string(&fields).ok()
}

/// A stored log as nodes send it in `eth_getLogs` and `logs` notifications.
pub fn log_json(event: &StoredEvent, removed: bool) -> Result<String, serde_json::Error> {
    let Some(log) = event.event.log.as_ref() else {
        return Ok("null".into());
    };
    let rpc = alloy_rpc_types_eth::Log {
        inner: alloy_primitives::Log::new_unchecked(
            log.address,
            log.topics.clone(),
            log.data.clone(),
        ),
        block_hash: Some(event.event.block.hash),
        block_number: Some(event.event.block.number),
        block_timestamp: None,
        transaction_hash: Some(log.tx_hash),
        transaction_index: Some(log.tx_index),
        log_index: Some(log.log_index),
        removed,
    };
    serde_json::to_string(&rpc)
}

/// An `eth_subscription` notification.
pub fn notification(id: &str, result: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"{id}","result":{result}}}}}"#
    )
}

/// Heads announced parent first. The feed holds blocks in the order they were stored, which
/// after a reorg or a backfill may put a block before its parent; `newHeads` callers expect
/// each head to follow one they have seen, so a block whose parent has not been announced
/// waits for it (bounded: past [`MAX_WAITING`] waiting blocks, they go out by height).
#[derive(Default)]
pub struct HeadOrder {
    announced: HashSet<B256>,
    /// `announced` in insertion order, to forget the oldest.
    order: VecDeque<B256>,
    /// Blocks waiting for their parent, by parent hash.
    waiting: HashMap<B256, Vec<StoredEvent>>,
    waiting_count: usize,
}

/// Heads remembered as announced (their children may follow): well past any reorg depth.
const ANNOUNCED: usize = 4096;
/// Blocks that may wait for a parent before all waiting go out.
pub const MAX_WAITING: usize = 1024;

impl HeadOrder {
    /// The heads to announce now that `event` arrived, in order.
    pub fn push(&mut self, event: StoredEvent) -> Vec<StoredEvent> {
        let parent = event.event.block.parent_hash;
        if !self.announced.is_empty() && !self.announced.contains(&parent) {
            self.waiting.entry(parent).or_default().push(event);
            self.waiting_count += 1;
            if self.waiting_count > MAX_WAITING {
                return self.flush();
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = vec![event];
        while let Some(head) = next.pop() {
            let hash = head.event.block.hash;
            self.remember(hash);
            out.push(head);
            if let Some(mut children) = self.waiting.remove(&hash) {
                self.waiting_count -= children.len();
                children.sort_by_key(|c| std::cmp::Reverse(c.event.block.number));
                next.extend(children);
            }
        }
        out
    }

    fn remember(&mut self, hash: B256) {
        if self.announced.insert(hash) {
            self.order.push_back(hash);
        }
        while self.order.len() > ANNOUNCED {
            if let Some(old) = self.order.pop_front() {
                self.announced.remove(&old);
            }
        }
    }

    /// Every waiting block, by height (their parents never came).
    fn flush(&mut self) -> Vec<StoredEvent> {
        let mut all: Vec<StoredEvent> = self.waiting.drain().flat_map(|(_, v)| v).collect();
        self.waiting_count = 0;
        all.sort_by_key(|e| e.event.block.number);
        for e in &all {
            self.remember(e.event.block.hash);
        }
        all
    }
}
