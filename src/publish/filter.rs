//! What a subscriber wants: the `/v1/events` filters, matched in memory against live items.

use alloy_primitives::{Address, B256};

use super::FeedItem;
use crate::domain::{EventKind, Finality, StoredEvent};

/// Mirrors the REST filters. Empty lists and `None`s match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    pub chain: Option<String>,
    pub kind: Option<EventKind>,
    pub addresses: Vec<Address>,
    pub topics: [Option<B256>; 4],
    pub from_block: Option<u64>,
    pub to_block: Option<u64>,
    pub tx_hash: Option<B256>,
    pub block_hash: Option<B256>,
    /// `Some(safe | finalized)`: the subscriber receives events only once they reach that level
    /// (its session turns finality advances into events); additions and retractions of
    /// unsettled blocks are not for it.
    pub finality: Option<Finality>,
}

impl FeedFilter {
    /// Whether the event's content matches (finality aside).
    pub fn matches_event(&self, stored: &StoredEvent) -> bool {
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

    /// Whether the live item is for this subscriber as it stands.
    pub fn matches(&self, item: &FeedItem) -> bool {
        let settled_only = matches!(self.finality, Some(Finality::Safe | Finality::Finalized));
        match item {
            FeedItem::Added(event) => !settled_only && self.matches_event(event),
            FeedItem::Removed { event, .. } | FeedItem::Restored { event, .. } => {
                !settled_only && self.matches_event(event)
            }
            FeedItem::Finality(advance) => {
                self.chain.as_deref().is_none_or(|c| c == &*advance.chain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockRef, Event, LogFields};
    use crate::store::FinalityAdvance;
    use alloy_primitives::Bytes;

    fn log(chain: &str, address: u8, topic0: u8, number: u64) -> StoredEvent {
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
        let any = FeedFilter::default();
        assert!(any.matches(&FeedItem::Added(e.clone())));
        let cases: Vec<(FeedFilter, bool)> = vec![
            (
                FeedFilter {
                    chain: Some("devnet".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                FeedFilter {
                    chain: Some("other".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    kind: Some(EventKind::Block),
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    addresses: vec![Address::repeat_byte(0xbb), Address::repeat_byte(0xaa)],
                    ..Default::default()
                },
                true,
            ),
            (
                FeedFilter {
                    addresses: vec![Address::repeat_byte(0xbb)],
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    topics: [Some(B256::repeat_byte(1)), None, None, None],
                    ..Default::default()
                },
                true,
            ),
            (
                FeedFilter {
                    topics: [None, Some(B256::repeat_byte(1)), None, None],
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    from_block: Some(11),
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    to_block: Some(10),
                    ..Default::default()
                },
                true,
            ),
            (
                FeedFilter {
                    tx_hash: Some(B256::repeat_byte(7)),
                    ..Default::default()
                },
                true,
            ),
            (
                FeedFilter {
                    block_hash: Some(B256::repeat_byte(8)),
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    finality: Some(Finality::Finalized),
                    ..Default::default()
                },
                false,
            ),
            (
                FeedFilter {
                    finality: Some(Finality::Latest),
                    ..Default::default()
                },
                true,
            ),
        ];
        for (i, (filter, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                filter.matches(&FeedItem::Added(e.clone())),
                want,
                "case {i}: {filter:?}"
            );
        }
        let removal = FeedItem::Removed {
            cursor: 5,
            event: e,
        };
        assert!(any.matches(&removal));
        let advance = FeedItem::Finality(FinalityAdvance {
            cursor: 6,
            chain: "devnet".into(),
            finality: Finality::Finalized,
            to_block: 3,
        });
        let finalized_only = FeedFilter {
            finality: Some(Finality::Finalized),
            ..Default::default()
        };
        assert!(finalized_only.matches(&advance));
        assert!(!finalized_only.matches(&removal));
    }

    /// Finality advances describe a chain: they follow the `chain` filter alone, whatever the
    /// kind, address or topic filters (README, "What the stream sends").
    #[test]
    fn finality_messages_follow_the_chain_filter_only() {
        let advance = |chain: &str| {
            FeedItem::Finality(FinalityAdvance {
                cursor: 6,
                chain: chain.into(),
                finality: Finality::Safe,
                to_block: 3,
            })
        };
        let logs_of_one_contract = FeedFilter {
            kind: Some(EventKind::Log),
            addresses: vec![Address::repeat_byte(1)],
            topics: [Some(B256::repeat_byte(2)), None, None, None],
            ..Default::default()
        };
        assert!(logs_of_one_contract.matches(&advance("devnet")));
        assert!(logs_of_one_contract.matches(&advance("mainnet")));
        let on_devnet = FeedFilter {
            chain: Some("devnet".into()),
            ..logs_of_one_contract
        };
        assert!(on_devnet.matches(&advance("devnet")));
        assert!(!on_devnet.matches(&advance("mainnet")));
    }
}
