//! JSON-RPC over WebSocket as an actor: a cloneable [`WsClient`] handle sends [`Command`]s to
//! one service task that owns the socket, the pending requests and the ping timer.
//!
//! Subscription notifications of every subscription go to one bounded channel supplied at
//! connect time; the listener maps subscription ids to what it asked for. A full channel
//! stops the socket reads (back-pressure reaches the provider through TCP) rather than
//! growing memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::jsonrpc::{self, Incoming};
use super::{ProviderError, redact};

/// Knobs of one connection.
#[derive(Debug, Clone)]
pub struct WsOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// A ping goes out this often; a connection silent for three intervals is dead.
    pub ping_interval: Duration,
    pub max_message_bytes: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            max_message_bytes: 16 << 20,
        }
    }
}

/// A subscription notification, its result still raw JSON.
#[derive(Debug)]
pub struct Notification {
    pub subscription: String,
    pub result: Box<RawValue>,
    pub received_at: Instant,
}

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
        notifications: mpsc::Sender<Notification>,
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

    /// One request; the raw result, or the error classified.
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

    /// `eth_subscribe`; returns the subscription id.
    pub async fn subscribe(&self, params: Box<RawValue>) -> Result<String, ProviderError> {
        let raw = self.request("eth_subscribe", params).await?;
        jsonrpc::decode::<String>(&raw, "eth_subscribe result")
    }

    /// `eth_unsubscribe`; whether the provider knew the id.
    pub async fn unsubscribe(&self, id: &str) -> Result<bool, ProviderError> {
        let raw = self
            .request("eth_unsubscribe", jsonrpc::params(&[id])?)
            .await?;
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
    notifications: mpsc::Sender<Notification>,
    pending: HashMap<u64, oneshot::Sender<Result<Box<RawValue>, ProviderError>>>,
    next_id: u64,
    options: WsOptions,
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
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(reason) = self.on_text(text.as_str()).await {
                                break reason;
                            }
                        }
                        Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                            Ok(text) => {
                                if let Err(reason) = self.on_text(text).await {
                                    break reason;
                                }
                            }
                            Err(_) => tracing::warn!("dropping a binary frame that is not UTF-8"),
                        },
                        Some(Ok(Message::Close(_))) | None => break "closed by peer".to_owned(),
                        Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                        Some(Err(err)) => break format!("socket error: {err}"),
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

    /// Routes one text frame. Garbage is logged and dropped; only a closed notification
    /// channel ends the connection.
    async fn on_text(&mut self, text: &str) -> Result<(), String> {
        let frames = match jsonrpc::parse_frame(text) {
            Ok(frames) => frames,
            Err(err) => {
                tracing::warn!(error = %err, "dropping a frame that is not JSON-RPC");
                return Ok(());
            }
        };
        for frame in frames {
            self.route(frame).await?;
        }
        Ok(())
    }

    async fn route(&mut self, frame: Incoming) -> Result<(), String> {
        if let Some(params) = frame.params {
            if frame.method.as_deref() == Some("eth_subscription") {
                let note = Notification {
                    subscription: params.subscription,
                    result: params.result,
                    received_at: Instant::now(),
                };
                return self
                    .notifications
                    .send(note)
                    .await
                    .map_err(|_| "notification receiver dropped".to_owned());
            }
            return Ok(());
        }
        match frame.numeric_id().and_then(|id| self.pending.remove(&id)) {
            Some(reply) => {
                let _ = reply.send(frame.into_outcome());
            }
            None => tracing::warn!("dropping a response to no pending request"),
        }
        Ok(())
    }
}
