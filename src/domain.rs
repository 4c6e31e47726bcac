//! Domain types shared by every layer: events, their identity, cursors and finality.
//!
//! These types know nothing of SQL, HTTP or JSON-RPC framing; `store`, `api` and `provider`
//! translate to and from them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes};

/// A chain's name as configured (`chains.<name>` in the YAML), cheap to clone.
pub type ChainName = Arc<str>;

/// Position in the one per-database change feed (ARCHITECTURE.md, "One ordered change feed").
/// Strictly increasing, not dense.
pub type Cursor = i64;

/// A provider's number within its chain, in configuration order.
pub type ProviderIndex = u8;

/// Providers a chain may have: who delivered an event is a mask of one bit per provider.
pub const MAX_PROVIDERS: usize = 64;

/// The bit of the chain's `index`-th provider in a providers mask.
pub fn provider_bit(index: ProviderIndex) -> u64 {
    1u64 << (index % 64)
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Block,
    Log,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Block => "block",
            EventKind::Log => "log",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(EventKind::Block),
            "log" => Ok(EventKind::Log),
            _ => Err(UnknownVariant {
                expected: "block | log",
                got: s.to_owned(),
            }),
        }
    }
}

/// How settled an event is: from the node's `safe`/`finalized` tags, else from `confirmations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finality {
    Latest,
    Safe,
    Finalized,
}

impl Finality {
    pub fn as_str(self) -> &'static str {
        match self {
            Finality::Latest => "latest",
            Finality::Safe => "safe",
            Finality::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Finality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Finality {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Finality::Latest),
            "safe" => Ok(Finality::Safe),
            "finalized" => Ok(Finality::Finalized),
            _ => Err(UnknownVariant {
                expected: "latest | safe | finalized",
                got: s.to_owned(),
            }),
        }
    }
}

/// A string that names no variant of an enum above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of {expected}, got {got:?}")]
pub struct UnknownVariant {
    pub expected: &'static str,
    pub got: String,
}

/// A block's place in the chain: enough to check continuity (number and parent hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
}

/// The fields only a log has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFields {
    pub tx_hash: B256,
    pub tx_index: u64,
    pub log_index: u64,
    pub address: Address,
    /// Zero to four topics, `topics[0]` being the event signature for non-anonymous events.
    pub topics: Vec<B256>,
    pub data: Bytes,
}

/// One block or log as delivered by a provider: the content, nothing about storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub chain: ChainName,
    pub block: BlockRef,
    pub block_timestamp: u64,
    /// `None` for a block, `Some` for a log.
    pub log: Option<LogFields>,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        if self.log.is_some() {
            EventKind::Log
        } else {
            EventKind::Block
        }
    }

    /// The content identity (ARCHITECTURE.md, "Exactly once in storage"): unique per chain.
    pub fn key(&self) -> EventKey {
        EventKey {
            block_hash: self.block.hash,
            log_index: self.log.as_ref().map(|l| l.log_index),
        }
    }
}

/// Content identity within a chain: a block by its hash, a log by its block's hash and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub block_hash: B256,
    pub log_index: Option<u64>,
}

/// An event as stored: its content plus what the store knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The cursor of the event's addition to the change feed.
    pub cursor: Cursor,
    pub event: Event,
    pub removed: bool,
    pub finality: Finality,
    pub first_provider: String,
    pub providers_seen: u32,
    /// Milliseconds since the Unix epoch when the first copy arrived.
    pub received_at_ms: i64,
}

/// What a reader wants: the filters of `GET /v1/events`, `/v1/stream`'s subscription, its
/// replay and the store's query. Every given filter must hold; empty lists and `None`s match
/// anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub chain: Option<String>,
    pub kind: Option<EventKind>,
    /// Any of these addresses (empty: any address).
    pub addresses: Vec<Address>,
    /// `topics[i]` must equal topic i when given.
    pub topics: [Option<B256>; 4],
    pub from_block: Option<u64>,
    pub to_block: Option<u64>,
    pub tx_hash: Option<B256>,
    pub block_hash: Option<B256>,
    /// At least this settled: `safe` includes finalized events; `latest` is everything. A
    /// stream subscriber asking `safe` or `finalized` receives events only once they reach that
    /// level (see [`EventFilter::settled_only`]).
    pub finality: Option<Finality>,
}

impl EventFilter {
    /// Whether the event's content matches (finality aside: that is the store's or the
    /// stream session's to judge).
    pub fn matches(&self, stored: &StoredEvent) -> bool {
        let event = &stored.event;
        if self.chain.as_deref().is_some_and(|c| c != &*event.chain) {
            return false;
        }
        if self.kind.is_some_and(|k| k != event.kind()) {
            return false;
        }
        let n = event.block.number;
        if self.from_block.is_some_and(|f| n < f) || self.to_block.is_some_and(|t| n > t) {
            return false;
        }
        if self.block_hash.is_some_and(|h| h != event.block.hash) {
            return false;
        }
        let log = event.log.as_ref();
        if !self.addresses.is_empty() && !log.is_some_and(|l| self.addresses.contains(&l.address)) {
            return false;
        }
        if self.tx_hash.is_some() && log.map(|l| l.tx_hash) != self.tx_hash {
            return false;
        }
        for (i, wanted) in self.topics.iter().enumerate() {
            if let Some(wanted) = wanted
                && log.and_then(|l| l.topics.get(i)) != Some(wanted)
            {
                return false;
            }
        }
        true
    }

