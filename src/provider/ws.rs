//! JSON-RPC over WebSocket as an actor: a cloneable [`WsClient`] handle sends [`Command`]s to
//! one service task that owns the socket, the pending requests and the ping timer.
//!
//! Subscription notifications of every subscription go to one bounded channel supplied at
//! connect time, a burst at a time: every frame already waiting on the socket is read before
//! what was read goes on, as one message ([`Burst`]), so the hand-over costs one channel
//! operation and one wake-up per burst rather than per notification. The listener maps
//! subscription ids to what it asked for. A full channel stops the socket reads (back-pressure
//! reaches the provider through TCP) rather than growing memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::jsonrpc;
use super::methods::Request;
use super::{ErrorRules, LogFilter, ProviderError, redact};

/// Knobs of one connection.
#[derive(Debug, Clone)]
pub struct WsOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// A ping goes out this often; a connection silent for three intervals is dead.
    pub ping_interval: Duration,
    pub max_message_bytes: usize,
    /// How error objects are classified (the configured `error_rules`).
    pub rules: ErrorRules,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            max_message_bytes: 16 << 20,
            rules: ErrorRules::default(),
        }
    }
}

/// A subscription notification, its result still raw JSON.
#[derive(Debug)]
pub struct Notification {
    pub subscription: String,
    pub result: Box<RawValue>,
    pub received_at: Instant,
    /// Nothing else was waiting on the socket behind it: the provider's burst (a block's head
    /// and logs, written together) has been read whole. A hint, never a promise: a burst split
    /// across TCP segments can end early.
    pub burst_end: bool,
}

/// The notifications read from the socket in one go, in order.
pub type Burst = Vec<Notification>;

/// Frames read back to back before the service task delivers what it read and looks at its
/// commands and ping timer again (the last notification then goes out without `burst_end`).
pub const MAX_BURST: usize = 256;
/// Room for a typical burst (a block's head and logs) without growing.
const BURST_CAPACITY: usize = 64;

enum Command {
    Request {
        method: String,
        params: Box<RawValue>,
        reply: oneshot::Sender<Result<Box<RawValue>, ProviderError>>,
    },
}

/// Handle to one WebSocket connection. Cloning is cheap; the connection lives until
/// [`WsClient::close`], the shutdown token, or a socket failure.
#[derive(Clone)]
pub struct WsClient {
    commands: mpsc::Sender<Command>,
    closed: CancellationToken,
    request_timeout: Duration,
}

