//! A TCP fault proxy for the integration tests: faults below JSON-RPC, on the byte stream
//! between the service and a devnet provider (whose HTTP and WebSocket share one port).
//!
//! [`FaultProxy`] forwards every connection to its upstream and applies the [`Faults`] in force,
//! switchable at runtime: latency per chunk, a bandwidth limit, a blackhole (sockets stay open,
//! nothing passes: a half-open connection), a reset (RST) in the middle of an answer, and
//! cutting every open connection. [`silent_listener`] is a provider that accepts TCP and never
//! answers. Only 127.0.0.1 is listened on or connected to; everything stops on drop.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Largest chunk read and passed on at once.
const CHUNK: usize = 16 * 1024;

/// The faults in force; [`FaultProxy::set`] changes them, [`Faults::default`] is none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Waited before each chunk is passed on, either way (chunks of a direction queue up).
    pub latency: Duration,
    /// Upstream→client bytes per second; 0 is unlimited.
    pub bytes_per_sec: u64,
    /// Nothing passes either way, not even a close; sockets stay open and new ones are accepted.
    pub blackhole: bool,
    /// Answers to reset: the next this many whose size (upstream bytes since the client last
    /// sent) passes [`Faults::reset_after`] get that many bytes, then a RST.
    pub reset_answers: u64,
    /// Bytes of an answer passed on before its reset.
    pub reset_after: u64,
}

/// What the connection tasks share with the handle.
struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Every connection ends (RST) when this is cancelled; [`FaultProxy::cut`] replaces it.
    generation: Mutex<CancellationToken>,
    stop: CancellationToken,
    accepted: AtomicU64,
    to_client: AtomicU64,
    resets: AtomicU64,
}

impl Shared {
    /// Takes one of the answers to reset, if any is left.
    fn take_reset(&self) -> bool {
        let taken = self.faults.send_if_modified(|f| {
            let left = f.reset_answers > 0;
            f.reset_answers = f.reset_answers.saturating_sub(1);
            left
        });
        if taken {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }
}

/// A proxy on 127.0.0.1 in front of one upstream; stopped, every connection with it, on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl FaultProxy {
    /// Listens on an ephemeral port of 127.0.0.1, forwarding to `upstream` (a 127.0.0.1 port).
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only targets 127.0.0.1"
        );
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            upstream,
            faults: watch::Sender::new(Faults::default()),
            generation: Mutex::new(stop.child_token()),
            stop: stop.clone(),
            accepted: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        tokio::spawn(accept(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            _stop: stop.drop_guard(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Changes the faults in force; connections already open follow at their next chunk.
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        self.shared.faults.send_modify(change);
    }

    /// Lifts every fault.
    pub fn clear(&self) {
        self.shared.faults.send_replace(Faults::default());
    }

    /// Ends every connection open now with a RST; later ones are served as usual.
    pub fn cut(&self) {
        let mut generation = self.shared.generation.lock().expect("not poisoned");
        generation.cancel();
        *generation = self.shared.stop.child_token();
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Upstream bytes passed on to clients since start.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::Relaxed)
    }

    /// Answers reset in their middle since start.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = client else {
            // A failed accept (the peer gave up already): not worth a busy loop either.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let cut = shared.generation.lock().expect("not poisoned").clone();
        tokio::spawn(connection(client, shared.clone(), cut));
    }
}

/// How one direction of a connection ended short of a clean end of stream.
enum End {
    /// A socket failed: the connection is closed as it is.
    Broken,
    /// An answer is to be reset: the client's socket is closed with a RST.
    Reset,
}

