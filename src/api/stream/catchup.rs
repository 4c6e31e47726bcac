//! A session's reads of the store: the replay after `since` (or after a cut-off), a page at a
//! time and no faster than the socket takes it, and the settled events a settled-only
//! subscriber receives when its finality level advances.

use std::collections::HashMap;
use std::time::Duration;

use super::wire::{BATCH_FRAME_BYTES, ServerMessage, join, render};
use super::{ApiError, End, Session};
use crate::backoff::Curve;
use crate::domain::{ChainName, Cursor, EventFilter, Finality};
use crate::publish::{FeedItem, Text, replay};
use crate::store::{EventQuery, Order, StoreError};

/// Items per replay page, at most; a page that met a full socket is followed by smaller ones.
const REPLAY_PAGE: u32 = 500;
/// Items per replay page, at least.
const REPLAY_PAGE_MIN: u32 = 16;
/// Tries of a replay page whose store error is retryable (a saturated read pool).
const REPLAY_ATTEMPTS: u32 = 5;
/// Waits between those tries: 50 ms doubling, jittered so resuming sessions spread out.
const REPLAY_BACKOFF: Curve = Curve::jittered(Duration::from_millis(50), Duration::from_secs(1));

impl Session {
    /// Sends every stored item after `last` matching `filter`, advancing `last`.
    ///
    /// A page's items are rendered and written only while the socket takes them without
    /// waiting. When it would wait (the client reads slower than the store yields, or not at
    /// all), the rest of the page is dropped, the session waits holding nothing but its write
    /// buffer, and the next page starts after the last item written: smaller, the size of what
    /// the socket took, then doubling again while the socket keeps up.
    pub(super) async fn replay(
        &mut self,
        filter: &EventFilter,
        settled: Option<Finality>,
        settled_to: &mut HashMap<ChainName, u64>,
        last: &mut Cursor,
    ) -> Result<(), End> {
        let mut after = *last;
        let mut limit = REPLAY_PAGE;
        for _ in 0..u32::MAX {
            let turn = self.state.stream_slots.replay_turn().await;
            let page = self.page(filter, after, limit).await?;
            drop(turn);
            if let Some(oldest_cursor) = page.expired {
                return Err(End::Error(ApiError::CursorExpired {
                    cursor: after,
                    oldest_cursor,
                }));
            }
            let mut full = false;
            match settled {
                Some(level) => {
                    for item in &page.items {
                        self.settle(filter, level, item, settled_to).await?;
                        *last = (*last).max(item.cursor());
                    }
                }
                None => {
                    let written;
                    (written, full) = self.write_page(&page.items, last).await?;
                    limit = if full {
                        written.max(REPLAY_PAGE_MIN)
                    } else {
                        limit.saturating_mul(2).min(REPLAY_PAGE)
                    };
                }
            }
            let through = page.through;
            drop(page);
            if full {
                // Every matching change up to the last item written was written: go on after it.
                self.wait_ready().await?;
                after = *last;
                continue;
            }
            self.flush().await?;
            match through {
                Some(through) => {
                    after = through;
                    *last = (*last).max(through);
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Writes `items` while the socket takes them without waiting — one frame each, or joined
    /// into frames of up to [`BATCH_FRAME_BYTES`] for a subscriber that asked for `batch` —
    /// advancing `last` past every item written. How many were, and whether the socket filled.
    async fn write_page(
        &mut self,
        items: &[FeedItem],
        last: &mut Cursor,
    ) -> Result<(u32, bool), End> {
        let mut written = 0u32;
        let mut group: Vec<Text> = Vec::new();
        let mut bytes = 0;
        for (i, item) in items.iter().enumerate() {
            let text = render(item);
            bytes += text.len() + 1;
            group.push(text);
            let next_fits = items
                .get(i + 1)
                .is_some_and(|_| self.batch && bytes < BATCH_FRAME_BYTES);
            if next_fits {
                continue;
            }
            if !self.ready_now().await? {
                return Ok((written, true));
            }
            written += group.len() as u32;
            self.feed_now(join(std::mem::take(&mut group)))?;
            *last = (*last).max(item.cursor());
            bytes = 0;
        }
        Ok((written, false))
    }

    /// One replay page. A busy read pool (many sessions resuming at once) is waited out a few
    /// times rather than ending the session; the live queue meanwhile fills or cuts it off,
    /// and either way the session resumes from `after`.
    async fn page(
        &mut self,
        filter: &EventFilter,
        after: Cursor,
        limit: u32,
    ) -> Result<replay::Page, End> {
        let mut delays = REPLAY_BACKOFF.delays();
        let mut attempt = 1;
        loop {
            match replay::page(&self.state.store, filter, after, limit).await {
                Ok(page) => return Ok(page),
                Err(err) if err.is_retryable() && attempt < REPLAY_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "stream replay: store busy; retrying");
                    tokio::time::sleep(delays.next_delay()).await;
                    attempt += 1;
                }
                Err(err) => return Err(self.store_failed(err)),
            }
        }
    }

    /// How a store error ends the session: a closed store while the service stops is the
    /// stop (close 1001), not a failure of this session.
    fn store_failed(&self, err: StoreError) -> End {
        if self.state.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::Error(ApiError::from(err))
        }
    }

    /// For a settled-only subscriber: a finality advance of its level becomes the events of the
    /// newly settled blocks (canonical, matching), each carrying the advance's cursor, then the
    /// advance itself as the marker to resume from.
    pub(super) async fn settle(
        &mut self,
        filter: &EventFilter,
        level: Finality,
        item: &FeedItem,
        settled_to: &mut HashMap<ChainName, u64>,
    ) -> Result<(), End> {
        let FeedItem::Finality(advance) = item else {
            return Ok(());
        };
        if advance.finality != level {
            return Ok(());
        }
        let store = self.state.store.clone();
        let from = match settled_to.get(&advance.chain) {
            Some(to) => to + 1,
            None => store
                .finality_before(&advance.chain, level, advance.cursor)
                .await
                .map_err(|e| self.store_failed(e))?
                .saturating_add(1),
        };
        let from = from.max(filter.from_block.unwrap_or(0));
        let to = advance.to_block.min(filter.to_block.unwrap_or(u64::MAX));
        let mut after = 0;
        // Paged by cursor; `from..=to` may be empty (nothing new settled for this filter).
        let pages = if from <= to { u32::MAX } else { 0 };
        let mut query = EventQuery {
            filter: EventFilter {
                chain: Some(advance.chain.to_string()),
                from_block: Some(from),
                to_block: Some(to),
                finality: None,
                ..filter.clone()
            },
            include_removed: false,
            after: None,
            limit: REPLAY_PAGE,
            order: Order::Asc,
        };
        for _ in 0..pages {
            query.after = Some(after);
            let events = store
                .query_events(&query)
                .await
                .map_err(|e| self.store_failed(e))?;
            // Rendered one at a time as the socket takes them.
            for event in &events {
                self.feed(ServerMessage::event(advance.cursor, event).text())
                    .await?;
            }
            self.flush().await?;
            match events.last() {
                Some(e) if events.len() == REPLAY_PAGE as usize => after = e.cursor,
                _ => break,
            }
        }
        settled_to.insert(advance.chain.clone(), advance.to_block);
        self.send(render(item)).await
    }
}
