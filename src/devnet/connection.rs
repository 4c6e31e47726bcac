//! One WebSocket connection: an actor owning the socket and the connection's subscriptions.
//!
//! It selects over four sources: cancellation (shutdown, or a kick from the producer when this
//! client falls behind), the `drop_sockets` fault, requests from the client, and block notices
//! from the producer's bounded queue. Responses and notifications share one writer, this task,
//! so they go out in the order they were decided.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::faults::Faults;
use super::methods::Ctx;
use super::rpc::{self, Session};
use super::state::{ConnHandle, Notice, ProviderState};
use super::subscriptions::SubTable;

/// Notices written before one flush: batching writes into fewer syscalls is most of the
/// throughput, and the bound keeps requests from waiting behind a long backlog.
const MAX_NOTICES_PER_FLUSH: usize = 16;
/// How long a graceful close may take at shutdown before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

type Sink = SplitSink<WebSocket, Message>;

/// Serves one upgraded connection until the client leaves, a fault or shutdown closes it, or
/// the producer kicks it for being too slow.
pub(crate) async fn run(socket: WebSocket, ctx: Ctx, shutdown: CancellationToken) {
    let Some(provider) = ctx.provider_state() else {
        return;
    };
    let (notice_tx, mut notices) = mpsc::channel(ctx.shared.mode.queue_blocks());
    let kick = shutdown.child_token();
    let connection = provider.register(ConnHandle {
        notices: notice_tx,
        kick: kick.clone(),
    });
    let _registration = Registration {
        provider,
        connection,
    };
    let mut cut = Cut {
        kick,
        shutdown,
        drops: provider.faults.drop_signal(),
    };
    let mut subs = SubTable::new(Arc::clone(&ctx.shared), ctx.provider);
    let (mut sink, mut stream) = socket.split();
    let mut sent: u64 = 0;
    tracing::debug!(
        provider = ctx.provider,
        connection,
        "devnet: websocket connected"
    );

    let reason = loop {
        tokio::select! {
            // Cancellation and the drop fault first, so shutdown and "drop now" win over a busy
            // socket; then requests ahead of notices, so an unsubscribe takes effect even while
            // notices flood in.
            biased;
            reason = cut.wait() => break reason,
            incoming = stream.next() => {
                let payload = match incoming {
                    None | Some(Ok(Message::Close(_))) => break "client closed",
                    Some(Err(err)) => {
                        tracing::debug!(provider = ctx.provider, connection, error = %err, "devnet: websocket read failed");
                        break "read error";
                    }
                    Some(Ok(Message::Text(text))) => axum::body::Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    // The protocol layer answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                let response = rpc::handle_payload(&ctx, &mut Session::Ws(&mut subs), &payload).await;
                let Some(response) = response else { continue };
                let latency = provider.faults.latency();
                let reply = async {
                    tokio::time::sleep(latency).await;
                    sink.send(Message::Text(response.into())).await.map_err(|_| "write error")
                };
                if let Err(reason) = cut.unless_cut(reply).await {
                    break reason;
                }
            }
            notice = notices.recv() => {
                let Some(notice) = notice else { break "unregistered" };
                let delivery = Delivery { sink: &mut sink, subs: &subs, faults: &provider.faults, sent: &mut sent };
                if let Err(reason) = cut.unless_cut(delivery.run(notice, &mut notices)).await {
                    break reason;
                }
            }
        }
    };

    if reason == "shutdown" {
        let close = sink.send(Message::Close(Some(CloseFrame {
            code: close_code::AWAY,
            reason: "devnet shutting down".into(),
        })));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
    // Anything else closes abruptly: dropping the socket ends the TCP connection, as a failing
    // provider would.
    tracing::debug!(
        provider = ctx.provider,
        connection,
        reason,
        notifications = sent,
        subscriptions = subs.len(),
        "devnet: websocket closed"
    );
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

/// Writes the notifications of one or more queued blocks, then flushes once.
struct Delivery<'a> {
    sink: &'a mut Sink,
    subs: &'a SubTable,
    faults: &'a Faults,
    sent: &'a mut u64,
}

impl Delivery<'_> {
    async fn run(
        self,
        first: Notice,
        notices: &mut mpsc::Receiver<Notice>,
    ) -> Result<(), &'static str> {
        let mut notice = first;
        for _ in 0..MAX_NOTICES_PER_FLUSH {
            if !self.subs.is_empty() {
                let ready_at = notice.produced_at + self.faults.latency();
                if ready_at > Instant::now() {
                    // Send what is already due before waiting for the next one.
                    self.sink.flush().await.map_err(|_| "write error")?;
                    tokio::time::sleep_until(ready_at).await;
                }
                for message in self.subs.notifications(&notice.block) {
                    if self.drop_limit_reached() {
                        break;
                    }
                    self.sink
                        .feed(Message::Text(message.into()))
                        .await
                        .map_err(|_| "write error")?;
                    *self.sent += 1;
                }
                if self.drop_limit_reached() {
                    // The N-th notification goes out before the connection drops.
                    let _ = self.sink.flush().await;
                    return Err("fault: drop_after_messages");
                }
            }
            match notices.try_recv() {
                Ok(next) => notice = next,
                Err(_) => break,
            }
        }
        self.sink.flush().await.map_err(|_| "write error")
    }

    fn drop_limit_reached(&self) -> bool {
        self.faults
            .drop_after_messages()
            .is_some_and(|limit| *self.sent >= limit)
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