    /// A reader of settled events only (`safe` or `finalized`): additions and retractions of
    /// unsettled blocks are not for it.
    pub fn settled_only(&self) -> bool {
        matches!(self.finality, Some(Finality::Safe | Finality::Finalized))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn kinds_and_finality_round_trip_through_strings() {
        for k in [EventKind::Block, EventKind::Log] {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        for f in [Finality::Latest, Finality::Safe, Finality::Finalized] {
            assert_eq!(f.as_str().parse::<Finality>(), Ok(f));
        }
        let err = "final".parse::<Finality>().unwrap_err();
        assert!(err.to_string().contains("latest | safe | finalized"));
    }

    #[test]
    fn each_provider_has_its_own_mask_bit() {
        assert_eq!(provider_bit(0), 1);
        assert_eq!(provider_bit(5), 1 << 5);
        assert_eq!(provider_bit(63), 1 << 63);
        let all = (0..MAX_PROVIDERS as u8).fold(0, |mask, i| mask | provider_bit(i));
        assert_eq!(all, u64::MAX);
    }

    #[test]
    fn identity_distinguishes_a_block_from_its_logs() {
        let block = Event {
            chain: "devnet".into(),
            block: BlockRef {
                number: 7,
                hash: B256::repeat_byte(1),
                parent_hash: B256::repeat_byte(0),
            },
            block_timestamp: 1,
            log: None,
        };
        let mut log = block.clone();
        log.log = Some(LogFields {
            tx_hash: B256::repeat_byte(2),
            tx_index: 0,
            log_index: 0,
            address: Address::repeat_byte(3),
            topics: vec![],
            data: Bytes::new(),
        });
        assert_ne!(block.key(), log.key());
        assert_eq!(log.kind(), EventKind::Log);
    }
    /// A stored log of `chain` from contract `address` with `topic0` at block `number` (the
    /// filter tests' fixture, shared with `publish`).
    pub(crate) fn log(chain: &str, address: u8, topic0: u8, number: u64) -> StoredEvent {
        StoredEvent {
            cursor: 1,
            event: Event {
                chain: chain.into(),
                block: BlockRef {
                    number,
                    hash: B256::repeat_byte(9),
                    parent_hash: B256::ZERO,
                },
                block_timestamp: 0,
                log: Some(LogFields {
                    tx_hash: B256::repeat_byte(7),
                    tx_index: 0,
                    log_index: 0,
                    address: Address::repeat_byte(address),
                    topics: vec![B256::repeat_byte(topic0)],
                    data: Bytes::new(),
                }),
            },
            removed: false,
            finality: Finality::Latest,
            first_provider: "p".into(),
            providers_seen: 1,
            received_at_ms: 0,
        }
    }

    #[test]
    fn filters_match_like_the_rest_api() {
        let e = log("devnet", 0xaa, 0x01, 10);
        assert!(EventFilter::default().matches(&e));
        let cases: Vec<(EventFilter, bool)> = vec![
            (
                EventFilter {
                    chain: Some("devnet".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                EventFilter {
                    chain: Some("other".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                EventFilter {
                    kind: Some(EventKind::Block),
                    ..Default::default()
                },
                false,
            ),
            (
                EventFilter {
                    addresses: vec![Address::repeat_byte(0xbb), Address::repeat_byte(0xaa)],
                    ..Default::default()
                },
                true,
            ),
            (
                EventFilter {
                    addresses: vec![Address::repeat_byte(0xbb)],
                    ..Default::default()
                },
                false,
            ),
            (
                EventFilter {
                    topics: [Some(B256::repeat_byte(1)), None, None, None],
                    ..Default::default()
                },
                true,
            ),
            (
                EventFilter {
                    topics: [None, Some(B256::repeat_byte(1)), None, None],
                    ..Default::default()
                },
                false,
            ),
            (
                EventFilter {
                    from_block: Some(11),
                    ..Default::default()
                },
                false,
            ),
            (
                EventFilter {
                    to_block: Some(10),
                    ..Default::default()
                },
                true,
            ),
            (
                EventFilter {
                    tx_hash: Some(B256::repeat_byte(7)),
                    ..Default::default()
                },
                true,
            ),
            (
                EventFilter {
                    block_hash: Some(B256::repeat_byte(8)),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (i, (filter, want)) in cases.into_iter().enumerate() {
            assert_eq!(filter.matches(&e), want, "case {i}: {filter:?}");
        }
    }
}