/// Forwards one connection both ways until both ends close, a socket fails, a reset is due or
/// the connection is cut.
async fn connection(mut client: TcpStream, shared: Arc<Shared>, cut: CancellationToken) {
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        return; // the client sees its connection closed, as a dead upstream would show
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let pumps = Pumps {
        shared: &shared,
        answer: AtomicU64::new(0),
    };
    let reset = {
        let (mut from_client, mut to_client) = client.split();
        let (mut from_upstream, mut to_upstream) = upstream.split();
        let up = pumps.pump(Way::Up, &mut from_client, &mut to_upstream);
        let down = pumps.pump(Way::Down, &mut from_upstream, &mut to_client);
        tokio::select! {
            _ = cut.cancelled() => true,
            ended = async { tokio::try_join!(up, down) } => matches!(ended, Err(End::Reset)),
        }
    };
    if reset {
        // Zero linger: closing sends a RST instead of a FIN, and the client reads an error.
        let _ = client.set_zero_linger();
    }
}

/// Which way a pump passes bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Client → upstream: each chunk starts a new answer.
    Up,
    /// Upstream → client: throttled, counted into the answer, reset when due.
    Down,
}

/// What the two pumps of a connection share.
struct Pumps<'a> {
    shared: &'a Shared,
    /// Upstream bytes since the client last sent anything: the size of the answer in flight.
    answer: AtomicU64,
}

impl Pumps<'_> {
    /// Passes chunks `from` → `to` under the faults in force.
    async fn pump(
        &self,
        way: Way,
        from: &mut ReadHalf<'_>,
        to: &mut WriteHalf<'_>,
    ) -> Result<(), End> {
        let mut faults = self.shared.faults.subscribe();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await.map_err(|_| End::Broken)?;
            // Nothing passes while blackholed, the end of the stream neither.
            let now = *faults
                .wait_for(|f| !f.blackhole)
                .await
                .map_err(|_| End::Broken)?;
            if n == 0 {
                let _ = to.shutdown().await;
                return Ok(());
            }
            if !now.latency.is_zero() {
                tokio::time::sleep(now.latency).await;
            }
            if way == Way::Up {
                self.answer.store(0, Ordering::Relaxed);
                to.write_all(&buf[..n]).await.map_err(|_| End::Broken)?;
                continue;
            }
            let before = self.answer.fetch_add(n as u64, Ordering::Relaxed);
            let due = now.reset_answers > 0
                && before + n as u64 > now.reset_after
                && self.shared.take_reset();
            let keep = if due {
                usize::try_from(now.reset_after.saturating_sub(before)).map_or(n, |k| k.min(n))
            } else {
                n
            };
            throttled_write(to, &buf[..keep], now.bytes_per_sec, self.shared).await?;
            if due {
                return Err(End::Reset);
            }
        }
    }
}

/// Writes `bytes` to the client at most `per_sec` bytes a second (0: at once), in slices of a
/// twentieth of a second's worth.
async fn throttled_write(
    to: &mut WriteHalf<'_>,
    bytes: &[u8],
    per_sec: u64,
    shared: &Shared,
) -> Result<(), End> {
    let slice = if per_sec == 0 {
        bytes.len().max(1)
    } else {
        usize::try_from(per_sec / 20).unwrap_or(usize::MAX).max(1)
    };
    for part in bytes.chunks(slice) {
        // Counted first: a client that read the bytes finds them counted.
        shared
            .to_client
            .fetch_add(part.len() as u64, Ordering::Relaxed);
        to.write_all(part).await.map_err(|_| End::Broken)?;
        if per_sec > 0 {
            let secs = part.len() as f64 / per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
    }
    Ok(())
}

/// A provider that accepts TCP connections and never reads or answers (a TLS-less endpoint
/// stuck before its first byte); the connections stay open until it drops.
pub struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl Silent {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted (and held) since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Starts a [`Silent`] listener on an ephemeral port of 127.0.0.1.
pub async fn silent_listener() -> Silent {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind the silent listener");
    let addr = listener.local_addr().expect("its address");
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (count, until) = (accepted.clone(), stop.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = until.cancelled() => return,
                next = listener.accept() => if let Ok((socket, _)) = next {
                    count.fetch_add(1, Ordering::Relaxed);
                    held.push(socket);
                },
            }
        }
    });
    Silent {
        addr,
        accepted,
        _stop: stop.drop_guard(),
    }
}
