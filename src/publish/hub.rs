//! The fan-out: one task takes committed batches off the writer's broadcast, renders each item
//! once, and hands the whole batch (one `Arc`) to every subscriber with a matching item,
//! without ever waiting on one.
//!
//! A subscriber's queue holds batches, not items: publishing costs one queue operation per
//! subscriber and batch whatever the batch size, and the per-item filter runs in the
//! subscriber's own task (in parallel, off the hub). The queue is bounded in *items*: a
//! subscriber with items waiting is cut off when the next batch would take it past the limit.
//! An empty queue always takes a batch, so a writer batch larger than the limit is delivered,
//! not turned into a lag for everyone; memory per subscriber stays under the limit plus one
//! batch, and batches are shared, not copied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Batch, FeedItem, Published, Text};
use crate::domain::Cursor;
use crate::domain::{EventFilter, EventKind};
use crate::store::Committed;
use crate::telemetry::metrics as m;

/// Turns an item into its wire text (the API's JSON).
pub type Render = Arc<dyn Fn(&FeedItem) -> Text + Send + Sync>;

/// Cheap-to-clone handle to the subscriber table.
///
/// A std `Mutex` is right here: it is held only for a non-blocking pass over the table
/// (an unbounded `send` never waits) or an insert/remove, never across an `.await`.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    subscribers: Mutex<Table>,
    /// Items a subscriber may have waiting before the next batch cuts it off.
    limit: usize,
    /// Highest cursor the hub has seen committed (0 before the first batch).
    published: AtomicI64,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    filter: EventFilter,
    /// Unbounded as a channel, bounded by `pending` (checked before every send).
    tx: mpsc::UnboundedSender<Batch>,
    pending: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

/// A live subscription: batches arrive through [`Subscription::recv`] until the subscriber lags
/// (then the queue ends and [`Subscription::lagged`] is true) or is dropped. A batch may hold
/// items the filter does not match: the subscriber picks its own.
pub struct Subscription {
    items: mpsc::UnboundedReceiver<Batch>,
    pending: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
    id: u64,
    hub: Hub,
}

