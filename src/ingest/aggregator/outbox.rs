//! What the aggregator decided, on its way to the writer: first copies and late copies are
//! queued while one input is handled and handed over together, in the order they were decided.

use super::Aggregator;
use crate::ingest::writer::WriterInput;
use crate::store::NewEvent;

/// Decisions held for the writer at most before they are sent on: a block's worth usually,
/// and a large range goes in parts, so that the writer's queue bounds memory in items.
pub const OUTBOX: usize = 64;

/// The writer has stopped.
#[derive(Debug)]
pub(super) struct Closed;

impl Aggregator {
    /// Queues a first copy for the writer (sent with the rest of the input's decisions).
    pub(super) async fn push(&mut self, new: NewEvent) -> Result<(), Closed> {
        self.bursts.sent(new.event.block.number);
        self.events.push(new);
        if self.events.len() >= OUTBOX {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the queued first copies, then the queued late ones (whose events were sent
    /// before them, or just now).
    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            self.deliver(WriterInput::Events(events)).await?;
        }
        if !self.copies.is_empty() {
            let copies = std::mem::take(&mut self.copies);
            self.deliver(WriterInput::Seen(copies)).await?;
        }
        Ok(())
    }

    /// Sends `input` after everything decided before it.
    pub(super) async fn send(&mut self, input: WriterInput) -> Result<(), Closed> {
        self.flush().await?;
        self.deliver(input).await
    }

    async fn deliver(&self, input: WriterInput) -> Result<(), Closed> {
        self.writer.send(input).await.map_err(|_| Closed)
    }
}
