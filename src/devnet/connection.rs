//! One WebSocket connection: an actor owning the socket, the connection's subscriptions and its
//! [`Feed`] (its position in the chain).
//!
//! It selects over four sources: cancellation (shutdown, or a kick from the producer when this
//! client falls behind), the `drop_sockets` fault, requests from the client, and head notices
//! from the producer's bounded queue. Responses and notifications share one writer, this task,
//! so they go out in the order they were decided. Faults that shape the stream are applied
//! here: latency, stalls (read and drop, send nothing), lag, garbage frames, drop after N.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::faults::Faults;
use super::feed::Feed;
use super::garbage;
use super::methods::Ctx;
use super::rpc::{self, Session};
use super::state::{ConnHandle, Notice, ProviderState};
use super::subscriptions::SubTable;

/// Notices handled before one flush: batching writes into fewer syscalls is most of the
/// throughput, and the bound keeps requests from waiting behind a long backlog.
const MAX_NOTICES_PER_FLUSH: usize = 16;
/// Feed steps per notice: enough to catch up a lag of thousands of blocks at once, and a
/// bound on the work one notice can cause.
const MAX_STEPS_PER_NOTICE: usize = 64;
/// How long a graceful close may take at shutdown before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

type Sink = SplitSink<WebSocket, Message>;

/// Serves one upgraded connection until the client leaves, a fault or shutdown closes it, or
/// the producer kicks it for being too slow.
pub(crate) async fn run(socket: WebSocket, ctx: Ctx, shutdown: CancellationToken) {
    let Some(provider) = ctx.provider_state() else {
        return;
    };
    let (notice_tx, notices) = mpsc::channel(ctx.shared.mode.queue_blocks());
    let kick = shutdown.child_token();
    let connection = provider.register(ConnHandle {
        notices: notice_tx,
        kick: kick.clone(),
    });
    let _registration = Registration {
        provider,
        connection,
    };
    let (sink, mut stream) = socket.split();
    let mut conn = Conn {
        ctx: &ctx,
        provider,
        connection,
        cut: Cut {
            kick,
            shutdown,
            drops: provider.faults.drop_signal(),
        },
        notices,
        subs: SubTable::new(Arc::clone(&ctx.shared), ctx.provider),
        feed: Feed::default(),
        writer: Writer::new(sink, &provider.faults),
    };
    tracing::debug!(
        provider = ctx.provider,
        connection,
        "devnet: websocket connected"
    );

    let reason = loop {
        let outcome = tokio::select! {
            // Cancellation and the drop fault first, so shutdown and "drop now" win over a busy
            // socket; then requests ahead of notices, so an unsubscribe takes effect even while
            // notices flood in.
            biased;
            reason = conn.cut.wait() => Err(reason),
            incoming = stream.next() => conn.on_frame(incoming).await,
            notice = conn.notices.recv() => conn.on_notice(notice).await,
        };
        if let Err(reason) = outcome {
            break reason;
        }
    };
    conn.close(reason).await;
}

/// What one connection owns while it runs; each handler returns `Err(reason)` when the
/// connection must end.
struct Conn<'a> {
    ctx: &'a Ctx,
    provider: &'a ProviderState,
    /// The id the provider registered this connection under, for logs.
    connection: u64,
    cut: Cut,
    notices: mpsc::Receiver<Notice>,
    subs: SubTable,
    feed: Feed,
    writer: Writer<'a>,
}