impl WsClient {
    /// Connects and starts the service task. Notifications flow into `notifications`.
    pub async fn connect(
        url: &Url,
        options: WsOptions,
        notifications: mpsc::Sender<Burst>,
        shutdown: CancellationToken,
    ) -> Result<WsClient, ProviderError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(options.max_message_bytes))
            .max_frame_size(Some(options.max_message_bytes));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let (socket, _) = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| ProviderError::Timeout(options.connect_timeout))?
            .map_err(|e| ProviderError::Transport(format!("connecting to {}: {e}", redact(url))))?;
        let (commands, rx) = mpsc::channel(256);
        let closed = CancellationToken::new();
        let service = Service {
            socket,
            commands: rx,
            notifications,
            pending: HashMap::new(),
            next_id: 1,
            options: options.clone(),
            burst: Vec::with_capacity(BURST_CAPACITY),
        };
        let done = closed.clone();
        tokio::spawn(async move {
            let reason = service.run(shutdown).await;
            tracing::debug!(reason = %reason, "websocket service stopped");
            done.cancel();
        });
        Ok(WsClient {
            commands,
            closed,
            request_timeout: options.request_timeout,
        })
    }

    /// One call of any method, unread: the raw result, or the error classified.
    pub async fn request(
        &self,
        method: &str,
        params: Box<RawValue>,
    ) -> Result<Box<RawValue>, ProviderError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                method: method.to_owned(),
                params,
                reply,
            })
            .await
            .map_err(|_| ProviderError::Closed)?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProviderError::Closed),
            Err(_) => Err(ProviderError::Timeout(self.request_timeout)),
        }
    }

    /// Subscribes to new heads; returns the subscription id.
    pub async fn subscribe_heads(&self) -> Result<String, ProviderError> {
        self.subscribe(Request::subscribe_heads()?).await
    }

    /// Subscribes to the logs `filter` matches; returns the subscription id.
    pub async fn subscribe_logs(&self, filter: &LogFilter) -> Result<String, ProviderError> {
        self.subscribe(Request::subscribe_logs(filter)?).await
    }

    async fn subscribe(&self, request: Request) -> Result<String, ProviderError> {
        let (method, params) = request.into_parts();
        let raw = self.request(method.as_str(), params).await?;
        jsonrpc::decode::<String>(&raw, "eth_subscribe result")
    }

    /// Ends the subscription `id`; whether the provider knew it.
    pub async fn unsubscribe(&self, id: &str) -> Result<bool, ProviderError> {
        let (method, params) = Request::unsubscribe(id)?.into_parts();
        let raw = self.request(method.as_str(), params).await?;
        jsonrpc::decode::<bool>(&raw, "eth_unsubscribe result")
    }

    /// Resolves when the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Service {
    socket: Socket,
    commands: mpsc::Receiver<Command>,
    notifications: mpsc::Sender<Burst>,
    pending: HashMap<u64, oneshot::Sender<Result<Box<RawValue>, ProviderError>>>,
    next_id: u64,
    options: WsOptions,
    /// The notifications of the burst being read, delivered together at its end.
    burst: Burst,
}

