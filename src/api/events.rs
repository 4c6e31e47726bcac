//! `GET /v1/events` and `GET /v1/events/{cursor}`: the stored history, filtered, paged by cursor.

use alloy_primitives::{Address, B256};
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::json::EventJson;
use super::{ApiError, AppState};
use crate::domain::{Cursor, EventKind, Finality};
use crate::store::{EventQuery, Order};

/// `limit` when absent, and its ceiling.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/{cursor}", get(one))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Page {
    events: Vec<EventJson>,
    next_cursor: Option<Cursor>,
}

/// Stored events matching the filters, in cursor order, a page at a time.
#[utoipa::path(get, path = "/v1/events", tag = "history",
    params(super::openapi::FilterParams, super::openapi::PageParams),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last", body = Page),
        (status = 400, description = "A parameter is wrong (`field` names it)", body = super::error::ErrorBody),
        (status = 410, description = "`after` is below the oldest retained cursor (`cursor_expired`)", body = super::error::ErrorBody),
        (status = 422, description = "The query read for longer than `server.query_timeout` and was stopped (`query_too_costly`)", body = super::error::ErrorBody),
        (status = 503, description = "The database is busy: retry", body = super::error::ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    let query = parse_query(query.as_deref().unwrap_or(""))?;
    check_chain(query.filter.chain.as_deref(), &state.chain_names())?;
    let limit = query.limit as usize;
    let events = state
        .store
        .query_events_within(&query, state.query_timeout)
        .await?;
    // Read after the page: a prune that ran before the page's read shows here.
    if let (Some(after), Order::Asc) = (query.after, query.order) {
        let oldest = state
            .store
            .oldest_cursor(query.filter.chain.as_deref())
            .await?;
        ApiError::check_cursor(after, oldest)?;
    }
    // A full page may have a successor; a short one is the end.
    let next_cursor = if events.len() == limit {
        events.last().map(|e| e.cursor)
    } else {
        None
    };
    Ok(Json(Page {
        events: events.iter().map(EventJson::from).collect(),
        next_cursor,
    }))
}

/// One stored event by its cursor.
#[utoipa::path(get, path = "/v1/events/{cursor}", tag = "history",
    params(("cursor" = i64, Path, description = "The event's cursor", minimum = 1)),
    responses(
        (status = 200, description = "The event", body = EventJson),
        (status = 400, description = "Not a positive integer", body = super::error::ErrorBody),
        (status = 404, description = "No event has this cursor", body = super::error::ErrorBody),
        (status = 503, description = "The database is busy: retry", body = super::error::ErrorBody),
    ))]
pub(super) async fn one(
    State(state): State<AppState>,
    Path(cursor): Path<String>,
) -> Result<Json<EventJson>, ApiError> {
    let cursor: Cursor = cursor
        .parse()
        .ok()
        .filter(|c: &Cursor| *c > 0)
        .ok_or_else(|| ApiError::bad_request("cursor", "not a positive integer"))?;
    let event = state
        .store
        .event_by_cursor(cursor)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event with cursor {cursor}")))?;
    Ok(Json(EventJson::from(&event)))
}

