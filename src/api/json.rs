//! Response JSON shapes (`docs/api.md`), built from domain values.

use serde::Serialize;

use crate::domain::{Cursor, StoredEvent};

/// One event as the API shows it: blocks leave the log fields null; logs carry their block's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventJson {
    pub cursor: Cursor,
    pub chain: String,
    pub kind: &'static str,
    pub block_number: u64,
    pub block_hash: String,
    pub parent_hash: String,
    pub block_timestamp: u64,
    pub tx_hash: Option<String>,
    pub tx_index: Option<u64>,
    pub log_index: Option<u64>,
    pub address: Option<String>,
    pub topics: Option<Vec<String>>,
    pub data: Option<String>,
    pub removed: bool,
    pub finality: &'static str,
    pub first_provider: String,
    pub providers_seen: u32,
    pub received_at: String,
}

impl From<&StoredEvent> for EventJson {
    fn from(stored: &StoredEvent) -> Self {
        let event = &stored.event;
        let log = event.log.as_ref();
        EventJson {
            cursor: stored.cursor,
            chain: event.chain.to_string(),
            kind: event.kind().as_str(),
            block_number: event.block.number,
            block_hash: event.block.hash.to_string(),
            parent_hash: event.block.parent_hash.to_string(),
            block_timestamp: event.block_timestamp,
            tx_hash: log.map(|l| l.tx_hash.to_string()),
            tx_index: log.map(|l| l.tx_index),
            log_index: log.map(|l| l.log_index),
            address: log.map(|l| l.address.to_checksum(None)),
            topics: log.map(|l| l.topics.iter().map(ToString::to_string).collect()),
            data: log.map(|l| l.data.to_string()),
            removed: stored.removed,
            finality: stored.finality.as_str(),
            first_provider: stored.first_provider.clone(),
            providers_seen: stored.providers_seen,
            received_at: rfc3339_ms(stored.received_at_ms),
        }
    }
}

/// Milliseconds since the epoch as `2026-11-24T13:00:00.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
    }
}
