//! The API's accept loop: HTTP/1 and HTTP/2 with upgrades (the WebSocket routes), the caller's
//! address on every request, a header timeout that closes slow and idle clients, and a drain of
//! the connections at shutdown.
//!
//! `axum::serve` runs hyper without a timer, so a client that sends its headers a byte at a
//! time, or opens connections and sends nothing, holds a socket and a task forever; here hyper
//! gets a timer and `server.header_timeout`, which since hyper 1.6 also bounds the idle time
//! between two requests of a keep-alive connection (an upgraded WebSocket is no longer HTTP and
//! is not affected).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
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
    builder
        .http2()
        .timer(TokioTimer::new())
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
    let mut first = [0u8; 1];
    if !matches!(
        tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await,
        Ok(Ok(1..))
    ) {
        metrics::counter!(m::API_TIMEOUTS, "kind" => "header").increment(1);
        tracing::debug!(%peer, "closed a connection that sent nothing in time");
        return;
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The gateway and the access rules know each caller by address.
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request.map(Body::new))
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
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
