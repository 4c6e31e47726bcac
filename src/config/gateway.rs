//! `gateway`: the JSON-RPC gateway's limits, timeouts and method lists.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_norway::Value;

use super::walk::{self, Issues, Map};
use super::{
    GatewayConfig, MAX_DYNAMIC_FILTERS, MAX_GATEWAY_BATCH, MAX_GATEWAY_BODY, MAX_GATEWAY_CACHE,
    MAX_STREAM_SESSIONS, MAX_WS_CALLS_PER_SECOND,
};

const KEYS: &[&str] = &[
    "enabled",
    "max_body_bytes",
    "max_batch",
    "timeout",
    "method_timeouts",
    "allow_methods",
    "deny_methods",
    "provider_header",
    "max_dynamic_filters",
    "cache_bytes",
    "head_from_streams",
    "ws_calls_per_second",
    "max_ws_sessions",
    "max_ws_sessions_per_client",
];

/// The smallest body limit accepted: room for one ordinary call.
const MIN_BODY: usize = 1024;

pub(super) fn gateway(value: &Value, path: &str, issues: &mut Issues) -> GatewayConfig {
    let mut out = GatewayConfig::default();
    let Some(m) = Map::read(value, path, KEYS, issues) else {
        return out;
    };
    if let Some(on) = m.opt("enabled", issues, &walk::boolean) {
        out.enabled = on;
    }
    if let Some(n) = m.opt(
        "max_body_bytes",
        issues,
        &walk::size(MIN_BODY, MAX_GATEWAY_BODY),
    ) {
        out.max_body_bytes = n;
    }
    if let Some(n) = m.opt("max_batch", issues, &walk::size(1, MAX_GATEWAY_BATCH)) {
        out.max_batch = n;
    }
    if let Some(d) = m.opt("timeout", issues, &walk::duration(true)) {
        out.timeout = d;
    }
    if let Some(timeouts) = m.opt("method_timeouts", issues, &method_timeouts) {
        out.method_timeouts = timeouts;
    }
    if let Some(list) = m.opt("allow_methods", issues, &methods) {
        out.allow_methods = list;
    }
    if let Some(list) = m.opt("deny_methods", issues, &methods) {
        out.deny_methods = list;
    }
    if let Some(on) = m.opt("provider_header", issues, &walk::boolean) {
        out.provider_header = on;
    }
    if let Some(n) = m.opt(
        "max_dynamic_filters",
        issues,
        &walk::size(0, MAX_DYNAMIC_FILTERS),
    ) {
        out.max_dynamic_filters = n;
    }
    if let Some(n) = m.opt("cache_bytes", issues, &walk::size(0, MAX_GATEWAY_CACHE)) {
        out.cache_bytes = n;
    }
    if let Some(on) = m.opt("head_from_streams", issues, &walk::boolean) {
        out.head_from_streams = on;
    }
    let rate = walk::size(1, MAX_WS_CALLS_PER_SECOND as usize);
    if let Some(n) = m.opt("ws_calls_per_second", issues, &rate) {
        out.ws_calls_per_second = u32::try_from(n).unwrap_or(MAX_WS_CALLS_PER_SECOND);
    }
    let sessions = walk::size(1, MAX_STREAM_SESSIONS);
    if let Some(n) = m.opt("max_ws_sessions", issues, &sessions) {
        out.max_ws_sessions = n;
    }
    if let Some(n) = m.opt("max_ws_sessions_per_client", issues, &sessions) {
        out.max_ws_sessions_per_client = n;
    }
    out
}

/// A JSON-RPC method name as nodes spell them: `[A-Za-z0-9_]+`.
fn method_name(value: &Value, path: &str, issues: &mut Issues) -> Option<String> {
    let name = walk::string(value, path, issues)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        issues.push(
            path,
            format!("{name:?} is not a JSON-RPC method name (e.g. eth_getLogs)"),
        );
        return None;
    }
    Some(name)
}

fn methods(value: &Value, path: &str, issues: &mut Issues) -> Option<Vec<String>> {
    let items = walk::list(value, path, issues)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(name) = method_name(item, &walk::index(path, i), issues) {
            out.push(name);
        }
    }
    Some(out)
}

fn method_timeouts(
    value: &Value,
    path: &str,
    issues: &mut Issues,
) -> Option<BTreeMap<String, Duration>> {
    let Value::Mapping(mapping) = value else {
        walk::report_type(
            value,
            path,
            "a mapping of method names to durations",
            issues,
        );
        return None;
    };
    let mut out = BTreeMap::new();
    for (key, value) in mapping {
        let at = walk::join(path, &walk::key_text(key));
        let name = method_name(key, &at, issues);
        let timeout = walk::duration(true)(value, &at, issues);
        if let (Some(name), Some(timeout)) = (name, timeout) {
            out.insert(name, timeout);
        }
    }
    Some(out)
}
