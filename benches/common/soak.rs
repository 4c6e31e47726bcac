//! The soak's client pool: `/v1/stream` clients that connect, read for a random while, drop
//! (a clean close or just the socket), pause and resume with `since`, each span of events they
//! received compared with what the database holds for their filter as soon as it ends
//! (before retention prunes it). Used by `benches/soak.rs`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::tail::{CHAIN, STEP_TIMEOUT};

/// Clients taking the whole chain (`chain=…`); the others filter on one contract each.
pub const UNFILTERED: usize = 2;
/// Every this many clients, one asks for `batch=true` (several messages per frame).
const BATCH_EVERY: usize = 4;
/// A fresh start (no `since`: from the end of the feed) instead of a resume, one time in this.
const FRESH_ONE_IN: u32 = 10;
/// `/v1/events` page size for the comparison, the API's largest.
const PAGE: usize = 1000;
/// Notable lines (mismatches, errors) kept for the report; the counters count them all.
const KEPT_NOTES: usize = 20;

/// How long sessions read and clients pause, drawn uniformly from these ranges.
#[derive(Clone)]
pub struct Pace {
    pub filtered_read: Range<Duration>,
    /// Shorter: an unfiltered span is the whole feed, and its comparison pages all of it.
    pub unfiltered_read: Range<Duration>,
    pub pause: Range<Duration>,
}