impl Conn<'_> {
    /// One frame (or the end of the stream) from the client.
    async fn on_frame(
        &mut self,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Result<(), &'static str> {
        let payload = match incoming {
            None | Some(Ok(Message::Close(_))) => return Err("client closed"),
            Some(Err(err)) => {
                tracing::debug!(provider = self.ctx.provider, connection = self.connection, error = %err, "devnet: websocket read failed");
                return Err("read error");
            }
            Some(Ok(Message::Text(text))) => axum::body::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            // The protocol layer answers pings itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
        };
        self.on_request(&payload).await
    }

    /// Runs one JSON-RPC payload and answers it after the latency fault, unless stalled.
    async fn on_request(&mut self, payload: &[u8]) -> Result<(), &'static str> {
        if self.provider.faults.is_stalled() {
            // A stuck node: the request is neither run nor answered.
            tracing::trace!(
                provider = self.ctx.provider,
                connection = self.connection,
                "devnet: stalled; request dropped"
            );
            return Ok(());
        }
        let response =
            rpc::handle_payload(self.ctx, &mut Session::Ws(&mut self.subs), payload).await;
        self.feed.follow(self.subs.first_block());
        let Some(response) = response else {
            return Ok(());
        };
        let latency = self.provider.faults.latency();
        let hint = self.subs.first_id();
        let writer = &mut self.writer;
        let reply = async {
            tokio::time::sleep(latency).await;
            writer.write(response, hint.as_deref()).await?;
            writer.flush().await
        };
        self.cut.unless_cut(reply).await
    }

    /// A head notice from the producer (`None`: the provider unregistered this connection).
    async fn on_notice(&mut self, notice: Option<Notice>) -> Result<(), &'static str> {
        let Some(notice) = notice else {
            return Err("unregistered");
        };
        let delivery = Delivery {
            writer: &mut self.writer,
            subs: &mut self.subs,
            feed: &mut self.feed,
            ctx: self.ctx,
        };
        self.cut
            .unless_cut(delivery.run(notice, &mut self.notices))
            .await
    }

    /// Closes gracefully at shutdown; anything else closes abruptly: dropping the socket ends
    /// the TCP connection, as a failing provider would.
    async fn close(mut self, reason: &'static str) {
        if reason == "shutdown" {
            let close = self.writer.sink.send(Message::Close(Some(CloseFrame {
                code: close_code::AWAY,
                reason: "devnet shutting down".into(),
            })));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
        }
        tracing::debug!(
            provider = self.ctx.provider,
            connection = self.connection,
            reason,
            notifications = self.writer.notifications,
            subscriptions = self.subs.len(),
            "devnet: websocket closed"
        );
    }
}

/// Unregisters the connection from its provider however the task ends.
struct Registration<'a> {
    provider: &'a ProviderState,
    connection: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.provider.unregister(self.connection);
    }
}

/// The connection's only writer: counts messages, inserts garbage frames, enforces the
/// drop-after-N fault.
struct Writer<'a> {
    sink: Sink,
    faults: &'a Faults,
    /// Messages written (responses and notifications, not garbage), for the garbage fault.
    messages: u64,
    /// Notifications written, for the drop-after-N fault.
    notifications: u64,
}

impl<'a> Writer<'a> {
    fn new(sink: Sink, faults: &'a Faults) -> Self {
        Self {
            sink,
            faults,
            messages: 0,
            notifications: 0,
        }
    }

    /// Queues one message (unflushed), after a garbage frame when one is due.
    async fn write(
        &mut self,
        text: String,
        subscription: Option<&str>,
    ) -> Result<(), &'static str> {
        self.messages += 1;
        if let Some(every) = self.faults.garbage_every()
            && self.messages.is_multiple_of(every)
        {
            let kind = self.faults.garbage_kind(self.messages);
            let frame = garbage::frame(kind, &text, subscription);
            self.feed(frame).await?;
        }
        self.feed(text).await
    }

    /// Queues one notification, unless the drop-after-N fault says the connection is done.
    async fn notify(
        &mut self,
        text: String,
        subscription: Option<&str>,
    ) -> Result<(), &'static str> {
        self.check_drop_limit().await?;
        self.write(text, subscription).await?;
        self.notifications += 1;
        // The N-th notification goes out before the connection drops.
        self.check_drop_limit().await
    }

    async fn check_drop_limit(&mut self) -> Result<(), &'static str> {
        if self
            .faults
            .drop_after_messages()
            .is_some_and(|limit| self.notifications >= limit)
        {
            let _ = self.sink.flush().await;
            return Err("fault: drop_after_messages");
        }
        Ok(())
    }

    async fn feed(&mut self, text: String) -> Result<(), &'static str> {
        self.sink
            .feed(Message::Text(text.into()))
            .await
            .map_err(|_| "write error")
    }

    async fn flush(&mut self) -> Result<(), &'static str> {
        self.sink.flush().await.map_err(|_| "write error")
    }
}

