//! Reading the change feed back from the store, for subscribers resuming from a cursor or
//! catching up after they lagged: additions, retractions and finality advances merged in cursor
//! order, a page at a time.

use super::FeedItem;
use crate::domain::{Cursor, EventFilter};
use crate::store::{EventQuery, Order, Store, StoreError};

/// One page of the feed after a cursor.
#[derive(Debug, Default)]
pub struct Page {
    /// Matching items, in cursor order.
    pub items: Vec<FeedItem>,
    /// Every change up to this cursor has been considered (matching or not): the next page
    /// starts after it. `None` when the page reached the end of what is committed.
    pub through: Option<Cursor>,
    /// The lowest cursor to resume after when retention pruned changes after `after` (the
    /// page may have a gap: it holds nothing).
    pub expired: Option<Cursor>,
}

/// Reads the items after `after` matching `filter`, at most about `limit` of each kind.
pub async fn page(
    store: &Store,
    filter: &EventFilter,
    after: Cursor,
    limit: u32,
) -> Result<Page, StoreError> {
    let limit = limit.max(1);
    // One snapshot for the three reads: only what was committed before they start. Each read is
    // its own transaction, so without this bound a later read could see a batch committed after
    // an earlier one ran (a finality advance at cursor 89 next to events read only up to 43),
    // and a caller resuming after the page's last item would skip the events in between.
    let ceiling = store.max_cursor().await;
    let chain = filter.chain.as_deref();
    let settled_only = filter.settled_only();
    let mut items = Vec::new();
    let mut horizon = Horizon::default();
    if !settled_only {
        additions(store, filter, after, limit, &mut horizon, &mut items).await?;
        retractions(store, filter, after, limit, &mut horizon, &mut items).await?;
    }

    let advances = store.finality_since(after, chain, limit).await?;
    horizon.source(
        advances.len() == limit as usize,
        advances.last().map(|a| a.cursor),
    );
    items.extend(advances.into_iter().map(FeedItem::Finality));

    // Read after the page: a prune that ran before any of its reads shows here. `after` 0 is
    // "from the oldest retained", whatever was pruned before.
    let oldest = store.oldest_cursor(chain).await?;
    if after > 0 && after < oldest {
        return Ok(Page {
            expired: Some(oldest),
            ..Page::default()
        });
    }

    items.sort_by_key(FeedItem::cursor);
    let horizon = horizon.0;
    let h = horizon.map_or(ceiling, |h| h.min(ceiling));
    items.retain(|item| item.cursor() <= h);
    Ok(Page {
        items,
        // A full source past the ceiling is cut there: the next page starts after it.
        through: horizon.map(|h| h.min(ceiling)),
        expired: None,
    })
}

/// Each source is complete up to its last cursor when it filled its page; the merged page is
/// complete up to the lowest such cursor.
#[derive(Default)]
struct Horizon(Option<Cursor>);

impl Horizon {
    fn source(&mut self, full: bool, last: Option<Cursor>) {
        if full && let Some(last) = last {
            self.0 = Some(self.0.map_or(last, |h| h.min(last)));
        }
    }
}

/// The additions after `after` (the filter's `finality` is `latest` or absent: no bound in the
/// store). An addition happened whatever became of the event since: it is replayed, and its
/// retraction after it.
async fn additions(
    store: &Store,
    filter: &EventFilter,
    after: Cursor,
    limit: u32,
    horizon: &mut Horizon,
    items: &mut Vec<FeedItem>,
) -> Result<(), StoreError> {
    let query = EventQuery {
        filter: filter.clone(),
        include_removed: true,
        after: Some(after),
        limit,
        order: Order::Asc,
    };
    let added = store.query_events(&query).await?;
    horizon.source(
        added.len() == limit as usize,
        added.last().map(|e| e.cursor),
    );
    items.extend(added.into_iter().map(FeedItem::Added));
    Ok(())
}

/// The removals and restorations after `after` of events matching `filter`.
async fn retractions(
    store: &Store,
    filter: &EventFilter,
    after: Cursor,
    limit: u32,
    horizon: &mut Horizon,
    items: &mut Vec<FeedItem>,
) -> Result<(), StoreError> {
    let chain = filter.chain.as_deref();
    let retractions = store.retractions_since(after, chain, limit).await?;
    horizon.source(
        retractions.len() == limit as usize,
        retractions.last().map(|r| r.cursor),
    );
    items.extend(
        retractions
            .into_iter()
            .filter(|r| filter.matches(&r.event))
            .map(|r| {
                if r.restored {
                    FeedItem::Restored {
                        cursor: r.cursor,
                        event: r.event,
                    }
                } else {
                    FeedItem::Removed {
                        cursor: r.cursor,
                        event: r.event,
                    }
                }
            }),
    );
    Ok(())
}
