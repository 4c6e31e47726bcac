//! The supervisor end to end: restarts, backoff, panics, stops, critical failures, persistence,
//! restore and shutdown, on a current-thread runtime with millisecond delays.
//!
//! Real time, kept short: the crate does not enable tokio's `test-util`, so `time::pause` is
//! not available. Assertions only use lower bounds on elapsed time (a sleep is never shorter
//! than asked), so a slow machine can make a test slower but not fail it; the exact delay
//! curve is tested without a runtime in `backoff.rs`.
//!
//! `restarts.rs` covers errors, panics, backoff and critical failures; `lifecycle.rs` stop and
//! shutdown; `persistence.rs` the store and restore; `memory.rs` the (ignored) memory check.

mod lifecycle;
mod memory;
mod persistence;
mod restarts;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Delays of 2, 4, 8, ... ms (plus jitter below one more of each), capped under 200 ms.
fn config() -> SupervisorConfig {
    SupervisorConfig {
        backoff: BackoffPolicy {
            min_delay: ms(2),
            max_delay: ms(200),
            stable_after: ms(300),
            jitter_seed: Some(7),
        },
        max_critical_restarts: 5,
        critical_window: Duration::from_secs(60),
        stop_grace: ms(50),
    }
}

/// Delays between 2 and 8 ms, for tests that count many restarts.
fn fast_config() -> SupervisorConfig {
    let mut config = config();
    config.backoff.max_delay = ms(8);
    config
}

async fn start(config: SupervisorConfig) -> (Supervisor, Arc<MemoryProcessStore>) {
    let store = Arc::new(MemoryProcessStore::new());
    let supervisor = Supervisor::start(config, store.clone(), &CancellationToken::new())
        .await
        .unwrap();
    (supervisor, store)
}

fn key(kind: &'static str, id: &str) -> ProcessKey {
    ProcessKey::new(kind, id)
}

type Run = BoxFuture<'static, Result<(), TaskError>>;

/// A factory whose every run reports its start on `starts`, then does what `body(n)` says for
/// the `n`-th run (from 0).
fn counted(
    starts: mpsc::UnboundedSender<Instant>,
    body: impl Fn(usize, CancellationToken) -> Run + Send + Sync + 'static,
) -> impl Fn(CancellationToken) -> Run + Send + Sync + 'static {
    let calls = AtomicUsize::new(0);
    move |token| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let _ = starts.send(Instant::now());
        body(n, token)
    }
}

fn fail() -> Run {
    Box::pin(async { Err(TaskError::new("boom")) })
}

/// Runs until cancelled, then returns cleanly.
fn idle(token: CancellationToken) -> Run {
    Box::pin(async move {
        token.cancelled().await;
        Ok(())
    })
}

/// The next `n` run starts, or a panic after 5 s.
async fn starts(rx: &mut mpsc::UnboundedReceiver<Instant>, n: usize) -> Vec<Instant> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        seen.push(
            next.expect("run did not start in time")
                .expect("factory dropped"),
        );
    }
    seen
}

/// Polls `done` every millisecond for at most 5 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..5_000 {
        if done() {
            return;
        }
        tokio::time::sleep(ms(1)).await;
    }
    panic!("timed out waiting for {what}");
}

/// What the test's tracing subscriber wrote. The supervisor logs every restart with the
/// delay it chose, which lets the tests check its decisions without timing them.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

/// Keeps a [`Logs`] capture installed on this thread.
struct Capture {
    _default: tracing::subscriber::DefaultGuard,
    _second: tracing::Dispatch,
}

impl Logs {
    /// Captures this thread's events; on a current-thread runtime that is every task's.
    fn capture() -> (Logs, Capture) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let default = tracing::subscriber::set_default(subscriber);
        // While only one dispatcher exists, tracing-core caches a callsite's interest from the
        // subscriber of whichever thread hits it first: a parallel test (no subscriber)
        // reaching the supervisor's `warn!` first would silence it here. A second live
        // dispatcher makes the cache ask every dispatcher instead.
        let second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let capture = Capture {
            _default: default,
            _second: second,
        };
        (logs, capture)
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The `delay_ms` of every restart logged so far, in order.
    fn delays(&self) -> Vec<Duration> {
        let text = self.text();
        let fields = text.split_whitespace();
        let delays = fields.filter_map(|field| field.strip_prefix("delay_ms="));
        delays
            .map(|ms| Duration::from_millis(ms.parse().unwrap()))
            .collect()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The first `n` delays of `config`'s curve, computed without a supervisor, in whole
/// milliseconds as logged.
fn curve(config: &SupervisorConfig, n: usize) -> Vec<Duration> {
    let mut backoff = super::backoff::RestartBackoff::new(config.backoff);
    let delays = (0..n).map(|_| backoff.next_delay(Duration::ZERO));
    delays
        .map(|d| ms(u64::try_from(d.as_millis()).unwrap()))
        .collect()
}
