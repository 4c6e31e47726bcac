//! The fan-out: one task takes committed batches off the writer's broadcast and offers each
//! rendered item to every matching subscriber's bounded queue, without ever waiting on one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{FeedFilter, FeedItem, Published};
use crate::domain::Cursor;
use crate::store::Committed;
use crate::telemetry::metrics as m;

/// Turns an item into its wire text (the API's JSON).
pub type Render = Arc<dyn Fn(&FeedItem) -> Arc<str> + Send + Sync>;

/// Cheap-to-clone handle to the subscriber table.
///
/// A std `Mutex` is right here: it is held only for a non-blocking pass over the table
/// (`try_send` never waits) or an insert/remove, never across an `.await`.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    subscribers: Mutex<Table>,
    queue: usize,
    /// Highest cursor the hub has offered (0 before the first batch).
    published: AtomicI64,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    filter: FeedFilter,
    tx: mpsc::Sender<Arc<Published>>,
    lagged: Arc<AtomicBool>,
}

/// A live subscription: items arrive on `items` until the subscriber lags (then the channel
/// closes and [`Subscription::lagged`] is true) or is dropped.
pub struct Subscription {
    pub items: mpsc::Receiver<Arc<Published>>,
    lagged: Arc<AtomicBool>,
    id: u64,
    hub: Hub,
}

impl Subscription {
    /// True once the hub cut this subscriber off for falling behind: catch up from the store.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.table().entries.remove(&self.id);
    }
}

impl Hub {
    /// `queue`: items a subscriber may have waiting before it counts as lagging.
    pub fn new(queue: usize) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                subscribers: Mutex::new(Table::default()),
                queue: queue.max(1),
                published: AtomicI64::new(0),
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a consistent table (each step is one map op).
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn subscribe(&self, filter: FeedFilter) -> Subscription {
        let (tx, items) = mpsc::channel(self.shared.queue);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(
            id,
            Entry {
                filter,
                tx,
                lagged: lagged.clone(),
            },
        );
        drop(table);
        Subscription {
            items,
            lagged,
            id,
            hub: self.clone(),
        }
    }

    pub fn subscribers(&self) -> usize {
        self.table().entries.len()
    }

    pub fn published(&self) -> Cursor {
        self.shared.published.load(Ordering::Acquire)
    }

    /// Offers `items` (cursor order) to every matching subscriber. A full queue cuts that
    /// subscriber off; nobody waits.
    pub fn publish(&self, items: &[Arc<Published>]) {
        let mut table = self.table();
        let mut cut = Vec::new();
        for (&id, entry) in table.entries.iter() {
            for item in items {
                if !entry.filter.matches(&item.item) {
                    continue;
                }
                match entry.tx.try_send(item.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        entry.lagged.store(true, Ordering::Release);
                        cut.push(id);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        cut.push(id);
                        break;
                    }
                }
            }
        }
        for id in cut {
            table.entries.remove(&id);
        }
        drop(table);
        if let Some(last) = items.last() {
            self.shared
                .published
                .fetch_max(last.item.cursor(), Ordering::AcqRel);
        }
    }

    /// Cuts off every subscriber (the hub itself missed batches): all catch up from the store.
    pub fn cut_all(&self) {
        let mut table = self.table();
        for entry in table.entries.values() {
            entry.lagged.store(true, Ordering::Release);
        }
        let n = table.entries.len();
        table.entries.clear();
        drop(table);
        metrics::counter!(m::STREAM_LAGGED).increment(n as u64);
    }

    /// Runs until `shutdown` or until the writer's broadcast closes.
    pub async fn run(
        self,
        mut committed: broadcast::Receiver<Arc<Committed>>,
        render: Render,
        shutdown: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = committed.recv() => batch,
            };
            match batch {
                Ok(batch) => {
                    let items: Vec<Arc<Published>> = FeedItem::all_of(&batch)
                        .into_iter()
                        .map(|item| {
                            let text = render(&item);
                            Arc::new(Published { item, text })
                        })
                        .collect();
                    self.publish(&items);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "publisher fell behind the writer; subscribers catch up from the database"
                    );
                    self.cut_all();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockRef, Event, Finality, StoredEvent};
    use alloy_primitives::B256;

    fn added(cursor: Cursor, chain: &str) -> Arc<Published> {
        let item = FeedItem::Added(StoredEvent {
            cursor,
            event: Event {
                chain: chain.into(),
                block: BlockRef {
                    number: cursor as u64,
                    hash: B256::repeat_byte(1),
                    parent_hash: B256::ZERO,
                },
                block_timestamp: 0,
                log: None,
            },
            removed: false,
            finality: Finality::Latest,
            first_provider: "p".into(),
            providers_seen: 1,
            received_at_ms: 0,
        });
        Arc::new(Published {
            text: format!("{cursor}").into(),
            item,
        })
    }

    #[tokio::test]
    async fn matching_subscribers_get_items_in_order_and_a_full_queue_cuts_only_its_owner() {
        let hub = Hub::new(4);
        let mut fast = hub.subscribe(FeedFilter::default());
        let slow = hub.subscribe(FeedFilter::default());
        let mut other = hub.subscribe(FeedFilter {
            chain: Some("other".into()),
            ..FeedFilter::default()
        });
        for c in 1..=3 {
            hub.publish(&[added(c, "devnet")]);
            assert_eq!(fast.items.recv().await.unwrap().item.cursor(), c);
        }
        // `slow` never reads: its fourth item fits, the fifth cuts it off.
        hub.publish(&[added(4, "devnet"), added(5, "devnet")]);
        assert!(slow.lagged());
        assert!(!fast.lagged());
        assert_eq!(hub.subscribers(), 2);
        assert_eq!(fast.items.recv().await.unwrap().item.cursor(), 4);
        assert_eq!(fast.items.recv().await.unwrap().item.cursor(), 5);
        assert!(other.items.try_recv().is_err(), "filtered out");
        assert_eq!(hub.published(), 5);
        drop(fast);
        drop(slow);
        assert_eq!(hub.subscribers(), 1);
    }

    #[tokio::test]
    async fn the_run_loop_renders_once_and_cuts_everyone_when_it_misses_batches() {
        let hub = Hub::new(1024);
        let (tx, rx) = broadcast::channel(2);
        let render: Render = Arc::new(|item: &FeedItem| format!("c{}", item.cursor()).into());
        let mut sub = hub.subscribe(FeedFilter::default());
        // Four batches into a channel of two: the run loop sees Lagged first.
        for c in 1..=4 {
            let committed = Committed {
                inserted: match &added(c, "devnet").item {
                    FeedItem::Added(e) => vec![e.clone()],
                    _ => unreachable!(),
                },
                ..Committed::default()
            };
            tx.send(Arc::new(committed)).unwrap();
        }
        drop(tx);
        hub.clone().run(rx, render, CancellationToken::new()).await;
        assert!(sub.lagged());
        assert!(sub.items.recv().await.is_none());
    }
}