/// Delivers what one or more queued notices call for, then flushes once.
struct Delivery<'a, 'w> {
    writer: &'a mut Writer<'w>,
    subs: &'a mut SubTable,
    feed: &'a mut Feed,
    ctx: &'a Ctx,
}

impl Delivery<'_, '_> {
    async fn run(
        mut self,
        first: Notice,
        notices: &mut mpsc::Receiver<Notice>,
    ) -> Result<(), &'static str> {
        let mut notice = first;
        for _ in 0..MAX_NOTICES_PER_FLUSH {
            self.deliver(&notice).await?;
            match notices.try_recv() {
                Ok(next) => notice = next,
                Err(_) => break,
            }
        }
        self.writer.flush().await
    }

    /// Everything up to this provider's view of the head the notice announces.
    async fn deliver(&mut self, notice: &Notice) -> Result<(), &'static str> {
        let faults = self.writer.faults;
        let target = notice.block.number().saturating_sub(faults.lag_blocks());
        if faults.is_stalled() {
            self.feed.skip_to(target);
            return Ok(());
        }
        let chain = &self.ctx.shared.chain;
        for _ in 0..MAX_STEPS_PER_NOTICE {
            let step = self.feed.step(chain, target, &notice.block);
            if step.is_empty() {
                break;
            }
            if let (Some(highest), Some(lowest)) = (step.orphaned.first(), step.orphaned.last()) {
                let (highest, lowest) = (highest.number(), lowest.number());
                tracing::debug!(
                    provider = self.ctx.provider,
                    orphaned = step.orphaned.len(),
                    from = lowest,
                    "devnet: connection follows a reorg"
                );
                if self.ctx.shared.sends_removed_logs() {
                    let subscription = self.subs.first_id();
                    for message in self.subs.removed(&step.orphaned) {
                        self.writer.notify(message, subscription.as_deref()).await?;
                    }
                }
                self.subs.rewind(lowest, highest);
            }
            if step.blocks.is_empty() {
                continue;
            }
            let ready_at = notice.produced_at + faults.latency();
            if ready_at > Instant::now() {
                // Send what is already due before waiting for the next one.
                self.writer.flush().await?;
                tokio::time::sleep_until(ready_at).await;
            }
            let subscription = self.subs.first_id();
            for block in &step.blocks {
                for message in self.subs.notifications(block) {
                    self.writer.notify(message, subscription.as_deref()).await?;
                }
            }
        }
        Ok(())
    }
}

/// What can end a connection from outside: shutdown, a kick from the producer, the
/// `drop_sockets` fault. Every write is raced against it, so a client that stopped reading
/// cannot pin the connection in a blocked write.
struct Cut {
    kick: CancellationToken,
    shutdown: CancellationToken,
    drops: watch::Receiver<u64>,
}

impl Cut {
    /// Resolves when the connection must end, with the reason.
    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            biased;
            () = self.kick.cancelled() => {
                if self.shutdown.is_cancelled() { "shutdown" } else { "too slow" }
            }
            // `Err` would mean the faults were dropped, impossible while the connection holds
            // the devnet; the branch would then be disabled and only the kick could end it.
            Ok(()) = self.drops.changed() => "fault: drop_sockets",
        }
    }

    /// Runs `work` unless the connection is cut first.
    async fn unless_cut<F>(&mut self, work: F) -> Result<(), &'static str>
    where
        F: Future<Output = Result<(), &'static str>>,
    {
        tokio::select! {
            biased;
            reason = self.wait() => Err(reason),
            outcome = work => outcome,
        }
    }
}
