//! `chains.<name>.subscriptions`: `- blocks: true` and `- logs: { address, topics, from_block }`.
//!
//! Addresses and topics are parsed with alloy's types, never hand-rolled hex. A mixed-case
//! address must carry a valid EIP-55 checksum: a wrong one almost always means a typo, and a
//! typo here silently indexes nothing.

use alloy_primitives::{Address, B256};
use serde_norway::Value;

use super::walk::{self, Issues, Map, index};
use super::{LogSubscription, Subscription};

/// `eth_getLogs` and `eth_subscribe` filters have four topic positions.
const MAX_TOPIC_POSITIONS: usize = 4;

/// Reads the list. An explicit empty list is kept (with a warning): the operator said so.
pub(super) fn list(
    value: &Value,
    path: &str,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> Vec<Subscription> {
    let Some(items) = walk::list(value, path, issues) else {
        return Vec::new();
    };
    if items.is_empty() {
        warnings.push(format!(
            "{path}: empty: no logs are indexed, only the chain's block headers are stored"
        ));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        match one(item, &item_path, issues) {
            // Two `blocks: true` entries mean one block stream.
            Some(Subscription::Blocks) if out.contains(&Subscription::Blocks) => {}
            Some(subscription) => out.push(subscription),
            None => {}
        }
    }
    out
}

/// One entry: a mapping with exactly one of `blocks` or `logs`.
fn one(value: &Value, path: &str, issues: &mut Issues) -> Option<Subscription> {
    let m = Map::read(value, path, &["blocks", "logs"], issues)?;
    match (m.raw("blocks"), m.raw("logs")) {
        (Some(_), Some(_)) => {
            issues.push(path, "expected exactly one of `blocks` or `logs` per entry");
            None
        }
        (Some(blocks), None) => match walk::boolean(blocks, &m.path_of("blocks"), issues)? {
            true => Some(Subscription::Blocks),
            // `blocks: false` is an explicit "no": honour it rather than error.
            false => None,
        },
        // `- logs:` with nothing under it reads as `logs: {}`: every log on the chain.
        (None, Some(logs)) => logs_filter(logs, &m.path_of("logs"), issues).map(Subscription::Logs),
        (None, None) => {
            issues.push(path, "expected `blocks: true` or `logs: {...}`");
            None
        }
    }
}

fn logs_filter(value: &Value, path: &str, issues: &mut Issues) -> Option<LogSubscription> {
    let m = Map::read(value, path, &["address", "topics", "from_block"], issues)?;
    let before = issues.0.len();
    let address = match m.get("address") {
        // One address may be written without brackets, as in JSON-RPC filters.
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| address(item, &index(&m.path_of("address"), i), issues))
            .collect(),
        Some(single) => address(single, &m.path_of("address"), issues)
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    let topics = match m.get("topics") {
        Some(value) => topics(value, &m.path_of("topics"), issues),
        None => Vec::new(),
    };
    let from_block = m.opt("from_block", issues, &walk::uint(0, u64::MAX));
    (issues.0.len() == before).then_some(LogSubscription {
        address,
        topics,
        from_block,
    })
}

/// Hex text. YAML reads a short unquoted `0x12` as the integer 18, so say how to fix that.
fn hex_string(value: &Value, path: &str, issues: &mut Issues) -> Option<String> {
    if let Value::Number(_) = value {
        issues.push(
            path,
            "expected a quoted \"0x...\" string (YAML reads unquoted hex as a number)",
        );
        return None;
    }
    walk::string(value, path, issues)
}

fn address(value: &Value, path: &str, issues: &mut Issues) -> Option<Address> {
    let text = hex_string(value, path, issues)?;
    let text = text.trim();
    let hex = text.strip_prefix("0x").unwrap_or("");
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        issues.push(path, "not an address (0x followed by 40 hex digits)");
        return None;
    }
    let mixed_case =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    let parsed = if mixed_case {
        Address::parse_checksummed(text, None)
    } else {
        text.parse::<Address>().map_err(Into::into)
    };
    match parsed {
        Ok(address) => Some(address),
        Err(_) if mixed_case => {
            issues.push(
                path,
                "bad EIP-55 checksum (a typo? write the address in lowercase to skip the check)",
            );
            None
        }
        Err(_) => {
            issues.push(path, "not an address (0x followed by 40 hex digits)");
            None
        }
    }
}

/// Up to four positions; each is null (any), one topic, or a list of alternatives.
fn topics(value: &Value, path: &str, issues: &mut Issues) -> Vec<Option<Vec<B256>>> {
    let Some(positions) = walk::list(value, path, issues) else {
        return Vec::new();
    };
    if positions.len() > MAX_TOPIC_POSITIONS {
        issues.push(
            path,
            format!(
                "at most {MAX_TOPIC_POSITIONS} topic positions, got {}",
                positions.len()
            ),
        );
    }
    positions
        .iter()
        .enumerate()
        .map(|(i, position)| {
            let position_path = index(path, i);
            match position {
                Value::Null => None,
                // `[]` at a position matches anything, as in geth's filter semantics.
                Value::Sequence(alternatives) if alternatives.is_empty() => None,
                Value::Sequence(alternatives) => Some(
                    alternatives
                        .iter()
                        .enumerate()
                        .filter_map(|(j, t)| topic(t, &index(&position_path, j), issues))
                        .collect(),
                ),
                single => Some(topic(single, &position_path, issues).into_iter().collect()),
            }
        })
        .collect()
}

fn topic(value: &Value, path: &str, issues: &mut Issues) -> Option<B256> {
    let text = hex_string(value, path, issues)?;
    let text = text.trim();
    let valid = text
        .strip_prefix("0x")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    match text.parse::<B256>() {
        Ok(topic) if valid => Some(topic),
        _ => {
            issues.push(path, "not a topic (0x followed by 64 hex digits)");
            None
        }
    }
}
