//! Bad input: every refusal is a 400 with the one JSON error shape naming the field at fault;
//! unknown ids and routes are 404s, wrong methods 405s, in the same shape.

use super::*;

const ADDRESS: &str = "0x00000000000000000000000000000000000000aa";
const HASH: &str = "0x000000000000000000000000000000000000000000000000000000000000002a";
/// A valid EIP-55 checksum, and the same address with one letter's case flipped.
const CHECKSUMMED: &str = "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045";
const BAD_CHECKSUM: &str = "0xD8dA6BF26964aF9D7eEd9e03E53415D37aA96045";

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
        // the address rule: `0x` + 40 hex digits, mixed case only as a valid EIP-55 checksum
        (
            "address=00000000000000000000000000000000000000aa",
            "address",
        ),
        (
            "address=0X00000000000000000000000000000000000000AA",
            "address",
        ),
        (&format!("address={BAD_CHECKSUM}"), "address"),
        (&format!("address={CHECKSUMMED},{BAD_CHECKSUM}"), "address"),
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
        (&format!("block_hash={}", &HASH[2..]), "block_hash"),
        (&format!("topic0={}", &HASH[2..]), "topic0"),
        // chains: only the configured ones
        ("chain=nope", "chain"),
        ("chain=", "chain"),
        ("chain=Devnet", "chain"),
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
    // The message says why: which chains exist, which rule an address broke.
    let (_, body) = support::get_json(&still.app.url("/v1/events?chain=nope")).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("nope") && message.contains(CHAIN),
        "an unknown chain's message names it and the known ones: {body}"
    );
    let what = format!("/v1/events?address={BAD_CHECKSUM}");
    let (_, body) = support::get_json(&still.app.url(&what)).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("EIP-55"), "{what}: {body}");
    // The checksummed, lower-case and upper-case spellings of one address are all accepted.
    let upper = format!("0x{}", CHECKSUMMED[2..].to_uppercase());
    for good in [CHECKSUMMED.to_owned(), CHECKSUMMED.to_lowercase(), upper] {
        let (events, _) = page(&still.app.base, &format!("address={good}")).await;
        assert!(events.is_empty(), "{good} is no devnet contract");
    }
    still.app.stop().await;
}

/// A known route asked with the wrong method is a 405 in the error shape with an `Allow`
/// header; an unknown route is a 404 in the same shape, whatever the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_routes_answer_in_the_error_shape() {
    let still = still().await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        let request = client.request(method, still.app.url(path));
        async move {
            let response = request.send().await.expect("request sent");
            let status = response.status().as_u16();
            let allow = response
                .headers()
                .get(reqwest::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = response.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            (status, allow, body)
        }
    };
    use reqwest::Method;
    for (method, path) in [
        (Method::POST, "/v1/events"),
        (Method::DELETE, "/v1/events/1"),
        (Method::PUT, "/v1/chains"),
        (Method::POST, "/health"),
        (Method::POST, "/v1/stream"),
        (Method::DELETE, "/rpc/devnet"),
    ] {
        let what = format!("{method} {path}");
        let (status, allow, body) = call(method.clone(), path).await;
        assert_eq!(status, 405, "{what}: {body}");
        assert_error_shape(&what, &body, "method_not_allowed", None);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(method.as_str()), "{what}: {body}");
        assert!(
            allow.as_deref().is_some_and(|a| a.contains("GET")),
            "{what}: Allow {allow:?}"
        );
    }
    for (method, path) in [
        (Method::GET, "/v1/nothing"),
        (Method::GET, "/v1/events/1/more"),
        (Method::GET, "/v2/events"),
        (Method::POST, "/v1/nothing"),
        (Method::DELETE, "/rpc/devnet/more"),
    ] {
        let what = format!("{method} {path}");
        let (status, _, body) = call(method, path).await;
        assert_eq!(status, 404, "{what}: {body}");
        assert_error_shape(&what, &body, "not_found", None);
    }
    // A plain GET of the WebSocket route: 426 in the same shape, not a text body.
    let (status, _, body) = call(Method::GET, "/v1/stream").await;
    assert_eq!(status, 426, "GET /v1/stream without an upgrade: {body}");
    assert_error_shape("GET /v1/stream", &body, "upgrade_required", None);
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
    still.app.stop().await;
}