/// Reads the filters of `/v1/events` (and `/v1/stream`), naming the parameter at fault.
/// Unknown parameters are refused: a misspelt filter silently ignored returns the wrong rows.
/// So is a single-valued filter given twice (which one wins would be a guess) and an empty
/// value (an empty address list would match every address). Only `address` repeats, and may
/// hold a list. Addresses and hashes follow [`parse_address`] and [`parse_hash`]; the chain is
/// checked against the configured ones by [`check_chain`].
pub fn parse_query(raw: &str) -> Result<EventQuery, ApiError> {
    let mut q = EventQuery {
        limit: DEFAULT_LIMIT,
        ..EventQuery::default()
    };
    let mut given: Vec<String> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let field = key.as_ref();
        let value = value.as_ref();
        let bad = |message: &str| ApiError::bad_request(field, message);
        if field != "address" {
            if given.iter().any(|g| g == field) {
                return Err(bad("given more than once"));
            }
            given.push(field.to_owned());
        }
        if value.is_empty() {
            return Err(bad("is empty: give a value or leave the parameter out"));
        }
        match field {
            "chain" => q.filter.chain = Some(value.to_owned()),
            "kind" => {
                q.filter.kind = Some(
                    value
                        .parse::<EventKind>()
                        .map_err(|e| bad(&e.to_string()))?,
                )
            }
            "address" => {
                for part in value.split(',') {
                    q.filter.addresses.push(parse_address(part).map_err(&bad)?);
                }
            }
            "topic0" | "topic1" | "topic2" | "topic3" => {
                let i = usize::from(field.as_bytes()[5] - b'0');
                q.filter.topics[i] = Some(parse_hash(value).map_err(&bad)?);
            }
            "from_block" => q.filter.from_block = Some(parse_block(value).map_err(&bad)?),
            "to_block" => q.filter.to_block = Some(parse_block(value).map_err(&bad)?),
            "tx_hash" => q.filter.tx_hash = Some(parse_hash(value).map_err(&bad)?),
            "block_hash" => q.filter.block_hash = Some(parse_hash(value).map_err(&bad)?),
            "include_removed" => q.include_removed = parse_bool(value).map_err(&bad)?,
            "finality" => {
                q.filter.finality =
                    Some(value.parse::<Finality>().map_err(|e| bad(&e.to_string()))?)
            }
            "after" => q.after = Some(parse_cursor(value).map_err(&bad)?),
            "limit" => {
                let n = parse_u64(value).map_err(&bad)?;
                if n == 0 || n > u64::from(MAX_LIMIT) {
                    return Err(bad(&format!("must be between 1 and {MAX_LIMIT}")));
                }
                q.limit = n as u32;
            }
            "order" => {
                q.order = match value {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => return Err(bad("expected asc or desc")),
                }
            }
            // `since` belongs to /v1/stream; the stream parses it before calling this.
            _ => return Err(ApiError::bad_request(field, "unknown parameter")),
        }
    }
    if let (Some(from), Some(to)) = (q.filter.from_block, q.filter.to_block)
        && from > to
    {
        return Err(ApiError::bad_request(
            "from_block",
            "is greater than to_block",
        ));
    }
    Ok(q)
}

/// A block number as the store keeps it (SQLite's signed 64-bit INTEGER). Refused here rather
/// than in the store, where it would surface as an internal error instead of a 400.
fn parse_block(value: &str) -> Result<u64, &'static str> {
    let n = parse_u64(value)?;
    match i64::try_from(n) {
        Ok(_) => Ok(n),
        Err(_) => Err("a block number must be at most 9223372036854775807"),
    }
}

fn parse_u64(value: &str) -> Result<u64, &'static str> {
    value
        .parse::<u64>()
        .map_err(|_| "not a non-negative integer")
}

fn parse_cursor(value: &str) -> Result<Cursor, &'static str> {
    value
        .parse::<Cursor>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or("not a non-negative integer")
}

/// Refuses a `chain` filter naming no configured chain: a typo would otherwise read as a chain
/// with no events. The message lists the chains there are.
pub fn check_chain(chain: Option<&str>, known: &[&str]) -> Result<(), ApiError> {
    let Some(name) = chain else {
        return Ok(());
    };
    if known.contains(&name) {
        return Ok(());
    }
    let message = if known.is_empty() {
        format!("unknown chain {name:?}: no chain is configured")
    } else {
        format!("unknown chain {name:?}; known chains: {}", known.join(", "))
    };
    Err(ApiError::bad_request("chain", message))
}

/// An address is `0x` and 40 hex digits. All in lower or all in upper case, it is taken as
/// written; in mixed case it is an EIP-55 checksum and must be a valid one, so a mistyped
/// digit is caught rather than matched against some other address.
fn parse_address(value: &str) -> Result<Address, &'static str> {
    let digits = hex_digits(value, 40).ok_or("not an address: 0x and 40 hex digits")?;
    let lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if lower && upper {
        return Address::parse_checksummed(value, None).map_err(|_| {
            "bad EIP-55 checksum: mixed-case hex must be the address's checksum (or write the \
             address all in lower case)"
        });
    }
    value
        .parse::<Address>()
        .map_err(|_| "not an address: 0x and 40 hex digits")
}

/// A topic or hash is `0x` and 64 hex digits, in any case.
fn parse_hash(value: &str) -> Result<B256, &'static str> {
    hex_digits(value, 64)
        .and_then(|_| value.parse::<B256>().ok())
        .ok_or("not a 32-byte hash: 0x and 64 hex digits")
}

