//! The publisher: committed changes, in cursor order, to live subscribers, never before their
//! commit.
//!
//! The writer broadcasts each committed batch; the [`Hub`] turns it into [`FeedItem`]s, renders
//! each once (the renderer is the API's: only `api` knows JSON shapes; nothing is rendered
//! while nobody subscribes), and hands the batch, shared, to every subscriber with a matching
//! item through a queue bounded in items. A subscriber that would go past its bound is cut off
//! and flagged `lagged`: its session catches up from the database and subscribes again, or
//! tells the client `lagged`, so one slow reader never slows ingestion or the others.

mod filter;
mod hub;
pub mod replay;
mod supervised;

pub use hub::{Hub, Render, Subscription};
pub use supervised::spawn_publisher;

use std::sync::Arc;

use crate::domain::{ChainName, Cursor, StoredEvent};
use crate::store::{Committed, FinalityAdvance};

/// One change of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// An event was stored; its cursor is the event's own.
    Added(StoredEvent),
    /// A reorg retracted `event` (`cursor` is the removal's; `event.cursor` the addition's).
    Removed { cursor: Cursor, event: StoredEvent },
    /// A later reorg made a removed event canonical again.
    Restored { cursor: Cursor, event: StoredEvent },
    /// Every block of the chain up to `to_block` reached a finality level.
    Finality(FinalityAdvance),
}

impl FeedItem {
    pub fn cursor(&self) -> Cursor {
        match self {
            FeedItem::Added(event) => event.cursor,
            FeedItem::Removed { cursor, .. } | FeedItem::Restored { cursor, .. } => *cursor,
            FeedItem::Finality(advance) => advance.cursor,
        }
    }

    pub fn chain(&self) -> &ChainName {
        match self {
            FeedItem::Added(event)
            | FeedItem::Removed { event, .. }
            | FeedItem::Restored { event, .. } => &event.event.chain,
            FeedItem::Finality(advance) => &advance.chain,
        }
    }

    /// Every change of a committed batch, in cursor order.
    pub fn all_of(committed: &Committed) -> Vec<FeedItem> {
        let mut items: Vec<FeedItem> = Vec::with_capacity(
            committed.inserted.len() + committed.retractions.len() + committed.finality.len(),
        );
        items.extend(committed.inserted.iter().cloned().map(FeedItem::Added));
        items.extend(committed.retractions.iter().map(|r| {
            if r.restored {
                FeedItem::Restored {
                    cursor: r.cursor,
                    event: r.event.clone(),
                }
            } else {
                FeedItem::Removed {
                    cursor: r.cursor,
                    event: r.event.clone(),
                }
            }
        }));
        items.extend(committed.finality.iter().cloned().map(FeedItem::Finality));
        items.sort_by_key(FeedItem::cursor);
        items
    }
}

/// The wire form of an item. WebSocket's own text type (reference-counted bytes): every
/// subscriber's frame shares the one rendering instead of copying it.
pub type Text = axum::extract::ws::Utf8Bytes;

/// A feed item with its wire form, rendered once — when the first subscriber that wants it
/// asks, so items no filter takes are never rendered — and shared by every subscriber.
pub struct Published {
    pub item: FeedItem,
    text: std::sync::OnceLock<Text>,
    render: Render,
}

impl Published {
    pub fn new(item: FeedItem, render: Render) -> Published {
        Published {
            item,
            text: std::sync::OnceLock::new(),
            render,
        }
    }

    /// The item's wire form.
    pub fn text(&self) -> Text {
        self.text.get_or_init(|| (self.render)(&self.item)).clone()
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("item", &self.item)
            .finish()
    }
}

/// One committed batch as published: its items in cursor order, shared by every queue.
pub type Batch = Arc<[Published]>;
