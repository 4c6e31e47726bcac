//! The aggregator's inputs: one bounded queue per source (each listener, the range sync), read
//! lowest block first.
//!
//! Every provider delivers the same blocks, but each connection buffers on its own (socket
//! buffers, the client's queue), so one shared FIFO would let a provider that got ahead at
//! connect time stay ahead by thousands of events for good. Its copies and the others' would
//! then meet far apart: past the hot set's reach (a full parse and an upsert for a copy) and
//! past the writer's batch (an UPDATE per late copy). Taking, among the inputs already queued,
//! the one of the lowest block keeps the providers' copies of a block together. It never waits
//! for a source: a provider that is really late simply has nothing queued. Order within one
//! source is kept, and the back-pressure of a bounded queue falls on the sources that are ahead.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use tokio::sync::mpsc;

use super::ChainInput;

/// Queues that outlive the aggregator reading them: the listeners' queues, lent to each run
/// of the pipeline and given back when it ends, however it ends (see [`Inputs::lend`]).
pub type Home = Arc<Mutex<Vec<mpsc::Receiver<ChainInput>>>>;

/// The queues of one chain's sources, with the next input of each taken out to compare.
pub struct Inputs {
    sources: Vec<Source>,
    /// Where the first `lent` queues go back to when this is dropped.
    home: Option<(Home, usize)>,
}

struct Source {
    queue: mpsc::Receiver<ChainInput>,
    next: Option<ChainInput>,
    closed: bool,
}

impl Inputs {
    pub fn new(queues: Vec<mpsc::Receiver<ChainInput>>) -> Inputs {
        Inputs {
            sources: queues
                .into_iter()
                .map(|queue| Source {
                    queue,
                    next: None,
                    closed: false,
                })
                .collect(),
            home: None,
        }
    }

    /// The queues waiting in `home` followed by `own` (the range sync's, made per run). The
    /// borrowed queues go back home when the inputs are dropped — at the end of a run, by an
    /// abort or by a panic's unwinding alike — so listeners keep delivering to the next run
    /// without noticing. `None` while another run still holds them.
    pub fn lend(home: &Home, own: Vec<mpsc::Receiver<ChainInput>>) -> Option<Inputs> {
        let lent = std::mem::take(&mut *home.lock().unwrap_or_else(PoisonError::into_inner));
        if lent.is_empty() {
            return None;
        }
        let count = lent.len();
        let mut inputs = Inputs::new(lent.into_iter().chain(own).collect());
        inputs.home = Some((Arc::clone(home), count));
        Some(inputs)
    }

    /// The queued input of the lowest block, waiting only when every queue is empty. `None`
    /// once every source has closed and everything queued was taken.
    pub async fn recv(&mut self) -> Option<ChainInput> {
        for source in &mut self.sources {
            source.fill();
        }
        if self.sources.iter().all(|s| s.next.is_none()) {
            // Nothing queued anywhere: wait for the first input of any source.
            let (at, input) = poll_fn(|cx| {
                let mut open = false;
                for (i, source) in self.sources.iter_mut().enumerate() {
                    if source.closed {
                        continue;
                    }
                    match source.queue.poll_recv(cx) {
                        Poll::Ready(Some(input)) => return Poll::Ready(Some((i, input))),
                        Poll::Ready(None) => source.closed = true,
                        Poll::Pending => open = true,
                    }
                }
                if open {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                }
            })
            .await?;
            self.sources[at].next = Some(input);
        }
        let lowest = self
            .sources
            .iter_mut()
            .filter(|s| s.next.is_some())
            .min_by_key(|s| s.next.as_ref().map_or(u64::MAX, first_block))?;
        lowest.next.take()
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        if let Some((home, count)) = self.home.take() {
            // What was taken out to compare is dropped: nothing is committed before the writer
            // has it, and the next run re-reads from the committed checkpoint.
            let queues = std::mem::take(&mut self.sources)
                .into_iter()
                .take(count)
                .map(|s| s.queue);
            let mut home = home.lock().unwrap_or_else(PoisonError::into_inner);
            home.extend(queues);
        }
    }
}

