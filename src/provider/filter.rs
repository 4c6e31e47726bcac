//! A `logs` filter in the JSON shape `eth_subscribe` and `eth_getLogs` take.
//!
//! Not alloy's `Filter`: its serialisation drops trailing `null` topic positions, and Geth
//! drops logs with fewer topics than the filter lists positions, so a filter sent that way
//! would match more on Geth than the one configured.

use alloy_primitives::{Address, B256};
use alloy_rpc_types_eth::BlockNumberOrTag;
use serde::Serialize;

/// One `logs` filter: addresses (any of) and up to four topic positions (null = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    pub address: Vec<Address>,
    pub topics: Vec<Option<Vec<B256>>>,
}

/// The filter object on the wire; empty address and topic lists are left out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FilterWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from_block: Option<BlockNumberOrTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_block: Option<BlockNumberOrTag>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    address: &'a [Address],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    topics: &'a [Option<Vec<B256>>],
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

    /// The filter object without a block range (as `eth_subscribe` takes it).
    pub(super) fn wire(&self) -> FilterWire<'_> {
        FilterWire {
            from_block: None,
            to_block: None,
            address: &self.address,
            topics: &self.topics,
        }
    }

    /// The filter object for `eth_getLogs` over `from..=to`.
    pub(super) fn range_wire(&self, from: u64, to: u64) -> FilterWire<'_> {
        FilterWire {
            from_block: Some(BlockNumberOrTag::Number(from)),
            to_block: Some(BlockNumberOrTag::Number(to)),
            ..self.wire()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn json_shapes() {
        let all = LogFilter {
            address: vec![],
            topics: vec![],
        };
        let value = |wire: FilterWire<'_>| serde_json::to_value(wire).expect("serialises");
        assert_eq!(value(all.wire()), json!({}));
        assert_eq!(
            value(all.range_wire(1, 16)),
            json!({"fromBlock": "0x1", "toBlock": "0x10"})
        );
        let some = LogFilter {
            address: vec![Address::repeat_byte(0xaa)],
            topics: vec![None, Some(vec![B256::repeat_byte(1)]), None],
        };
        let v = value(some.wire());
        assert_eq!(
            v["address"][0],
            json!("0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(v["topics"][0], Value::Null);
        assert_eq!(v["topics"][1][0], json!(B256::repeat_byte(1).to_string()));
        assert_eq!(
            v["topics"].as_array().map(Vec::len),
            Some(3),
            "a trailing null position is kept"
        );
    }
}
