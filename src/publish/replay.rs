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
    // Each source is complete up to its last cursor when it filled its page; the merged page is
    // complete up to the lowest such cursor.
    let mut horizon: Option<Cursor> = None;
    let mut cap = |full: bool, last: Option<Cursor>| {
        if full && let Some(last) = last {
            horizon = Some(horizon.map_or(last, |h: Cursor| h.min(last)));
        }
    };

    if !settled_only {
        // Not settled-only, so the finality filter is `latest` or absent: no bound in the store.
        let query = EventQuery {
            filter: filter.clone(),
            // The addition happened whatever became of the event since: replay it, and its
            // retraction after it.
            include_removed: true,
            after: Some(after),
            limit,
            order: Order::Asc,
        };
        let added = store.query_events(&query).await?;
        cap(
            added.len() == limit as usize,
            added.last().map(|e| e.cursor),
        );
        items.extend(added.into_iter().map(FeedItem::Added));

        let retractions = store.retractions_since(after, chain, limit).await?;
        cap(
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
    }

    let advances = store.finality_since(after, chain, limit).await?;
    cap(
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
    let h = horizon.map_or(ceiling, |h| h.min(ceiling));
    items.retain(|item| item.cursor() <= h);
    Ok(Page {
        items,
        // A full source past the ceiling is cut there: the next page starts after it.
        through: horizon.map(|h| h.min(ceiling)),
        expired: None,
    })
}
