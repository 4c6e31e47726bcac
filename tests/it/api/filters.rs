//! Every filter of `GET /v1/events`, alone and combined, against the devnet's own chain: each
//! answer must be exactly the events the filter selects from `Devnet::block`/`Devnet::logs`.

use std::collections::BTreeMap;

use livechain::domain::Finality;

use super::*;

/// One check: a query, which of the devnet's events it must return, and whether that set is
/// known to be non-empty (so a filter returning nothing cannot pass by accident).
struct Case {
    query: String,
    wants: Selects,
    non_empty: bool,
}

fn case(query: impl Into<String>, wants: impl Fn(&Want) -> bool + 'static) -> Case {
    Case {
        query: query.into(),
        wants: Box::new(wants),
        non_empty: true,
    }
}

/// A case whose expected answer may be (or is) empty.
fn maybe_empty(query: impl Into<String>, wants: impl Fn(&Want) -> bool + 'static) -> Case {
    Case {
        non_empty: false,
        ..case(query, wants)
    }
}

/// Runs every case against the service, following `next_cursor` to the end, and reports all
/// mismatches at once.
async fn run_cases(still: &Still, cases: Vec<Case>) {
    let mut problems = Vec::new();
    for case in &cases {
        let expected: Vec<&Want> = still.chain.iter().filter(|w| (case.wants)(w)).collect();
        if case.non_empty && expected.is_empty() {
            problems.push(format!(
                "{}: the devnet has no matching event (bad test data)",
                case.query
            ));
            continue;
        }
        let (events, _) = walk(&still.app.base, &case.query, 1000).await;
        let got: Vec<(i64, Id)> = events.iter().map(|e| (cursor_of(e), id_of(e))).collect();
        let want: Vec<(i64, Id)> = expected.iter().map(|w| (w.cursor, w.id())).collect();
        if got != want {
            let got_set: BTreeSet<_> = got.iter().collect();
            let want_set: BTreeSet<_> = want.iter().collect();
            problems.push(format!(
                "{}: {} events, expected {}; missing {:?}; unexpected {:?}",
                case.query,
                got.len(),
                want.len(),
                want_set.difference(&got_set).take(3).collect::<Vec<_>>(),
                got_set.difference(&want_set).take(3).collect::<Vec<_>>(),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} filter cases failed:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

/// The most frequent value of `key` among the chain's logs (so filters on it select several).
fn most_common<K: Ord + Copy>(chain: &[Want], key: impl Fn(&Want) -> Option<K>) -> K {
    let mut counts: BTreeMap<K, usize> = BTreeMap::new();
    for k in chain.iter().filter_map(key) {
        *counts.entry(k).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k)
        .expect("the chain has logs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_selects_exactly_the_devnets_events() {
    let still = still().await;
    let chain = &still.chain;
    let contracts = still.devnet.contracts();
    let (a0, a1, a2) = (contracts[0], contracts[1], contracts[2]);
    assert!(chain.iter().any(|w| w.address() == Some(a0)));
    let nobody = Address::repeat_byte(0x42);
    assert!(!contracts.contains(&nobody));
    // A log with four topics gives a value for every topic filter.
    let full = chain
        .iter()
        .find(|w| w.topic(3).is_some())
        .expect("a log with four topics")
        .log
        .clone()
        .expect("a log");
    let t = full.topics.clone();
    let tx = most_common(chain, |w| w.log.as_ref().map(|l| l.tx_hash));
    let block7 = chain
        .iter()
        .find(|w| w.number == 7 && w.log.is_none())
        .expect("block 7")
        .hash;

    let lower = |a: Address| format!("{a:#x}");
    let checksum = |a: Address| a.to_checksum(None);
    let is_log = |w: &Want| w.log.is_some();
    let mut cases = vec![
        case("", |_| true),
        case("chain=devnet", |_| true),
        case("kind=block", |w| w.log.is_none()),
        case("kind=log", is_log),
        // address: one, repeated, comma-separated, any hex case, none matching.
        case(format!("address={}", lower(a0)), move |w| {
            w.address() == Some(a0)
        }),
        case(format!("address={}", checksum(a0)), move |w| {
            w.address() == Some(a0)
        }),
        case(
            format!("address=0x{}", hex_upper(a0.as_slice())),
            move |w| w.address() == Some(a0),
        ),
        case(
            format!("address={}&address={}", checksum(a0), lower(a1)),
            move |w| matches!(w.address(), Some(a) if a == a0 || a == a1),
        ),
        case(
            format!("address={},{}&address={}", lower(a0), lower(a1), lower(a2)),
            move |w| matches!(w.address(), Some(a) if a == a0 || a == a1 || a == a2),
        ),
        case(
            format!("address={}%2C{}", lower(a1), lower(a2)),
            move |w| matches!(w.address(), Some(a) if a == a1 || a == a2),
        ),
        maybe_empty(format!("address={}", lower(nobody)), |_| false),
        maybe_empty(format!("kind=block&address={}", lower(a0)), |_| false),
        // from_block / to_block, inclusive, alone and together.
        case("from_block=30", |w| w.number >= 30),
        case("to_block=5", |w| w.number <= 5),
        case("from_block=10&to_block=20", |w| {
            (10..=20).contains(&w.number)
        }),
        case("from_block=7&to_block=7", |w| w.number == 7),
        case("from_block=0&to_block=0", |w| w.number == 0),
        maybe_empty(format!("from_block={}", HISTORY + 1), |_| false),
        case("to_block=9223372036854775807", |_| true),
        // tx_hash and block_hash.
        case(format!("tx_hash={tx}"), move |w| {
            w.log.as_ref().is_some_and(|l| l.tx_hash == tx)
        }),
        maybe_empty(format!("tx_hash={}", B256::repeat_byte(7)), |_| false),
        case(format!("block_hash={block7}"), move |w| w.hash == block7),
        case(format!("block_hash={block7}&kind=block"), move |w| {
            w.hash == block7 && w.log.is_none()
        }),
        maybe_empty(format!("block_hash={}", B256::repeat_byte(9)), |_| false),
        // include_removed: no reorg happened, so both answers are the whole chain.
        case("include_removed=true", |_| true),
        case("include_removed=1", |_| true),
        case("include_removed=false", |_| true),
        case("include_removed=0", |_| true),
        // Combinations: every given filter must hold.
        case(
            format!(
                "kind=log&address={}&topic0={}&from_block=5&to_block=35",
                lower(a0),
                t[0]
            ),
            {
                let t0 = t[0];
                move |w| {
                    w.address() == Some(a0)
                        && w.topic(0) == Some(t0)
                        && (5..=35).contains(&w.number)
                }
            },
        ),
    ];
    for (i, topic) in t.iter().copied().enumerate() {
        cases.push(case(format!("topic{i}={topic}"), move |w| {
            w.topic(i) == Some(topic)
        }));
    }
    let (t0, t1, t2, t3) = (t[0], t[1], t[2], t[3]);
    cases.push(case(
        format!("topic0={t0}&topic1={t1}&topic2={t2}&topic3={t3}"),
        move |w| {
            w.topic(0) == Some(t0)
                && w.topic(1) == Some(t1)
                && w.topic(2) == Some(t2)
                && w.topic(3) == Some(t3)
        },
    ));
    // A topic value at the wrong position matches by position only.
    cases.push(maybe_empty(format!("topic3={t0}"), move |w| {
        w.topic(3) == Some(t0)
    }));

    // `after` and `order` select by cursor (the listing's, checked equal to the devnet's chain).
    let mid = chain[chain.len() / 3].cursor;
    cases.push(case(format!("after={mid}"), move |w| w.cursor > mid));
    cases.push(case("after=0", |_| true));
    cases.push(case(format!("kind=log&after={mid}"), move |w| {
        w.log.is_some() && w.cursor > mid
    }));

    run_cases(&still, cases).await;
    still.app.stop().await;
}

/// `finality` keeps the events at least that settled, by the same rule that gives each event its
/// `finality` field, from the chain's safe and finalized heights as the store holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finality_filter_follows_the_stored_heights() {
    let still = still().await;
    let store = still.app.running().store.clone();
    let checkpoint = store
        .checkpoint(CHAIN)
        .await
        .expect("read the checkpoint")
        .expect("a checkpoint");
    let reported = support::checkpoint(&still.app.base, CHAIN).await;
    assert_eq!(reported, Some(checkpoint.block_number), "/v1/chains");
    let (safe, finalized) = (checkpoint.safe_block, checkpoint.finalized_block);
    for level in [safe, finalized].into_iter().flatten() {
        assert!(
            level <= checkpoint.block_number,
            "a settled height {level} above the checkpoint {}",
            checkpoint.block_number
        );
    }
    let settled = move |n: u64| {
        if finalized.is_some_and(|f| n <= f) {
            Finality::Finalized
        } else if safe.is_some_and(|s| n <= s) {
            Finality::Safe
        } else {
            Finality::Latest
        }
    };
    // The field of every listed event.
    for event in &still.listing {
        let number = event["block_number"].as_u64().expect("block_number");
        assert_eq!(
            event["finality"],
            settled(number).as_str(),
            "{event} (safe {safe:?}, finalized {finalized:?})"
        );
    }
    // The filter: safe includes finalized; latest is everything.
    let cases = vec![
        case("finality=latest", |_| true),
        maybe_empty("finality=safe", move |w| {
            settled(w.number) >= Finality::Safe
        }),
        maybe_empty("finality=finalized", move |w| {
            settled(w.number) == Finality::Finalized
        }),
        maybe_empty("finality=safe&kind=block&order=asc", move |w| {
            w.log.is_none() && settled(w.number) >= Finality::Safe
        }),
    ];
    run_cases(&still, cases).await;
    still.app.stop().await;
}

/// `limit` cuts the cursor-ordered answer; `order=desc` reverses it; `next_cursor` is the last
/// cursor of a full page and null on a short one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_order_and_after_cut_the_cursor_order() {
    let still = still().await;
    let base = &still.app.base;
    let asc: Vec<i64> = still.chain.iter().map(|w| w.cursor).collect();
    let desc: Vec<i64> = asc.iter().rev().copied().collect();
    let cursors = |events: &[Value]| events.iter().map(cursor_of).collect::<Vec<_>>();

    // Default limit is 100, ascending.
    let (events, next) = page(base, "").await;
    assert_eq!(cursors(&events), asc[..100]);
    assert_eq!(next, Some(asc[99]));
    let (events, next) = page(base, "order=asc&limit=7").await;
    assert_eq!(cursors(&events), asc[..7]);
    assert_eq!(next, Some(asc[6]));
    let (events, next) = page(base, "order=desc&limit=7").await;
    assert_eq!(cursors(&events), desc[..7]);
    assert_eq!(next, Some(desc[6]));
    let (events, next) = page(base, "limit=1").await;
    assert_eq!((cursors(&events), next), (vec![asc[0]], Some(asc[0])));

    // `after` in either order: strictly after in that order.
    let k = asc.len() / 2;
    let (events, _) = page(base, &format!("after={}&limit=5", asc[k])).await;
    assert_eq!(cursors(&events), asc[k + 1..k + 6]);
    let (events, _) = page(base, &format!("after={}&limit=5&order=desc", asc[k])).await;
    let below: Vec<i64> = asc[..k].iter().rev().take(5).copied().collect();
    assert_eq!(cursors(&events), below);
    // `after` need not be a stored cursor.
    let between = asc[k] + 1;
    let first_after = asc.iter().copied().find(|c| *c > between);
    let (events, _) = page(base, &format!("after={between}&limit=1")).await;
    assert_eq!(cursors(&events).first().copied(), first_after);

    // The end: the last page is short with a null next_cursor; past the end is empty.
    let last = *asc.last().expect("events");
    let (events, next) = page(base, &format!("after={}&limit=1000", asc[asc.len() - 3])).await;
    assert_eq!(
        (cursors(&events), next),
        (asc[asc.len() - 2..].to_vec(), None)
    );
    let (events, next) = page(base, &format!("after={last}")).await;
    assert!(events.is_empty() && next.is_none());
    let (events, next) = page(base, &format!("after={}&order=desc", asc[0])).await;
    assert!(events.is_empty() && next.is_none());
    let (events, _) = page(base, "order=desc&limit=1000").await;
    assert_eq!(cursors(&events), desc[..desc.len().min(1000)]);
    let (events, next) = page(base, "limit=1000").await;
    assert_eq!(cursors(&events), asc[..asc.len().min(1000)]);
    assert_eq!(next.is_some(), asc.len() >= 1000);
    still.app.stop().await;
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
