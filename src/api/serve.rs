//! The API's accept loop: HTTP/1 and HTTP/2 with upgrades (the WebSocket routes), the caller's
//! address on every request, a header timeout that closes slow and idle clients, and a drain of
//! the connections at shutdown.
//!
//! `axum::serve` runs hyper without a timer, so a client that sends its headers a byte at a
//! time, or opens connections and sends nothing, holds a socket and a task forever; here hyper
//! gets a timer and `server.header_timeout`, which since hyper 1.6 also bounds the idle time
//! between two requests of a keep-alive connection (an upgraded WebSocket is no longer HTTP and
//! is not affected). hyper's HTTP/2 has no such limit: an HTTP/2 connection with no request in
//! flight for the same time is sent a GOAWAY here (which tells the client which requests it
//! may retry elsewhere, where closing an idle HTTP/1 connection races a request the client is
//! sending), and dropped if the peer does not close in turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::telemetry::metrics as m;

/// Serves `router` on `listener` until `shutdown` fires, then waits for the requests in flight
/// (each connection is told to finish its current request and close).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // CONNECT protocol: WebSocket over HTTP/2.
    // Pings find a peer that vanished while a request was in flight.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout)
        .enable_connect_protocol();
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was taken: wait
                    // a little rather than spin, and go on.
                    tracing::warn!(error = %err, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            builder.clone(),
            header_timeout,
            tcp,
            peer,
            router.clone(),
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, from its first byte to its close.
async fn connection(
    builder: Builder<TokioExecutor>,
    header_timeout: Duration,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    // Without TCP_NODELAY a stream frame written after a partial one waits for the client's
    // delayed ACK (40 ms on Linux): the live tail's bursts go out as soon as they are written.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "setting TCP_NODELAY on an API connection failed");
    }
    // hyper's header timeout starts once it knows the protocol, which takes the first bytes:
    // a connection that sends none is closed here.
    let Ok(Some(http2)) = tokio::time::timeout(header_timeout, is_http2(&tcp)).await else {
        metrics::counter!(m::API_TIMEOUTS, "kind" => "header").increment(1);
        tracing::debug!(%peer, "closed a connection that sent nothing in time");
        return;
    };
    // Only HTTP/2 connections are watched for idleness: HTTP/1 answers go out unwrapped.
    let (activity, watching) = watch::channel(Activity::default());
    let activity = http2.then(|| Arc::new(activity));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let tunnel = request.method() == hyper::Method::CONNECT;
        let in_flight = activity.as_ref().map(|a| InFlight::start(a, tunnel));
        // The gateway and the access rules know each caller by address.
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().oneshot(request.map(Body::new));
        async move {
            let answer = answer.await?;
            Ok::<_, std::convert::Infallible>(match in_flight {
                Some(in_flight) => answer.map(|body| {
                    Body::new(Sending {
                        body,
                        _in_flight: in_flight,
                    })
                }),
                None => answer,
            })
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = idle(watching, header_timeout), if http2 => {
            metrics::counter!(m::API_TIMEOUTS, "kind" => "idle").increment(1);
            tracing::debug!(%peer, "closing a connection idle for server.header_timeout");
            conn.as_mut().graceful_shutdown();
            // An HTTP/2 peer that never acknowledges the GOAWAY's ping is dropped.
            tokio::time::timeout(header_timeout, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(err) = result {
        let timed_out = err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            metrics::counter!(m::API_TIMEOUTS, "kind" => "header").increment(1);
            tracing::debug!(%peer, "closed a connection that sent no complete request headers in time");
        } else {
            tracing::trace!(%peer, error = %err, "an API connection ended with an error");
        }
    }
}

/// Whether the connection opens with HTTP/2's preface (prior knowledge, RFC 9113 §3.4) rather
/// than an HTTP/1 request line: read without consuming, once its first three bytes are in.
/// `None` if it closes first.
async fn is_http2(tcp: &TcpStream) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI";
    let mut first = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut first).await.ok().filter(|n| *n > 0)?;
        if n == first.len() || !PREFACE.starts_with(&first[..n]) {
            return Some(first[..n] == *PREFACE);
        }
        // "P" or "PR": POST, PUT and PATCH start so too; peek answers at once with what is
        // there, so wait a little for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What one connection is doing, watched to close it once idle (every change restarts the idle
/// time).
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    /// Requests whose answer is not yet sent.
    in_flight: usize,
    /// A request opened a tunnel (a WebSocket over HTTP/2): the tunnel's own timeouts govern
    /// the connection from then on.
    tunnel: bool,
}

/// One request in flight; its drop (its answer sent, or the request cancelled) counts it out.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>, tunnel: bool) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.tunnel |= tunnel;
        });
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

/// Resolves once the connection has had no request in flight for `limit`; never while it
/// carries a tunnel.
async fn idle(mut watching: watch::Receiver<Activity>, limit: Duration) {
    loop {
        let now = *watching.borrow_and_update();
        if now.tunnel {
            return std::future::pending().await;
        }
        let changed = if now.in_flight > 0 {
            Ok(watching.changed().await)
        } else {
            tokio::time::timeout(limit, watching.changed()).await
        };
        match changed {
            Err(_) => return,
            Ok(Ok(())) => {}
            // The connection's side is gone: it is closing anyway.
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

/// An answer's body on its way out, holding its request in flight until the last byte is sent
/// (or the peer goes): a slow download is not an idle connection.
struct Sending {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Sending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
