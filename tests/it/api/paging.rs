//! Pagination by `next_cursor`: many pages, both orders, no repeat and no skip — over a still
//! chain, and while ingestion keeps committing new events between pages.

use std::collections::BTreeMap;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_the_answer_once_in_both_orders() {
    let still = still().await;
    let base = &still.app.base;
    let a0 = still.devnet.contracts()[0];
    let filters: [(String, Selects); 4] = [
        (String::new(), Box::new(|_| true)),
        ("kind=block".into(), Box::new(|w| w.log.is_none())),
        (
            format!("kind=log&address={a0}"),
            Box::new(move |w| w.address() == Some(a0)),
        ),
        (
            "from_block=3&to_block=17".into(),
            Box::new(|w| (3..=17).contains(&w.number)),
        ),
    ];
    for (filter, wants) in &filters {
        let asc: Vec<i64> = still
            .chain
            .iter()
            .filter(|w| wants(w))
            .map(|w| w.cursor)
            .collect();
        let desc: Vec<i64> = asc.iter().rev().copied().collect();
        assert!(asc.len() > 7, "{filter}: too few events to page");
        for limit in [1, 7, 100] {
            if limit == 1 && asc.len() > 60 {
                continue; // one event per request: keep it to the small answers
            }
            for (order, want) in [("asc", &asc), ("desc", &desc)] {
                let query = format!("{filter}&order={order}");
                let (events, pages) = walk(base, &query, limit).await;
                let got: Vec<i64> = events.iter().map(cursor_of).collect();
                assert_eq!(&got, want, "{query} in pages of {limit}");
                // Full pages until the last, short one (empty when the count divides evenly).
                assert_eq!(
                    pages,
                    want.len() / limit as usize + 1,
                    "{query} in pages of {limit}"
                );
            }
        }
    }
    still.app.stop().await;
}

/// Pages fetched while ingestion writes never repeat or skip: an ascending walk to the end sees
/// every event committed below the cursor it reached, and a descending walk from the top sees
/// everything below where it started — both checked against a snapshot taken afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_during_live_ingestion_neither_repeat_nor_skip() {
    let devnet = support::devnet(3, 50, 20, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("livechain.db");
    let app = support::start_app(support::parse_config(&support::service_yaml(&devnet, &db))).await;
    let store = app.running().store.clone();
    let committed = || {
        let store = store.clone();
        async move {
            store
                .checkpoint(CHAIN)
                .await
                .ok()
                .flatten()
                .map(|c| c.block_number)
        }
    };
    let start = support::wait_for(WAIT, POLL, || async {
        committed().await.filter(|b| *b >= 20)
    })
    .await
    .expect("the checkpoint reaches block 20");
    // Everything committed before the walks began must be in both of them.
    let before = model(&devnet, 0..=start);

    // Removed rows included, so a reorg could not make the snapshot differ from the walks.
    let query = "include_removed=true";
    let mut live_pages = 0;
    let top = page(&app.base, "include_removed=true&order=desc&limit=1")
        .await
        .0;
    let top = cursor_of(&top[0]);
    let (asc, asc_pages) = walk_slowly(&app.base, query, &mut live_pages).await;
    let (desc, _) = walk_from(&app.base, &format!("{query}&order=desc"), 50, Some(top + 1)).await;
    let end = committed().await.expect("a checkpoint");
    assert!(
        end > start,
        "ingestion kept committing during the walks ({start} -> {end})"
    );

    // The snapshot: every event, read after both walks.
    let snapshot = support::all_events(&app.base, query).await;
    let by_cursor: BTreeMap<i64, &Value> = snapshot.iter().map(|e| (cursor_of(e), e)).collect();
    assert_eq!(
        by_cursor.len(),
        snapshot.len(),
        "the snapshot repeats a cursor"
    );
    let reached = asc.last().map(cursor_of).expect("the walk found events");
    let asc_cursors: Vec<i64> = asc.iter().map(cursor_of).collect();
    let snap_asc: Vec<i64> = by_cursor.range(..=reached).map(|(c, _)| *c).collect();
    assert_eq!(
        asc_cursors, snap_asc,
        "the ascending walk ({asc_pages} pages, {live_pages} taken while new events arrived) \
         differs from the snapshot up to cursor {reached}"
    );
    let desc_cursors: Vec<i64> = desc.iter().map(cursor_of).collect();
    let snap_desc: Vec<i64> = by_cursor.range(..=top).rev().map(|(c, _)| *c).collect();
    assert_eq!(
        desc_cursors, snap_desc,
        "the descending walk from cursor {top}"
    );
    // Same events, same content, in the walk and the snapshot.
    for event in &asc {
        let mut event = event.clone();
        let mut stored = by_cursor[&cursor_of(&event)].clone();
        // providers_seen may grow as late copies arrive, finality as the chain settles;
        // nothing else may change.
        for e in [&mut event, &mut stored] {
            e["providers_seen"] = Value::Null;
            e["finality"] = Value::Null;
        }
        assert_eq!(event, stored);
    }
    assert!(
        live_pages > 1,
        "only {live_pages} pages saw new events: the walk did not overlap ingestion"
    );

    eprintln!(
        "live paging: checkpoint {start} -> {end}; ascending walk {} events in {asc_pages} pages \
         ({live_pages} while new events arrived); descending walk {} events",
        asc.len(),
        desc.len()
    );

    // And both agree with the devnet: everything committed before the walks is there.
    let walked = id_set(&asc, "the ascending walk");
    for want in &before {
        assert!(walked.contains(&want.id()), "{:?} skipped", want.id());
    }
    let truth: BTreeSet<Id> = model(&devnet, 0..=devnet.head())
        .iter()
        .map(Want::id)
        .collect();
    for id in &walked {
        assert!(truth.contains(id), "{id:?} is not on the devnet's chain");
    }
    app.stop().await;
}

/// An ascending walk in small pages, a short pause between pages so that ingestion commits
/// during the walk, polling the newest cursor to count how many pages were fetched while new
/// events arrived. Ends at the first short page: the walk reads faster than the devnet produces.
async fn walk_slowly(base: &str, query: &str, live_pages: &mut usize) -> (Vec<Value>, usize) {
    const LIMIT: u32 = 50;
    const PAUSE: Duration = Duration::from_millis(10);
    let started = std::time::Instant::now();
    let mut events: Vec<Value> = Vec::new();
    let mut newest = 0;
    for pages in 1..=MAX_PAGES {
        assert!(
            started.elapsed() < WAIT,
            "the walk did not catch up with ingestion within {WAIT:?} ({pages} pages)"
        );
        let from = events
            .last()
            .map(|e| format!("&after={}", cursor_of(e)))
            .unwrap_or_default();
        let (got, next) = page(base, &format!("{query}&limit={LIMIT}{from}")).await;
        for event in &got {
            if let Some(previous) = events.last() {
                assert!(
                    cursor_of(event) > cursor_of(previous),
                    "cursor {} after {}",
                    cursor_of(event),
                    cursor_of(previous)
                );
            }
            events.push(event.clone());
        }
        let top = page(base, &format!("{query}&order=desc&limit=1")).await.0;
        let top = top.first().map(cursor_of).unwrap_or(0);
        if top > newest {
            if newest > 0 {
                *live_pages += 1;
            }
            newest = top;
        }
        if next.is_none() {
            return (events, pages);
        }
        tokio::time::sleep(PAUSE).await;
    }
    panic!("/v1/events?{query}: more than {MAX_PAGES} pages");
}