/// What the pool did, counted as it goes (read by the minute samples and the summary).
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub sessions: AtomicU64,
    pub fresh_starts: AtomicU64,
    pub clean_closes: AtomicU64,
    pub abrupt_drops: AtomicU64,
    pub connect_failures: AtomicU64,
    pub events_received: AtomicU64,
    pub spans_verified: AtomicU64,
    /// Spans whose start retention had already pruned when compared (`410`): not compared.
    pub spans_expired: AtomicU64,
    pub events_compared: AtomicU64,
    pub mismatches: AtomicU64,
    pub lagged: AtomicU64,
    /// `error` messages, server closes the client did not ask for, and failed comparisons.
    pub unexpected: AtomicU64,
    /// Sessions told `cursor_expired` with an `oldest_cursor` above everything they received: a
    /// replay slower than the inflow, overtaken by pruning, told so rather than handed a gap
    /// (the documented outcome; the next session starts afresh).
    pub overtaken: AtomicU64,
    pub removed: AtomicU64,
    notes: Mutex<Vec<String>>,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Keeps `line` for the report (the first [`KEPT_NOTES`]) and prints it now.
    fn note(&self, line: String) {
        eprintln!("soak: {line}");
        if let Ok(mut notes) = self.notes.lock()
            && notes.len() < KEPT_NOTES
        {
            notes.push(line);
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// The pool's shared setup.
pub struct Pool {
    pub counters: Arc<Counters>,
    stop: CancellationToken,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

struct Ctx {
    api: String,
    http: reqwest::Client,
    pace: Pace,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

/// One client's subscription: the same filter for its stream and its `/v1/events` pages.
struct Spec {
    /// `chain=…` or `address=0x…`.
    filter: String,
    batch: bool,
    unfiltered: bool,
}

impl Pool {
    /// Starts `clients` clients against the service at `api` (`http://…`): the first
    /// [`UNFILTERED`] take the whole chain, the others one of `contracts` each, round robin.
    pub fn start(
        api: &str,
        contracts: &[String],
        clients: usize,
        pace: Pace,
        seed: u64,
    ) -> anyhow::Result<Pool> {
        let http = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .no_proxy()
            .build()?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            api: api.to_owned(),
            http,
            pace,
            counters: counters.clone(),
            stop: stop.clone(),
        });
        let mut handles = Vec::with_capacity(clients);
        for i in 0..clients {
            let filter = if i < UNFILTERED || contracts.is_empty() {
                format!("chain={CHAIN}")
            } else {
                format!("address={}", contracts[(i - UNFILTERED) % contracts.len()])
            };
            let spec = Spec {
                unfiltered: filter.starts_with("chain="),
                filter,
                batch: i % BATCH_EVERY == 1,
            };
            let rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            handles.push(tokio::spawn(client(ctx.clone(), spec, rng)));
        }
        Ok(Pool {
            counters,
            stop,
            clients: handles,
        })
    }

    /// Ends every session (each verifies its last span) and waits up to `limit` for them.
    pub async fn finish(self, limit: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        let all = futures_util::future::join_all(self.clients);
        match tokio::time::timeout(limit, all).await {
            Ok(done) => {
                for outcome in done {
                    outcome.context("a soak client panicked")?;
                }
                Ok(())
            }
            Err(_) => bail!("the soak clients did not finish within {limit:?}"),
        }
    }
}

/// Where the next session starts.
#[derive(Clone, Copy)]
enum Start {
    /// No `since`: from the current end of the feed; the span starts at the first event.
    Fresh,
    /// `since` this cursor; `verified_to`: every matching event up to it was compared.
    Resume { since: i64, verified_to: i64 },
}

/// One client: sessions one after another until the pool stops, each verified as it ends.
async fn client(ctx: Arc<Ctx>, spec: Spec, mut rng: StdRng) {
    let mut start = Start::Fresh;
    // Bounded by the stop token; the count is a backstop against a loop that never waits.
    for _ in 0..1_000_000u32 {
        if ctx.stop.is_cancelled() {
            return;
        }
        if let Start::Resume { .. } = start
            && rng.random_ratio(1, FRESH_ONE_IN)
        {
            start = Start::Fresh;
        }
        let read = if spec.unfiltered {
            ctx.pace.unfiltered_read.clone()
        } else {
            ctx.pace.filtered_read.clone()
        };
        let read_for = rng.random_range(read);
        let abrupt = rng.random_bool(0.5);
        match session(&ctx, &spec, start, read_for, abrupt).await {
            Ok(seen) => start = verify(&ctx, &spec, start, seen).await,
            Err(err) => {
                Counters::add(&ctx.counters.connect_failures, 1);
                ctx.counters.note(format!("{}: {err:#}", spec.filter));
            }
        }
        let pause = rng.random_range(ctx.pace.pause.clone());
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// What one session received.
struct Seen {
    /// The cursors of its `event` messages, in arrival order.
    events: Vec<i64>,
    /// The highest cursor of any message (`event`, `removed`, `finality`, `heartbeat`): every
    /// matching change up to it has been sent.
    last: Option<i64>,
    /// Where the server said to resume (`lagged`), or that the cursor expired (start afresh).
    resume_from: Option<i64>,
    expired: bool,
    /// The server sent `lagged` or `error`: its close was announced.
    told: bool,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    cursor: Option<i64>,
    resume_from: Option<i64>,
    error: Option<serde_json::Value>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, reads for `read_for` (or until the pool stops or the server closes), then closes
/// cleanly or drops the socket.
async fn session(
    ctx: &Ctx,
    spec: &Spec,
    start: Start,
    read_for: Duration,
    abrupt: bool,
) -> anyhow::Result<Seen> {
    let ws_base = ctx.api.replacen("http://", "ws://", 1);
    let mut url = format!("{ws_base}/v1/stream?{}", spec.filter);
    if let Start::Resume { since, .. } = start {
        url.push_str(&format!("&since={since}"));
    }
    if spec.batch {
        url.push_str("&batch=true");
    }
    let (mut ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(&url))
        .await
        .context("connecting in time")?
        .with_context(|| format!("connecting {url}"))?;
    let counters = &ctx.counters;
    Counters::add(&counters.sessions, 1);
    Counters::add(&counters.connected, 1);
    if let Start::Fresh = start {
        Counters::add(&counters.fresh_starts, 1);
    }
    let mut seen = Seen {
        events: Vec::new(),
        last: None,
        resume_from: None,
        expired: false,
        told: false,
    };
    let until = Instant::now() + read_for;
    let ended_by_server = read(ctx, spec, &mut ws, until, &mut seen).await;
    counters.connected.fetch_sub(1, Ordering::Relaxed);
    Counters::add(&counters.events_received, seen.events.len() as u64);
    if ended_by_server {
        return Ok(seen);
    }
    if abrupt {
        Counters::add(&counters.abrupt_drops, 1);
        drop(ws);
    } else {
        Counters::add(&counters.clean_closes, 1);
        // The close handshake: our close frame, then whatever is in flight until theirs.
        let _ = ws.send(Message::Close(None)).await;
        let drain = async { while let Some(Ok(_)) = ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    Ok(seen)
}

/// Reads frames into `seen` until `until` or the pool's stop; true when the server ended the
/// session first (a `lagged` or an `error`, a close, a broken socket).
async fn read(ctx: &Ctx, spec: &Spec, ws: &mut Ws, until: Instant, seen: &mut Seen) -> bool {
    loop {
        let frame = tokio::select! {
            _ = ctx.stop.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => return false,
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                if !seen.told {
                    Counters::add(&ctx.counters.unexpected, 1);
                    ctx.counters
                        .note(format!("{}: closed by the server: {close:?}", spec.filter));
                }
                return true;
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                Counters::add(&ctx.counters.unexpected, 1);
                ctx.counters
                    .note(format!("{}: the socket failed: {err}", spec.filter));
                return true;
            }
            None => return true,
        };
        let parsed = if text.as_str().starts_with('[') {
            serde_json::from_str::<Vec<Wire>>(text.as_str())
        } else {
            serde_json::from_str::<Wire>(text.as_str()).map(|w| vec![w])
        };
        match parsed {
            Ok(messages) => messages.into_iter().for_each(|m| take(ctx, spec, m, seen)),
            Err(err) => {
                Counters::add(&ctx.counters.unexpected, 1);
                ctx.counters
                    .note(format!("{}: unreadable message: {err}", spec.filter));
            }
        }
    }
}

/// Records one server message.
fn take(ctx: &Ctx, spec: &Spec, message: Wire, seen: &mut Seen) {
    let counters = &ctx.counters;
    if let Some(cursor) = message.cursor {
        seen.last = Some(seen.last.map_or(cursor, |last| last.max(cursor)));
    }
    match message.kind.as_str() {
        "event" => seen.events.extend(message.cursor),
        "removed" => Counters::add(&counters.removed, 1),
        "lagged" => {
            Counters::add(&counters.lagged, 1);
            seen.told = true;
            seen.resume_from = message.resume_from;
            counters.note(format!(
                "{}: lagged, resume from {:?}",
                spec.filter, message.resume_from
            ));
        }
        "error" => {
            let error = message.error.unwrap_or_default();
            seen.told = true;
            seen.expired = error["code"] == "cursor_expired";
            let above_all_seen = error["oldest_cursor"]
                .as_i64()
                .is_some_and(|oldest| seen.last.is_none_or(|last| oldest > last));
            if seen.expired && above_all_seen {
                Counters::add(&counters.overtaken, 1);
            } else {
                Counters::add(&counters.unexpected, 1);
            }
            counters.note(format!("{}: error message {error}", spec.filter));
        }
        _ => {}
    }
}

/// Compares the session's events with the stored ones over the same cursor range; returns
/// where the next session starts (afresh after `cursor_expired`: what it received up to the
/// error is compared all the same).
async fn verify(ctx: &Ctx, spec: &Spec, start: Start, seen: Seen) -> Start {
    let expired = seen.expired;
    let next = compare(ctx, spec, start, seen).await;
    if expired { Start::Fresh } else { next }
}

async fn compare(ctx: &Ctx, spec: &Spec, start: Start, seen: Seen) -> Start {
    let counters = &ctx.counters;
    let lower = match start {
        Start::Resume { verified_to, .. } => Some(verified_to),
        // A fresh start's span opens at its first event: what came before it is not its own.
        Start::Fresh => seen.events.first().map(|first| first - 1),
    };
    let upper = seen.last.max(lower);
    let next = |to: i64| Start::Resume {
        since: seen.resume_from.unwrap_or(to),
        verified_to: to,
    };
    let (Some(lower), Some(upper)) = (lower, upper) else {
        // A fresh session that saw nothing: it starts afresh again.
        return upper.map_or(Start::Fresh, next);
    };
    if upper == lower && seen.events.is_empty() {
        return next(upper);
    }
    match stored(ctx, spec, lower, upper).await {
        Ok(Some(stored)) => {
            Counters::add(&counters.spans_verified, 1);
            Counters::add(&counters.events_compared, stored.len() as u64);
            if let Some(diff) = differ(&seen.events, &stored) {
                Counters::add(&counters.mismatches, 1);
                counters.note(format!("{}: span ({lower}, {upper}]: {diff}", spec.filter));
            }
        }
        Ok(None) => Counters::add(&counters.spans_expired, 1),
        Err(err) => {
            Counters::add(&counters.unexpected, 1);
            counters.note(format!(
                "{}: comparing ({lower}, {upper}]: {err:#}",
                spec.filter
            ));
        }
    }
    next(upper)
}

#[derive(Deserialize)]
struct Page {
    events: Vec<Cursor>,
    next_cursor: Option<i64>,
}

#[derive(Deserialize)]
struct Cursor {
    cursor: i64,
}

/// The cursors of the stored events matching `spec` in `(lower, upper]`, in cursor order;
/// `None` when retention pruned past `lower` meanwhile (`410`).
async fn stored(
    ctx: &Ctx,
    spec: &Spec,
    lower: i64,
    upper: i64,
) -> anyhow::Result<Option<Vec<i64>>> {
    let mut cursors = Vec::new();
    let mut after = lower;
    // Each page moves `after` forward by at least one cursor: at most `upper - lower` pages.
    for _ in 0..=(upper - lower) {
        let url = format!(
            "{}/v1/events?{}&include_removed=true&limit={PAGE}&after={after}",
            ctx.api, spec.filter
        );
        let response = ctx.http.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        let body = response.error_for_status()?.bytes().await?;
        // Parsed off this thread: a page is ~1 MB, and the other clients must keep reading.
        let page =
            tokio::task::spawn_blocking(move || serde_json::from_slice::<Page>(&body)).await??;
        let last = page.events.last().map(|e| e.cursor);
        cursors.extend(
            page.events
                .iter()
                .map(|e| e.cursor)
                .take_while(|c| *c <= upper),
        );
        match (page.next_cursor, last) {
            (Some(next), Some(last)) if last < upper && next > after => after = next,
            _ => return Ok(Some(cursors)),
        }
    }
    bail!("paging ({lower}, {upper}] did not end")
}

/// How `received` differs from `stored`, or `None` when they are equal.
fn differ(received: &[i64], stored: &[i64]) -> Option<String> {
    if received == stored {
        return None;
    }
    let at = received
        .iter()
        .zip(stored)
        .position(|(r, s)| r != s)
        .unwrap_or(received.len().min(stored.len()));
    let have: std::collections::HashSet<i64> = received.iter().copied().collect();
    let want: std::collections::HashSet<i64> = stored.iter().copied().collect();
    Some(format!(
        "received {} events, stored {}; first difference at {at} (received {:?}, stored {:?}); \
         missing {}, not stored {}, received twice {}",
        received.len(),
        stored.len(),
        received.get(at),
        stored.get(at),
        want.difference(&have).count(),
        have.difference(&want).count(),
        received.len() - have.len(),
    ))
}
