//! Bad input: every refusal is a 400 with the one JSON error shape naming the field at fault;
//! unknown ids and routes are 404s in the same shape.

use super::*;

const ADDRESS: &str = "0x00000000000000000000000000000000000000aa";
const HASH: &str = "0x000000000000000000000000000000000000000000000000000000000000002a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_400s_naming_the_field() {
    let still = still().await;
    let cases: Vec<(String, &str)> = [
        // kind
        ("kind=tx", "kind"),
        ("kind=", "kind"),
        ("kind=Block", "kind"),
        // address
        ("address=0x12", "address"),
        ("address=zz", "address"),
        ("address=", "address"),
        (
            "address=0x00000000000000000000000000000000000000aa00",
            "address",
        ),
        (&format!("address={ADDRESS},"), "address"),
        (&format!("address={ADDRESS},0x1"), "address"),
        (&format!("address={ADDRESS}&address=nope"), "address"),
        // topics and hashes
        ("topic0=0x1", "topic0"),
        ("topic1=", "topic1"),
        (&format!("topic2={HASH}00"), "topic2"),
        (
            "topic3=0xzz00000000000000000000000000000000000000000000000000000000000000",
            "topic3",
        ),
        ("topic4=0x01", "topic4"),
        ("tx_hash=0x1", "tx_hash"),
        (&format!("tx_hash={ADDRESS}"), "tx_hash"),
        ("block_hash=0xnothex", "block_hash"),
        // numbers: negative, not numbers, overflowing u64, past SQLite's i64
        ("from_block=-1", "from_block"),
        ("to_block=-5", "to_block"),
        ("from_block=ten", "from_block"),
        ("to_block=1.5", "to_block"),
        ("from_block=18446744073709551616", "from_block"),
        ("to_block=99999999999999999999999", "to_block"),
        ("from_block=9223372036854775808", "from_block"),
        ("to_block=18446744073709551615", "to_block"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("after=9223372036854775808", "after"),
        ("from_block=5&to_block=4", "from_block"),
        // limit
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=", "limit"),
        ("limit=18446744073709551616", "limit"),
        // order, finality, include_removed
        ("order=up", "order"),
        ("order=DESC", "order"),
        ("order=", "order"),
        ("finality=final", "finality"),
        ("finality=", "finality"),
        ("include_removed=maybe", "include_removed"),
        ("include_removed=yes", "include_removed"),
        ("include_removed=", "include_removed"),
        // unknown and repeated parameters
        ("colour=red", "colour"),
        ("since=5", "since"),
        ("Kind=block", "Kind"),
        ("kind=block&kind=log", "kind"),
        ("limit=5&limit=5", "limit"),
        ("chain=devnet&chain=other", "chain"),
        // the first error is the one named
        ("kind=log&limit=0&order=up", "limit"),
    ]
    .into_iter()
    .map(|(q, f)| (q.to_owned(), f))
    .collect();
    for (query, field) in &cases {
        let what = format!("/v1/events?{query}");
        let (status, body) = support::get_json(&still.app.url(&what)).await;
        assert_bad_request(&what, status, &body, field);
    }
    still.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_by_cursor_is_found_or_404_or_400() {
    let still = still().await;
    let app = &still.app;
    // Found: exactly the event as listed, for a block and for a log.
    let block = still
        .listing
        .iter()
        .find(|e| e["kind"] == "block")
        .expect("a block");
    let log = still
        .listing
        .iter()
        .rev()
        .find(|e| e["kind"] == "log")
        .expect("a log");
    for event in [block, log] {
        let (status, body) =
            support::get_json(&app.url(&format!("/v1/events/{}", cursor_of(event)))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(&body, event);
    }
    // Unknown cursors: 404, code not_found, no field.
    let last = still.listing.iter().map(cursor_of).max().expect("events");
    for cursor in [last + 1, last + 1_000_000, i64::MAX] {
        let what = format!("/v1/events/{cursor}");
        let (status, body) = support::get_json(&app.url(&what)).await;
        assert_eq!(status, 404, "{what}: {body}");
        assert_error_shape(&what, &body, "not_found", None);
    }
    // Not a cursor: 400 naming `cursor`.
    for bad in [
        "abc",
        "1.5",
        "-1",
        "0",
        "0x10",
        "9223372036854775808",
        "%20",
    ] {
        let what = format!("/v1/events/{bad}");
        let (status, body) = support::get_json(&app.url(&what)).await;
        assert_bad_request(&what, status, &body, "cursor");
    }
    // Unknown routes: 404 in the same shape.
    for path in ["/v1/nothing", "/v1/events/1/more", "/v2/events"] {
        let (status, body) = support::get_json(&app.url(path)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_error_shape(path, &body, "not_found", None);
    }
    still.app.stop().await;
}