impl Service {
    /// Runs until the socket or the shutdown ends it; returns why.
    async fn run(mut self, shutdown: CancellationToken) -> String {
        let mut ping = tokio::time::interval(self.options.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let reason = loop {
            // Biased: shutdown first so a busy socket cannot delay it; then inbound frames
            // before commands, so responses free their pending slots before new ones pile up.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = self.socket.close(None).await;
                    break "shutdown".to_owned();
                }
                frame = self.socket.next() => {
                    last_heard = Instant::now();
                    if let Err(reason) = self.on_burst(frame).await {
                        break reason;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Request { method, params, reply }) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        let text = jsonrpc::request(id, &method, &params);
                        if let Err(err) = self.socket.send(Message::text(text)).await {
                            let _ = reply.send(Err(ProviderError::Transport(err.to_string())));
                            break format!("send failed: {err}");
                        }
                        self.pending.insert(id, reply);
                    }
                    None => {
                        let _ = self.socket.close(None).await;
                        break "every handle dropped".to_owned();
                    }
                },
                _ = ping.tick() => {
                    // Requests whose caller timed out leave a closed reply behind: drop them.
                    self.pending.retain(|_, reply| !reply.is_closed());
                    if last_heard.elapsed() > self.options.ping_interval * 3 {
                        break "no frame for three ping intervals".to_owned();
                    }
                    if let Err(err) = self.socket.send(Message::Ping(Default::default())).await {
                        break format!("ping failed: {err}");
                    }
                }
            }
        };
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ProviderError::Closed));
        }
        reason
    }

    /// Handles `first` and every frame already waiting behind it, then delivers the burst's
    /// notifications in one message, the last marked [`Notification::burst_end`] (unless the
    /// burst was cut at [`MAX_BURST`]). `Err` ends the connection, with the reason.
    async fn on_burst(&mut self, first: Option<Result<Message, WsError>>) -> Result<(), String> {
        let mut frame = first;
        let mut read = 1;
        loop {
            match frame {
                Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.on_text(text),
                    Err(_) => tracing::warn!("dropping a binary frame that is not UTF-8"),
                },
                Some(Ok(Message::Close(_))) | None => {
                    self.deliver(true).await?;
                    return Err("closed by peer".to_owned());
                }
                Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                Some(Err(err)) => {
                    self.deliver(true).await?;
                    return Err(format!("socket error: {err}"));
                }
            }
            if read == MAX_BURST {
                return self.deliver(false).await;
            }
            // Polled without a waker that matters: on `Pending` the caller's select polls the
            // socket again at once, with its own.
            match self.socket.next().now_or_never() {
                Some(next) => {
                    frame = next;
                    read += 1;
                }
                None => return self.deliver(true).await,
            }
        }
    }

    /// Sends the burst's notifications on, the last marked `burst_end` as told.
    async fn deliver(&mut self, burst_end: bool) -> Result<(), String> {
        let Some(last) = self.burst.last_mut() else {
            return Ok(());
        };
        last.burst_end = burst_end;
        let burst = std::mem::replace(&mut self.burst, Vec::with_capacity(BURST_CAPACITY));
        self.notifications
            .send(burst)
            .await
            .map_err(|_| "notification receiver dropped".to_owned())
    }

    /// Routes one text frame: notifications join the burst, responses go to their callers.
    /// Garbage is logged and dropped.
    fn on_text(&mut self, text: &str) {
        let received_at = Instant::now();
        let parsed = jsonrpc::each_message(text, |message| {
            if message.is_notification() {
                match message.params {
                    Some(params) => self.burst.push(Notification {
                        subscription: params.subscription.into_owned(),
                        result: params.result.to_owned(),
                        received_at,
                        burst_end: false,
                    }),
                    None => tracing::warn!("dropping a subscription notification without params"),
                }
                return;
            }
            match message.numeric_id().and_then(|id| self.pending.remove(&id)) {
                Some(reply) => {
                    let _ = reply.send(message.into_outcome(&self.options.rules));
                }
                None if message.method.is_some() => {} // a notification of another kind
                None => tracing::warn!("dropping a response to no pending request"),
            }
        });
        if let Err(err) = parsed {
            tracing::warn!(error = %err, "dropping a frame that is not JSON-RPC");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::SinkExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_util::sync::CancellationToken;
    use url::Url;

    use super::{Burst, WsClient, WsOptions};

    fn notification(n: u64) -> Message {
        Message::text(format!(
            r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"0x1","result":{n}}}}}"#
        ))
    }

    /// The next burst, each notification as (result, marked).
    async fn next(notes: &mut mpsc::Receiver<Burst>) -> Vec<(String, bool)> {
        let burst = tokio::time::timeout(Duration::from_secs(10), notes.recv())
            .await
            .expect("a burst within 10 s")
            .expect("the connection is open");
        burst
            .into_iter()
            .map(|note| (note.result.get().to_owned(), note.burst_end))
            .collect()
    }

    #[tokio::test]
    async fn the_last_notification_of_a_burst_is_marked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            Url::parse(&format!("ws://{}", listener.local_addr().expect("addr"))).expect("url");
        let (go_on, mut next_burst) = mpsc::channel::<()>(1);
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp)
                .await
                .expect("handshake");
            // A burst: written with one flush, as a provider writes a block's notifications.
            for n in 0..5 {
                ws.feed(notification(n)).await.expect("feed");
            }
            ws.flush().await.expect("flush");
            next_burst.recv().await;
            ws.send(notification(5)).await.expect("send");
            next_burst.recv().await;
        });
        let (tx, mut notes) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let client = WsClient::connect(&url, WsOptions::default(), tx, shutdown.clone())
            .await
            .expect("connect");

        let expected: Vec<(String, bool)> = (0..5).map(|n| (n.to_string(), n == 4)).collect();
        assert_eq!(
            next(&mut notes).await,
            expected,
            "one message, only its last marked"
        );
        go_on.send(()).await.expect("server waiting");
        assert_eq!(
            next(&mut notes).await,
            [("5".to_owned(), true)],
            "a burst of one"
        );

        go_on.send(()).await.expect("server waiting");
        server.await.expect("server");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), client.closed())
            .await
            .expect("closed");
    }
}