impl Subscription {
    /// The next batch; `None` once the hub cut this subscriber off or stopped. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Batch> {
        let batch = self.items.recv().await?;
        self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }

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
    /// `limit`: items a subscriber may have waiting before it counts as lagging.
    pub fn new(limit: usize) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                subscribers: Mutex::new(Table::default()),
                limit: limit.max(1),
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

    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        let (tx, items) = mpsc::unbounded_channel();
        let lagged = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(
            id,
            Entry {
                filter,
                tx,
                pending: pending.clone(),
                lagged: lagged.clone(),
            },
        );
        drop(table);
        Subscription {
            items,
            pending,
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

    /// Offers `batch` (cursor order) to every subscriber with a matching item. One that already
    /// has items waiting and would go past the limit is cut off; nobody waits.
    pub fn publish(&self, batch: &Batch) {
        self.publish_if(batch, Wants::ALL);
        self.advance(batch.last().map(|p| p.item.cursor()));
    }

    /// What the subscribers' filters take, all together.
    fn wants(&self) -> Wants {
        Wants::of(self.table().entries.values().map(|e| &e.filter))
    }

    /// [`Hub::publish`] of a batch built for `wants`, unless a subscriber that wants more came
    /// meanwhile (then nothing is sent: the caller builds the batch again).
    fn publish_if(&self, batch: &Batch, wants: Wants) -> bool {
        let mut table = self.table();
        if !wants.covers(Wants::of(table.entries.values().map(|e| &e.filter))) {
            return false;
        }
        let mut cut = Vec::new();
        for (&id, entry) in table.entries.iter() {
            if !batch.iter().any(|p| p.item.matches(&entry.filter)) {
                continue;
            }
            let waiting = entry.pending.load(Ordering::Acquire);
            if waiting > 0 && waiting + batch.len() > self.shared.limit {
                entry.lagged.store(true, Ordering::Release);
                cut.push(id);
                continue;
            }
            // Counted before the send, subtracted after the receive: never below zero.
            entry.pending.fetch_add(batch.len(), Ordering::AcqRel);
            if entry.tx.send(batch.clone()).is_err() {
                cut.push(id);
            }
        }
        for id in cut {
            table.entries.remove(&id);
        }
        true
    }

    fn advance(&self, last: Option<Cursor>) {
        if let Some(last) = last {
            self.shared.published.fetch_max(last, Ordering::AcqRel);
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
                    // Nobody to render for: skipping is safe, since a session subscribes
                    // before it reads the store, and this batch is committed already, so a
                    // subscriber arriving now finds it in the store.
                    if self.subscribers() == 0 {
                        self.advance(last_cursor(&batch));
                        continue;
                    }
                    // Built of the kinds some subscriber takes (a page following blocks costs
                    // no log), again if a subscriber wanting more arrived meanwhile.
                    loop {
                        let wants = self.wants();
                        let items: Batch = FeedItem::all_of(&batch)
                            .into_iter()
                            .filter(|item| wants.takes(item))
                            .map(|item| Published::new(item, render.clone()))
                            .collect();
                        if self.publish_if(&items, wants) {
                            break;
                        }
                    }
                    self.advance(last_cursor(&batch));
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

/// The kinds of events the subscribers take (finality advances always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wants {
    blocks: bool,
    logs: bool,
}

impl Wants {
    const ALL: Wants = Wants {
        blocks: true,
        logs: true,
    };

    fn of<'a>(filters: impl Iterator<Item = &'a EventFilter>) -> Wants {
        let mut wants = Wants {
            blocks: false,
            logs: false,
        };
        for filter in filters {
            wants.blocks |= filter.kind != Some(EventKind::Log);
            wants.logs |= filter.kind != Some(EventKind::Block);
        }
        wants
    }

    /// Whether everything `other` takes, this takes too.
    fn covers(self, other: Wants) -> bool {
        (self.blocks || !other.blocks) && (self.logs || !other.logs)
    }

    fn takes(self, item: &FeedItem) -> bool {
        let event = match item {
            FeedItem::Added(event)
            | FeedItem::Removed { event, .. }
            | FeedItem::Restored { event, .. } => event,
            FeedItem::Finality(_) => return true,
        };
        if event.event.log.is_some() {
            self.logs
        } else {
            self.blocks
        }
    }
}

/// The highest cursor a committed batch took, if any.
fn last_cursor(committed: &Committed) -> Option<Cursor> {
    let added = committed.inserted.iter().map(|e| e.cursor);
    let retracted = committed.retractions.iter().map(|r| r.cursor);
    let advanced = committed.finality.iter().map(|a| a.cursor);
    added.chain(retracted).chain(advanced).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockRef, Event, Finality, StoredEvent};
    use alloy_primitives::B256;

    fn stored(cursor: Cursor, chain: &str) -> StoredEvent {
        StoredEvent {
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
        }
    }

    fn batch(cursors: std::ops::RangeInclusive<Cursor>, chain: &str) -> Batch {
        cursors
            .map(|c| {
                let render: Render = Arc::new(move |_: &FeedItem| format!("{c}").into());
                Published::new(FeedItem::Added(stored(c, chain)), render)
            })
            .collect()
    }

    fn cursors(batch: &Batch) -> Vec<Cursor> {
        batch.iter().map(|p| p.item.cursor()).collect()
    }

    #[tokio::test]
    async fn matching_subscribers_get_batches_in_order_and_going_past_the_limit_cuts_only_its_owner()
     {
        let hub = Hub::new(4);
        let mut fast = hub.subscribe(EventFilter::default());
        let slow = hub.subscribe(EventFilter::default());
        let mut other = hub.subscribe(EventFilter {
            chain: Some("other".into()),
            ..EventFilter::default()
        });
        hub.publish(&batch(1..=3, "devnet"));
        assert_eq!(cursors(&fast.recv().await.unwrap()), [1, 2, 3]);
        // `slow` never reads: 3 waiting + 1 fits the limit of 4, 4 + 2 does not.
        hub.publish(&batch(4..=4, "devnet"));
        assert!(!slow.lagged());
        hub.publish(&batch(5..=6, "devnet"));
        assert!(slow.lagged());
        assert!(!fast.lagged());
        assert_eq!(hub.subscribers(), 2);
        assert_eq!(cursors(&fast.recv().await.unwrap()), [4]);
        assert_eq!(cursors(&fast.recv().await.unwrap()), [5, 6]);
        assert!(other.items.try_recv().is_err(), "no matching item");
        assert_eq!(hub.published(), 6);
        drop(fast);
        drop(slow);
        assert_eq!(hub.subscribers(), 1);
    }

    #[tokio::test]
    async fn an_empty_queue_takes_a_batch_larger_than_the_limit() {
        let hub = Hub::new(4);
        let mut sub = hub.subscribe(EventFilter::default());
        hub.publish(&batch(1..=10, "devnet"));
        assert!(!sub.lagged());
        assert_eq!(sub.recv().await.unwrap().len(), 10);
        hub.publish(&batch(11..=20, "devnet"));
        assert_eq!(sub.recv().await.unwrap().len(), 10, "drained: room again");
        hub.publish(&batch(21..=30, "devnet"));
        hub.publish(&batch(31..=31, "devnet"));
        assert!(sub.lagged(), "ten waiting, one more goes past four");
        assert_eq!(cursors(&sub.recv().await.unwrap()).last(), Some(&30));
        assert!(sub.recv().await.is_none(), "then the queue ends");
    }

    #[tokio::test]
    async fn the_run_loop_renders_once_and_cuts_everyone_when_it_misses_batches() {
        let hub = Hub::new(1024);
        let (tx, rx) = broadcast::channel(2);
        let render: Render = Arc::new(|item: &FeedItem| format!("c{}", item.cursor()).into());
        let mut sub = hub.subscribe(EventFilter::default());
        // Four batches into a channel of two: the run loop sees Lagged first.
        for c in 1..=4 {
            let committed = Committed {
                inserted: vec![stored(c, "devnet")],
                ..Committed::default()
            };
            tx.send(Arc::new(committed)).unwrap();
        }
        drop(tx);
        hub.clone().run(rx, render, CancellationToken::new()).await;
        assert!(sub.lagged());
        assert!(sub.recv().await.is_none());
    }

    #[tokio::test]
    async fn without_subscribers_nothing_is_rendered() {
        let hub = Hub::new(1024);
        let (tx, rx) = broadcast::channel(8);
        let rendered = Arc::new(AtomicUsize::new(0));
        let count = rendered.clone();
        let render: Render = Arc::new(move |item: &FeedItem| {
            count.fetch_add(1, Ordering::Relaxed);
            format!("c{}", item.cursor()).into()
        });
        for c in 1..=3 {
            let committed = Committed {
                inserted: vec![stored(c, "devnet")],
                ..Committed::default()
            };
            tx.send(Arc::new(committed)).unwrap();
        }
        drop(tx);
        hub.clone().run(rx, render, CancellationToken::new()).await;
        assert_eq!(rendered.load(Ordering::Relaxed), 0);
        assert_eq!(hub.published(), 3, "the published cursor still advances");
    }

    #[tokio::test]
    async fn only_what_a_subscriber_takes_is_rendered_and_only_once() {
        let hub = Hub::new(1024);
        let (tx, rx) = broadcast::channel(8);
        let rendered = Arc::new(AtomicUsize::new(0));
        let count = rendered.clone();
        let render: Render = Arc::new(move |item: &FeedItem| {
            count.fetch_add(1, Ordering::Relaxed);
            format!("c{}", item.cursor()).into()
        });
        let only_a = EventFilter {
            chain: Some("a".into()),
            ..EventFilter::default()
        };
        let mut subs = [hub.subscribe(only_a.clone()), hub.subscribe(only_a.clone())];
        let committed = Committed {
            inserted: (1..=6)
                .map(|c| stored(c, if c % 2 == 0 { "a" } else { "b" }))
                .collect(),
            ..Committed::default()
        };
        tx.send(Arc::new(committed)).unwrap();
        drop(tx);
        hub.clone().run(rx, render, CancellationToken::new()).await;
        for sub in &mut subs {
            let batch = sub.recv().await.expect("a batch");
            let texts: Vec<String> = batch
                .iter()
                .filter(|p| p.item.matches(&only_a))
                .map(|p| p.text().to_string())
                .collect();
            assert_eq!(texts, ["c2", "c4", "c6"]);
        }
        assert_eq!(
            rendered.load(Ordering::Relaxed),
            3,
            "chain b's items never rendered"
        );
    }

    #[test]
    fn wants_follow_the_subscribers_kinds() {
        let kind = |k: Option<EventKind>| EventFilter {
            kind: k,
            ..EventFilter::default()
        };
        let blocks = [kind(Some(EventKind::Block))];
        let wants = Wants::of(blocks.iter());
        assert_eq!(
            wants,
            Wants {
                blocks: true,
                logs: false
            }
        );
        let mut log = stored(2, "a");
        log.event.log = Some(crate::domain::LogFields {
            tx_hash: B256::ZERO,
            tx_index: 0,
            log_index: 0,
            address: alloy_primitives::Address::ZERO,
            topics: Vec::new(),
            data: alloy_primitives::Bytes::new(),
        });
        assert!(wants.takes(&FeedItem::Added(stored(1, "a"))));
        assert!(
            !wants.takes(&FeedItem::Added(log)),
            "no subscriber takes logs"
        );
        let both = [kind(Some(EventKind::Block)), kind(None)];
        assert!(
            !wants.covers(Wants::of(both.iter())),
            "a new subscriber wants more"
        );
        assert!(Wants::ALL.covers(Wants::of(both.iter())));
    }
}
