//! What a chain subscribes to, in the JSON shapes `eth_subscribe` and `eth_getLogs` take.

use alloy_primitives::{Address, B256};
use serde_json::{Value, json};

use crate::config::{LogSubscription, Subscription};

/// One `logs` filter: addresses (any of) and up to four topic positions (null = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    pub address: Vec<Address>,
    pub topics: Vec<Option<Vec<B256>>>,
}

impl LogFilter {
    /// Whether every log of the chain matches (no address, no topic constraint).
    pub fn takes_everything(&self) -> bool {
        self.address.is_empty()
            && self
                .topics
                .iter()
                .all(|t| t.as_ref().is_none_or(Vec::is_empty))
    }

    fn from_config(sub: &LogSubscription) -> LogFilter {
        LogFilter {
            address: sub.address.clone(),
            topics: sub.topics.clone(),
        }
    }

    /// The filter object without a block range (as `eth_subscribe` takes it).
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        if !self.address.is_empty() {
            object.insert("address".into(), json!(self.address));
        }
        if !self.topics.is_empty() {
            object.insert("topics".into(), json!(self.topics));
        }
        Value::Object(object)
    }

    /// The filter object for `eth_getLogs` over `from..=to`.
    pub fn range_json(&self, from: u64, to: u64) -> Value {
        let mut value = self.to_json();
        if let Value::Object(object) = &mut value {
            object.insert("fromBlock".into(), json!(format!("{from:#x}")));
            object.insert("toBlock".into(), json!(format!("{to:#x}")));
        }
        value
    }
}

/// The log filters of a chain's subscriptions and the lowest `from_block` any of them names.
pub fn log_filters(subscriptions: &[Subscription]) -> (Vec<LogFilter>, Option<u64>) {
    let mut filters = Vec::new();
    let mut from_block: Option<u64> = None;
    for sub in subscriptions {
        if let Subscription::Logs(logs) = sub {
            filters.push(LogFilter::from_config(logs));
            if let Some(n) = logs.from_block {
                from_block = Some(from_block.map_or(n, |m| m.min(n)));
            }
        }
    }
    // Two identical filters would fetch every log twice.
    filters.dedup();
    (filters, from_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let all = LogFilter {
            address: vec![],
            topics: vec![],
        };
        assert_eq!(all.to_json(), json!({}));
        assert_eq!(
            all.range_json(1, 16),
            json!({"fromBlock": "0x1", "toBlock": "0x10"})
        );
        let some = LogFilter {
            address: vec![Address::repeat_byte(0xaa)],
            topics: vec![None, Some(vec![B256::repeat_byte(1)])],
        };
        let v = some.to_json();
        assert_eq!(
            v["address"][0],
            json!("0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(v["topics"][0], Value::Null);
        assert_eq!(v["topics"][1][0], json!(B256::repeat_byte(1).to_string()));
    }
}