/// The hex digits of `value` if it is `0x` and exactly `len` of them.
fn hex_digits(value: &str, len: usize) -> Option<&str> {
    value
        .strip_prefix("0x")
        .filter(|d| d.len() == len && d.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn parse_bool(value: &str) -> Result<bool, &'static str> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(raw: &str) -> String {
        match parse_query(raw) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("{raw}: expected a bad request, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn every_filter_parses() {
        let q = parse_query(
            "chain=devnet&kind=log&address=0x00000000000000000000000000000000000000aa&address=0x00000000000000000000000000000000000000bb\
             &topic0=0x000000000000000000000000000000000000000000000000000000000000002a&from_block=1&to_block=9\
             &include_removed=true&finality=safe&after=10&limit=1000&order=desc",
        )
        .unwrap();
        assert_eq!(q.filter.chain.as_deref(), Some("devnet"));
        assert_eq!(q.filter.kind, Some(EventKind::Log));
        assert_eq!(q.filter.addresses.len(), 2);
        assert!(q.filter.topics[0].is_some() && q.filter.topics[1].is_none());
        assert_eq!(
            (q.filter.from_block, q.filter.to_block, q.after),
            (Some(1), Some(9), Some(10))
        );
        assert!(q.include_removed);
        assert_eq!(q.filter.finality, Some(Finality::Safe));
        assert_eq!((q.limit, q.order), (1000, Order::Desc));
        assert_eq!(parse_query("").unwrap().limit, DEFAULT_LIMIT);
        let q = parse_query(
            "address=0x00000000000000000000000000000000000000aa,0x00000000000000000000000000000000000000bb\
             &address=0x00000000000000000000000000000000000000cc&to_block=9223372036854775807",
        )
        .unwrap();
        assert_eq!(q.filter.addresses.len(), 3);
        assert_eq!(q.filter.to_block, Some(i64::MAX as u64));
    }

    #[test]
    fn bad_input_names_its_field() {
        let cases = [
            ("kind=tx", "kind"),
            ("address=0x12", "address"),
            ("topic2=zz", "topic2"),
            ("from_block=-1", "from_block"),
            ("to_block=ten", "to_block"),
            ("from_block=5&to_block=4", "from_block"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("order=up", "order"),
            ("after=x", "after"),
            ("finality=final", "finality"),
            ("include_removed=maybe", "include_removed"),
            ("tx_hash=0x1", "tx_hash"),
            ("colour=red", "colour"),
            ("address=", "address"),
            (
                "address=0x00000000000000000000000000000000000000aa,",
                "address",
            ),
            ("to_block=9223372036854775808", "to_block"),
            ("from_block=18446744073709551616", "from_block"),
            ("kind=block&kind=log", "kind"),
            ("limit=5&limit=6", "limit"),
            ("chain=", "chain"),
            // No `0x`, a capital `0X`, or a hash without its prefix.
            (
                "address=00000000000000000000000000000000000000aa",
                "address",
            ),
            (
                "address=0X00000000000000000000000000000000000000aa",
                "address",
            ),
            (
                "topic0=000000000000000000000000000000000000000000000000000000000000002a",
                "topic0",
            ),
            (
                "block_hash=0X000000000000000000000000000000000000000000000000000000000000002a",
                "block_hash",
            ),
        ];
        for (raw, field) in cases {
            assert_eq!(field_of(raw), field, "{raw}");
        }
    }

    /// EIP-55: one case throughout is taken as written; mixed case must be the checksum.
    #[test]
    fn addresses_follow_the_checksum_rule() {
        let checksummed = "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045";
        let address = Address::parse_checksummed(checksummed, None).expect("a valid checksum");
        for good in [
            checksummed.to_owned(),
            checksummed.to_lowercase(),
            format!("0x{}", checksummed[2..].to_uppercase()),
        ] {
            let q = parse_query(&format!("address={good}")).unwrap();
            assert_eq!(q.filter.addresses, vec![address], "{good}");
        }
        // One letter's case flipped: the checksum no longer holds.
        let bad = checksummed.replacen('d', "D", 1);
        match parse_query(&format!("address={bad}")) {
            Err(ApiError::BadRequest { field, message }) => {
                assert_eq!(field, "address");
                assert!(message.contains("EIP-55"), "{message}");
                assert!(!message.contains("  "), "a run of spaces in {message:?}");
            }
            other => panic!("{bad}: expected a bad request, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn only_configured_chains_are_known() {
        let known = ["devnet", "mainnet"];
        check_chain(None, &known).unwrap();
        check_chain(Some("mainnet"), &known).unwrap();
        match check_chain(Some("nope"), &known) {
            Err(ApiError::BadRequest { field, message }) => {
                assert_eq!(field, "chain");
                assert!(
                    message.contains("nope") && message.contains("devnet, mainnet"),
                    "{message}"
                );
            }
            other => panic!("expected a bad request, got {other:?}"),
        }
        assert!(check_chain(Some("devnet"), &[]).is_err());
    }
}
