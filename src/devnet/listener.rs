//! A provider port's accept loop and per-socket wrapper, through which the refuse-connections
//! fault closes new sockets at once and cuts the ones it let in before.
//!
//! WebSocket connections are also closed actively (the fault drops them like `drop_sockets`);
//! the wrapper is what cuts idle HTTP keep-alive connections, which no task owns between
//! requests: their next read or write fails, as on a provider that went away.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::faults::Faults;
use super::state::Shared;

/// The listener of provider `provider`.
pub(crate) struct FaultListener {
    inner: TcpListener,
    shared: Arc<Shared>,
    provider: usize,
}

impl FaultListener {
    pub(crate) fn new(inner: TcpListener, shared: Arc<Shared>, provider: usize) -> Self {
        Self {
            inner,
            shared,
            provider,
        }
    }
}

impl Listener for FaultListener {
    type Io = FaultStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultStream, SocketAddr) {
        loop {
            // axum's own accept loop: it logs and backs off on errors such as EMFILE.
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            let faults = faults(&self.shared, self.provider);
            if faults.is_some_and(Faults::refuses_connections) {
                tracing::trace!(provider = self.provider, %addr, "devnet: connection refused");
                drop(stream);
                continue;
            }
            // Notifications are small writes: without TCP_NODELAY, Nagle's algorithm would
            // hold them back behind unacknowledged ones and add tens of milliseconds.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "devnet: cannot set TCP_NODELAY");
            }
            let epoch = faults.map_or(0, Faults::socket_epoch);
            let stream = FaultStream {
                inner: stream,
                shared: Arc::clone(&self.shared),
                provider: self.provider,
                epoch,
            };
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted socket that fails every read and write once its provider starts refusing.
pub(crate) struct FaultStream {
    inner: TcpStream,
    shared: Arc<Shared>,
    provider: usize,
    /// The provider's socket epoch when this socket was accepted.
    epoch: u64,
}

impl FaultStream {
    fn check(&self) -> io::Result<()> {
        let faults = faults(&self.shared, self.provider);
        if faults.is_some_and(|f| f.socket_epoch() != self.epoch) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "devnet: provider refuses connections",
            ));
        }
        Ok(())
    }
}

fn faults(shared: &Shared, provider: usize) -> Option<&Faults> {
    shared.providers.get(provider).map(|p| &p.faults)
}

impl AsyncRead for FaultStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
