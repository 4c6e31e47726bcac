//! Entry points for the fuzz targets (`fuzz/`): each takes arbitrary bytes the way the service
//! takes them from outside, and must return — any panic is a finding. Not part of the API.

use crate::config::Config;
use crate::provider::{decode, jsonrpc, methods};

/// A config file: YAML, `${VAR}` substitution (some variables set, some not), validation.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| match name {
        "SET" => Some("value".to_owned()),
        "PORT" => Some("4000".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    if let Ok(loaded) = Config::from_yaml(text, &env) {
        // What `check-config` and the logs print of a loaded config.
        let _ = format!("{:?}", loaded.config);
    }
}

/// A `GET /v1/events` query string.
pub fn rest_query(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::api::events::parse_query(text);
    }
}

/// What a `/v1/stream` client sends: its URL's query string, or a first text message.
pub fn stream_request(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::api::stream::fuzz_request(text);
    }
}

/// A body sent to the gateway (`POST /rpc/{chain}`, or a WebSocket frame there).
pub fn gateway_body(data: &[u8]) {
    crate::gateway::fuzz_body(data);
}

/// A frame from a provider (HTTP body or WebSocket message), and every result in it read as
/// the service reads answers and notifications.
pub fn provider_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frames) = jsonrpc::parse_frame(text) else {
        return;
    };
    for frame in frames {
        let _ = frame.numeric_id();
        let rules = crate::provider::ErrorRules::default();
        let Ok(result) = frame.into_outcome(&rules) else {
            continue;
        };
        let _ = decode::head(&result);
        let _ = decode::log(&result);
        let _ = decode::logs(&result);
        let _ = decode::log_key(&result);
        let _ = methods::read_block_number(&result);
        let _ = methods::read_chain_id(&result);
        let _ = methods::read_block(&result);
        let _ = methods::read_logs(&result);
    }
}