impl Source {
    fn fill(&mut self) {
        if self.next.is_some() || self.closed {
            return;
        }
        match self.queue.try_recv() {
            Ok(input) => self.next = Some(input),
            Err(mpsc::error::TryRecvError::Empty) => {}
            Err(mpsc::error::TryRecvError::Disconnected) => self.closed = true,
        }
    }
}

/// The (lowest) block an input is about.
fn first_block(input: &ChainInput) -> u64 {
    match input {
        ChainInput::Live(live) => live.block,
        ChainInput::Range(range) => range.heads.first().map_or(0, |h| h.block.number),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use alloy_primitives::B256;
    use serde_json::value::RawValue;

    use super::*;
    use crate::ingest::{Live, LiveItem};
    use crate::provider::decode::LogKey;

    fn log(provider: u8, block: u64) -> ChainInput {
        let item = LiveItem::Log {
            key: LogKey {
                block_hash: B256::with_last_byte(block as u8),
                block_number: block,
                log_index: 0,
                removed: false,
            },
            raw: RawValue::from_string("{}".to_owned()).unwrap(),
            at: Instant::now(),
        };
        ChainInput::Live(Live {
            provider,
            block,
            items: vec![item],
            burst_end: false,
        })
    }

    fn seen(input: &ChainInput) -> (u8, u64) {
        match input {
            ChainInput::Live(live) => (live.provider, live.block),
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn lowest_block_first_order_kept_within_a_source() {
        let (a_tx, a_rx) = mpsc::channel(16);
        let (b_tx, b_rx) = mpsc::channel(16);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        // Provider 0 is ahead: blocks 10 and 11 queued before provider 1's 7, 8 and 12.
        for n in [10, 11] {
            a_tx.send(log(0, n)).await.unwrap();
        }
        for n in [7, 8, 12] {
            b_tx.send(log(1, n)).await.unwrap();
        }
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(seen(&inputs.recv().await.unwrap()));
        }
        assert_eq!(order, [(1, 7), (1, 8), (0, 10), (0, 11), (1, 12)]);

        // A source's own order is never changed, even when it is not ascending (a reorg).
        a_tx.send(log(0, 20)).await.unwrap();
        a_tx.send(log(0, 5)).await.unwrap();
        assert_eq!(seen(&inputs.recv().await.unwrap()), (0, 20));
        assert_eq!(seen(&inputs.recv().await.unwrap()), (0, 5));

        // Waits for whichever source speaks first; ends when all are closed and drained.
        let later = tokio::spawn(async move {
            tokio::task::yield_now().await;
            b_tx.send(log(1, 30)).await.unwrap();
        });
        assert_eq!(seen(&inputs.recv().await.unwrap()), (1, 30));
        later.await.unwrap();
        drop(a_tx);
        assert!(inputs.recv().await.is_none());
    }

    #[tokio::test]
    async fn lent_queues_go_home_however_the_borrower_ends() {
        let (a_tx, a_rx) = mpsc::channel(16);
        let home: Home = Arc::new(Mutex::new(vec![a_rx]));
        let (own_tx, own_rx) = mpsc::channel(16);
        let mut inputs = Inputs::lend(&home, vec![own_rx]).expect("queues at home");
        assert!(Inputs::lend(&home, Vec::new()).is_none(), "lent twice");
        a_tx.send(log(0, 1)).await.unwrap();
        own_tx.send(log(9, 2)).await.unwrap();
        assert_eq!(seen(&inputs.recv().await.unwrap()), (0, 1));
        drop(inputs);
        assert_eq!(home.lock().unwrap().len(), 1, "the listener queue is back");
        assert!(own_tx.is_closed(), "the run's own queue ended with it");

        // A panicking borrower gives them back too.
        let borrower = tokio::spawn({
            let home = home.clone();
            async move {
                let _inputs = Inputs::lend(&home, Vec::new()).expect("queues at home");
                panic!("an aggregator bug");
            }
        });
        assert!(borrower.await.unwrap_err().is_panic());
        let mut inputs = Inputs::lend(&home, Vec::new()).expect("given back after the panic");
        a_tx.send(log(0, 3)).await.unwrap();
        assert_eq!(seen(&inputs.recv().await.unwrap()), (0, 3));
    }
}
