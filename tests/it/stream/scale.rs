//! `/v1/stream` at scale: a thousand concurrent subscribers on one service, and a subscriber
//! that stops reading. Real sockets on 127.0.0.1; figures are printed, never asserted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::connect;
use crate::support::{self, get_json, parse_config, service_yaml, start_app, wait_for};

const SUBSCRIBERS: usize = 1000;

/// The few fields of a server message the tests look at.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    cursor: Option<i64>,
    resume_from: Option<i64>,
}

/// Raises this process's soft limit on open files to at least `want` (up to the hard limit):
/// a thousand subscribers hold two sockets each here, client and server side. Panics with the
/// reason when the hard limit is too low (`ulimit -Hn`).
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(read, 0, "getrlimit(RLIMIT_NOFILE) failed");
    if limit.rlim_cur >= want {
        return;
    }
    assert!(
        limit.rlim_max >= want,
        "this test needs {want} open files; the hard limit is {} (raise `ulimit -Hn`)",
        limit.rlim_max
    );
    limit.rlim_cur = want;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit(RLIMIT_NOFILE, {want}) failed");
}

/// The highest event cursor stored, 0 if none.
async fn max_event_cursor(base: &str) -> i64 {
    let (_, body) = get_json(&format!(
        "{base}/v1/events?order=desc&limit=1&include_removed=true"
    ))
    .await;
    body["events"][0]["cursor"].as_i64().unwrap_or(0)
}

