//! Which live items are for a subscriber: its [`EventFilter`] applied to the feed.

use super::FeedItem;
use crate::domain::EventFilter;

impl FeedItem {
    /// Whether this live item is for a subscriber with `filter` as it stands. Finality
    /// advances describe a chain and follow the `chain` filter alone; a settled-only
    /// subscriber gets no additions or retractions (its session turns advances into events).
    pub fn matches(&self, filter: &EventFilter) -> bool {
        match self {
            FeedItem::Added(event)
            | FeedItem::Removed { event, .. }
            | FeedItem::Restored { event, .. } => !filter.settled_only() && filter.matches(event),
            FeedItem::Finality(advance) => {
                filter.chain.as_deref().is_none_or(|c| c == &*advance.chain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::log;
    use crate::domain::{EventKind, Finality};
    use crate::store::FinalityAdvance;
    use alloy_primitives::{Address, B256};

    #[test]
    fn settled_only_subscribers_get_advances_not_additions_or_retractions() {
        let e = log("devnet", 0xaa, 0x01, 10);
        let any = EventFilter::default();
        let added = FeedItem::Added(e.clone());
        assert!(added.matches(&any));
        let other_chain = EventFilter {
            chain: Some("other".into()),
            ..Default::default()
        };
        assert!(!added.matches(&other_chain), "the content filter applies");
        let finalized_only = EventFilter {
            finality: Some(Finality::Finalized),
            ..Default::default()
        };
        assert!(!added.matches(&finalized_only));
        let latest = EventFilter {
            finality: Some(Finality::Latest),
            ..Default::default()
        };
        assert!(added.matches(&latest));
        let removal = FeedItem::Removed {
            cursor: 5,
            event: e,
        };
        assert!(removal.matches(&any));
        let advance = FeedItem::Finality(FinalityAdvance {
            cursor: 6,
            chain: "devnet".into(),
            finality: Finality::Finalized,
            to_block: 3,
        });
        assert!(advance.matches(&finalized_only));
        assert!(!removal.matches(&finalized_only));
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
        let logs_of_one_contract = EventFilter {
            kind: Some(EventKind::Log),
            addresses: vec![Address::repeat_byte(1)],
            topics: [Some(B256::repeat_byte(2)), None, None, None],
            ..Default::default()
        };
        assert!(advance("devnet").matches(&logs_of_one_contract));
        assert!(advance("mainnet").matches(&logs_of_one_contract));
        let on_devnet = EventFilter {
            chain: Some("devnet".into()),
            ..logs_of_one_contract
        };
        assert!(advance("devnet").matches(&on_devnet));
        assert!(!advance("mainnet").matches(&on_devnet));
    }
}
