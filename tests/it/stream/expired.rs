//! Resuming past pruned history: a cursor below the oldest retained one gets `cursor_expired`
//! with `oldest_cursor` (REST 410, the stream's error message), never a silent gap; resuming
//! after `oldest_cursor` works; a replay overtaken by a prune gets the same error.

use std::path::Path;

use super::*;

/// A devnet of five blocks a second, 21 events each, `history` blocks at start, under a
/// service keeping `max_events` of them: it prunes a tenth every few seconds.
async fn pruning_service(
    dir: &Path,
    max_events: u64,
    history: u64,
) -> (support::TestDevnet, support::TestApp) {
    let net = support::devnet(2, 200, 20, history).await;
    let yaml = service_yaml(&net, &dir.join("s.db"))
        + &format!("    retention: {{ max_events: {max_events} }}\n");
    let app = start_app(parse_config(&yaml)).await;
    (net, app)
}

/// The `oldest_cursor` REST reports for `after=1` once something was pruned.
async fn oldest_cursor(app: &support::TestApp) -> i64 {
    let url = app.url("/v1/events?after=1&limit=1");
    let found = support::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        let url = url.clone();
        async move {
            let (status, body) = get_json(&url).await;
            (status == 410).then(|| body["error"]["oldest_cursor"].as_i64())?
        }
    })
    .await;
    found.expect("retention pruned and REST answered 410 within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_below_the_oldest_retained_is_refused_and_the_oldest_resumes_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_net, app) = pruning_service(dir.path(), 3000, 300).await;
    let oldest = oldest_cursor(&app).await;
    assert!(oldest > 1);

    let (status, body) = get_json(&app.url("/v1/events?after=1")).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "cursor_expired", "{body}");
    assert!(body["error"]["oldest_cursor"].as_i64() >= Some(oldest));
    // `after=0` and no cursor still mean "from the oldest retained".
    for query in ["after=0", "limit=5"] {
        let (status, body) = get_json(&app.url(&format!("/v1/events?{query}"))).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    // Descending pages walk back into the pruned range: their natural end, not an error.
    let (status, _) = get_json(&app.url("/v1/events?after=2&order=desc")).await;
    assert_eq!(status, 200);

    let ws_base = app.base.replacen("http://", "ws://", 1);
    let mut ws = connect(&format!("{ws_base}/v1/stream?since=1")).await;
    let words = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("an error message");
    assert_eq!(words["type"], "error", "{words}");
    assert_eq!(words["error"]["code"], "cursor_expired", "{words}");
    assert!(words["error"]["oldest_cursor"].as_i64() >= Some(oldest));
    assert!(
        next_json(&mut ws, Duration::from_secs(5)).await.is_none(),
        "the session closes after the error"
    );

    // From the oldest cursor: the stream's events are exactly REST's, from the first on. A
    // prune may move the mark between the two reads: then both start again, a few times.
    let mut compared = false;
    for _ in 0..5 {
        let oldest = oldest_cursor(&app).await;
        let mut ws = connect(&format!("{ws_base}/v1/stream?since={oldest}")).await;
        let mut streamed = Vec::new();
        while streamed.len() < 200 {
            let Some(msg) = next_json(&mut ws, Duration::from_secs(10)).await else {
                break;
            };
            match msg["type"].as_str() {
                Some("event") => streamed.push(msg["cursor"].as_i64().expect("cursor")),
                Some("error") => break,
                _ => {}
            }
        }
        let url = format!("/v1/events?after={oldest}&include_removed=true&limit=200");
        let (status, page) = get_json(&app.url(&url)).await;
        if status == 410 || streamed.len() < 200 {
            continue;
        }
        let rest: Vec<i64> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["cursor"].as_i64().expect("cursor"))
            .collect();
        assert_eq!(streamed, rest, "the stream from oldest_cursor has a gap");
        compared = true;
        break;
    }
    assert!(compared, "the mark moved under every attempt");
    app.stop().await;
}

/// A replay stalled on a client that does not read, overtaken by a prune meanwhile: what the
/// client then reads is in order and ends with `cursor_expired` (resume above what was sent),
/// or `None` when the replay got through before the prune (the socket buffers took it all).
async fn overtaken_replay(app: &support::TestApp) -> Option<Value> {
    let oldest = oldest_cursor(app).await;
    let addr: std::net::SocketAddr = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("API address");
    // A client with a tiny receive buffer that does not read: the replay stalls on it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/v1/stream?since={oldest}");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    // Meanwhile retention moves the mark past where the stalled replay is.
    let moved = support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async move { (oldest_cursor(app).await > oldest + 500).then_some(()) },
    )
    .await;
    assert!(moved.is_some(), "retention did not prune again within 30 s");

    let mut last = oldest;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let msg = next_json(&mut ws, Duration::from_secs(10)).await?;
        match msg["type"].as_str() {
            Some("event") | Some("finality") | Some("removed") => {
                let cursor = msg["cursor"].as_i64().expect("cursor");
                assert!(cursor > last, "cursor {cursor} after {last}");
                last = cursor;
            }
            Some("error") => {
                let resume = msg["error"]["oldest_cursor"]
                    .as_i64()
                    .expect("oldest_cursor");
                assert!(
                    resume > last,
                    "told to resume at {resume}, below what was sent ({last})"
                );
                return Some(msg);
            }
            _ => {}
        }
    }
    None // still live after 30 s: the replay was never overtaken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_overtaken_by_a_prune_ends_with_cursor_expired_not_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 63,000 events of history under a limit of 3,000: the backfill and the pruning behind it
    // move the mark by thousands a second, far more than a socket's buffers hold of a replay.
    let (_net, app) = pruning_service(dir.path(), 3000, 3000).await;
    // Bounded: a few tries, in case the kernel's buffers took a whole replay before the prune.
    let mut ended = None;
    for _ in 0..3 {
        ended = overtaken_replay(&app).await;
        if ended.is_some() {
            break;
        }
    }
    let words = ended.expect("an overtaken replay ends with an error");
    assert_eq!(words["error"]["code"], "cursor_expired", "{words}");
    app.stop().await;
}