/// Event cursors `/v1/events?{filter}` holds in `(after, through]` (bounded pages).
async fn stored_cursors(base: &str, filter: &str, after: i64, through: i64) -> Vec<i64> {
    let mut cursors = Vec::new();
    let mut from = after;
    for _ in 0..10_000 {
        let (status, body) = get_json(&format!(
            "{base}/v1/events?include_removed=true&limit=1000&after={from}{filter}"
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        let page: Vec<i64> = body["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["cursor"].as_i64()).collect())
            .unwrap_or_default();
        cursors.extend(page.iter().copied().filter(|c| *c <= through));
        match (body["next_cursor"].as_i64(), page.last()) {
            (Some(next), Some(&last)) if last < through => from = next,
            _ => return cursors,
        }
    }
    panic!("more than 10,000 pages");
}

/// `livechain_events_stored_total`, summed over its series.
async fn stored_total(base: &str) -> f64 {
    support::metric_sum(base, "livechain_events_stored_total").await
}

/// What a subscriber received: event cursors, and the other messages worth reporting.
#[derive(Default)]
struct Received {
    cursors: Vec<i64>,
    /// `error`, `lagged` or the close, should one arrive (shown when an assertion fails).
    notes: Vec<String>,
}

/// Reads event cursors from `ws` until one reaches `target` (0: not yet known), the stream
/// ends, or `limit` passes.
async fn collect_until(mut ws: super::Ws, target: Arc<AtomicI64>, limit: Duration) -> Received {
    let deadline = Instant::now() + limit;
    let mut got = Received::default();
    for _ in 0..1_000_000 {
        let goal = target.load(Ordering::Acquire);
        if goal > 0 && got.cursors.last().is_some_and(|c| *c >= goal) {
            break;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            got.notes.push("timed out".into());
            break;
        };
        // Wake up now and then to notice the target.
        let frame =
            match tokio::time::timeout(left.min(Duration::from_millis(200)), ws.next()).await {
                Err(_) => continue,
                Ok(frame) => frame,
            };
        match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Wire>(text.as_str()) {
                Ok(Wire {
                    kind,
                    cursor: Some(cursor),
                    ..
                }) if kind == "event" => got.cursors.push(cursor),
                Ok(Wire { kind, .. }) if kind == "heartbeat" || kind == "finality" => {}
                _ => got.notes.push(text.as_str().to_owned()),
            },
            Some(Ok(Message::Close(_))) | None => {
                got.notes.push("closed".into());
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                got.notes.push(format!("socket error: {err}"));
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    got
}

/// A thousand concurrent subscribers, all resuming from one cursor while ingestion runs, each
/// receive exactly what `/v1/events` holds: same events, cursor order, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_receive_every_event_once_in_order() {
    raise_fd_limit(2 * SUBSCRIBERS as u64 + 1024);
    let net = support::devnet(2, 50, 4, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    // Resume from a cursor once ingestion is live (caught up with the devnet's head), so that
    // the subscribers' replay is short: this test is about a thousand live tails.
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let head = net.head();
            support::checkpoint(&app.base, "devnet")
                .await
                .filter(|c| *c + 2 >= head && head > 5)
        },
    )
    .await
    .expect("ingestion catches up with the devnet");
    let since = max_event_cursor(&app.base).await;

    let started = Instant::now();
    let target = Arc::new(AtomicI64::new(0));
    let mut clients = Vec::with_capacity(SUBSCRIBERS);
    // Connected a hundred at a time: the accept backlog stays small.
    for chunk in 0..SUBSCRIBERS / 100 {
        let url = format!("{ws_base}/v1/stream?since={since}");
        let connecting = (0..100).map(|_| connect(&url));
        for ws in futures_util::future::join_all(connecting).await {
            clients.push(tokio::spawn(collect_until(
                ws,
                target.clone(),
                Duration::from_secs(90),
            )));
        }
        assert_eq!(clients.len(), (chunk + 1) * 100);
    }
    let connected = started.elapsed();
    // Every subscriber is live now; let a few more blocks arrive, then name the goal.
    let now = max_event_cursor(&app.base).await;
    let goal = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { Some(max_event_cursor(&app.base).await).filter(|c| *c >= now + 40) },
    )
    .await
    .expect("ingestion continues");
    target.store(goal, Ordering::Release);

    let mut received = Vec::with_capacity(SUBSCRIBERS);
    for client in clients {
        received.push(client.await.expect("subscriber task"));
    }
    let through = received
        .iter()
        .filter_map(|r| r.cursors.last().copied())
        .max()
        .expect("something received");
    let stored = stored_cursors(&app.base, "", since, through).await;
    eprintln!(
        "{SUBSCRIBERS} subscribers: connected in {connected:?}, {} events each from cursor {since} \
         to {goal}, {:?} in all",
        stored.iter().filter(|c| **c <= goal).count(),
        started.elapsed()
    );
    for (i, got) in received.iter().enumerate() {
        let last = *got.cursors.last().unwrap_or(&since);
        assert!(
            last >= goal,
            "subscriber {i} stopped at {last}, before {goal}; it also got {:?}",
            got.notes
        );
        let expected: Vec<i64> = stored.iter().copied().filter(|c| *c <= last).collect();
        assert_eq!(
            got.cursors, expected,
            "subscriber {i}: exactly the stored events, in order"
        );
    }
    app.stop().await;
}

/// A subscriber that stops reading does not hold up ingestion or the others: while its socket
/// is full, events keep being stored and another subscriber keeps receiving them all. When it
/// reads again it finds every event up to a point, then `lagged` with the cursor to resume
/// from, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_told_lagged_and_holds_nothing_up() {
    // A block every 2 ms (~10,000 events/s): fast enough to overflow a stalled subscriber
    // within seconds, not so fast that the reader below, a debug build's session filtering
    // every event beside the rest of the suite, falls behind on its own (in throughput mode
    // it was cut off and told `lagged` one run in a few: its own slowness, not the stall's).
    let net = support::devnet(2, 2, 20, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("s.db")))).await;
    let ws_base = app.base.replacen("http://", "ws://", 1);
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { (stored_total(&app.base).await >= 2_000.0).then_some(()) },
    )
    .await
    .expect("ingestion runs");

    // A subscriber that keeps reading, from before the stall to after it (blocks only, so that
    // a debug-built test client keeps up with full-speed ingestion).
    let reader_since = max_event_cursor(&app.base).await;
    let reader_goal = Arc::new(AtomicI64::new(0));
    let reader = tokio::spawn(collect_until(
        connect(&format!(
            "{ws_base}/v1/stream?kind=block&since={reader_since}"
        ))
        .await,
        reader_goal.clone(),
        Duration::from_secs(120),
    ));

    let window = Duration::from_secs(3);
    let rate = |a: f64, b: f64, t: Duration| (b - a) / t.as_secs_f64();
    let (t0, a0) = (Instant::now(), stored_total(&app.base).await);
    tokio::time::sleep(window).await;
    let (t1, a1) = (Instant::now(), stored_total(&app.base).await);
    let without = rate(a0, a1, t1 - t0);

    // The stalled subscriber: a small receive buffer, and it reads nothing for a while.
    let stalled_since = max_event_cursor(&app.base).await;
    let api: SocketAddr = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("api address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(api).await.expect("connect");
    let (mut stalled, _) = tokio_tungstenite::client_async(
        format!("{ws_base}/v1/stream?since={stalled_since}"),
        stream,
    )
    .await
    .expect("websocket handshake");

    let (t2, a2) = (Instant::now(), stored_total(&app.base).await);
    tokio::time::sleep(window).await;
    let (t3, a3) = (Instant::now(), stored_total(&app.base).await);
    let with = rate(a2, a3, t3 - t2);
    assert!(a3 > a2, "ingestion kept going while a subscriber stalled");

    // Far enough past the stalled subscriber's position to overflow the socket buffers
    // (a few MiB at most on loopback) and its queue in the hub (8,192 items).
    let past = stalled_since + 40_000;
    wait_for(
        Duration::from_secs(90),
        Duration::from_millis(100),
        || async { (max_event_cursor(&app.base).await >= past).then_some(()) },
    )
    .await
    .expect("ingestion went on while the subscriber stalled");

    // It reads again: contiguous events, then `lagged`, then the close.
    let mut got: Vec<i64> = Vec::new();
    let mut lagged: Option<i64> = None;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..200_000 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match tokio::time::timeout(left, stalled.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let wire: Wire = serde_json::from_str(text.as_str()).expect("JSON message");
                match (wire.kind.as_str(), wire.cursor) {
                    ("event", Some(cursor)) => {
                        assert!(lagged.is_none(), "nothing after `lagged`");
                        got.push(cursor);
                    }
                    ("lagged", _) => lagged = wire.resume_from,
                    _ => {}
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => break,
        }
    }
    let resume_from = lagged.expect("the stalled subscriber is told `lagged`");
    assert!(closed, "and the stream is closed");
    let last = *got.last().expect("it received events before it stalled");
    assert!(
        resume_from >= last,
        "resume_from {resume_from} covers what it received ({last})"
    );
    assert!(
        resume_from < past,
        "it was cut off while stalled, not after catching up"
    );
    let stored = stored_cursors(&app.base, "", stalled_since, resume_from).await;
    assert_eq!(
        got, stored,
        "up to `resume_from`: every event, once, in order"
    );

    // Once more without it (closed now): ingestion slows as the database grows, so the
    // figure while it stalled is to be read against both neighbours.
    let (t4, a4) = (Instant::now(), stored_total(&app.base).await);
    tokio::time::sleep(window).await;
    let (t5, a5) = (Instant::now(), stored_total(&app.base).await);
    let after = rate(a4, a5, t5 - t4);
    eprintln!(
        "stalled subscriber: stored {without:.0} ev/s before it, {with:.0} ev/s while it stalled, \
         {after:.0} ev/s after it was closed"
    );

    // The reader received everything, stall or not.
    reader_goal.store(past, Ordering::Release);
    let read = reader.await.expect("reader task");
    let through = *read.cursors.last().expect("the reader received events");
    assert!(
        through >= past,
        "the reader kept up to {through}, past {past}; it also got {:?}",
        read.notes
    );
    assert_eq!(
        read.cursors,
        stored_cursors(&app.base, "&kind=block", reader_since, through).await,
        "the reader: every block, once, in order"
    );
    app.stop().await;
}
