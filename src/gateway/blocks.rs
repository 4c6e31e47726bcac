//! Which block a caller's call is about: an explicit height a provider must have reached, or a
//! tag (`latest`, `safe`, `finalized`) whose answers must not move backwards for that caller.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::Call;

/// A block tag whose answers are kept monotonic per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Latest,
    Safe,
    Finalized,
}

impl Tag {
    pub fn slot(self) -> usize {
        self as usize
    }
}

/// What a call asks of a provider's chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// The highest explicit block height in the call.
    pub number: Option<u64>,
    /// The tag the call reads at (an omitted block parameter reads `latest`).
    pub tag: Option<Tag>,
    /// The answer is a block height at `tag` (`eth_blockNumber`) or a block object whose
    /// `number` is (`eth_getBlockByNumber` of a tag): checked against the caller's floor.
    pub reports: Option<Reports>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    Quantity,
    Block,
}

/// Where each method takes its block parameter (position in `params`).
fn block_param(method: &str) -> Option<usize> {
    Some(match method {
        "eth_getBlockByNumber"
        | "eth_getBlockTransactionCountByNumber"
        | "eth_getTransactionByBlockNumberAndIndex"
        | "eth_getUncleByBlockNumberAndIndex"
        | "eth_getUncleCountByBlockNumber"
        | "eth_getBlockReceipts"
        | "debug_getRawBlock"
        | "debug_getRawHeader"
        | "debug_getRawReceipts"
        | "debug_traceBlockByNumber" => 0,
        "eth_getBalance"
        | "eth_getCode"
        | "eth_getTransactionCount"
        | "eth_call"
        | "eth_estimateGas"
        | "eth_createAccessList"
        | "eth_feeHistory"
        | "eth_simulateV1"
        | "debug_traceCall" => 1,
        "eth_getStorageAt" | "eth_getProof" => 2,
        _ => return None,
    })
}

/// Whether `method` reads the chain at a block parameter.
pub fn reads_block(method: &str) -> bool {
    block_param(method).is_some()
}

/// Methods whose block parameter is required: its absence is the node's error, not `latest`.
fn param_required(method: &str) -> bool {
    block_param(method) == Some(0) || method == "eth_feeHistory"
}

/// What `call` needs. Unknown methods and unreadable params need nothing: the provider judges.
pub fn need(call: &Call) -> Need {
    let params = call.params.as_deref();
    match call.method.as_str() {
        "eth_blockNumber" => {
            return Need {
                tag: Some(Tag::Latest),
                reports: Some(Reports::Quantity),
                ..Need::default()
            };
        }
        "eth_getLogs" => return logs_need(params),
        _ => {}
    }
    let Some(at) = block_param(&call.method) else {
        return Need::default();
    };
    let list: Vec<&RawValue> = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let mut need = match list.get(at) {
        Some(param) => block_need(param),
        None if param_required(&call.method) => Need::default(),
        None => Need {
            tag: Some(Tag::Latest),
            ..Need::default()
        },
    };
    if call.method == "eth_getBlockByNumber" && need.tag.is_some() {
        need.reports = Some(Reports::Block);
    }
    need
}

/// A block parameter: a height, a tag, or an EIP-1898 object (`blockNumber` or `blockHash`).
fn block_need(param: &RawValue) -> Need {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ByObject {
        block_number: Option<String>,
    }
    let text = match serde_json::from_str::<String>(param.get()) {
        Ok(text) => text,
        Err(_) => match serde_json::from_str::<ByObject>(param.get()) {
            Ok(ByObject {
                block_number: Some(text),
            }) => text,
            _ => return Need::default(),
        },
    };
    match text.as_str() {
        "latest" | "pending" => Need {
            tag: Some(Tag::Latest),
            ..Need::default()
        },
        "safe" => Need {
            tag: Some(Tag::Safe),
            ..Need::default()
        },
        "finalized" => Need {
            tag: Some(Tag::Finalized),
            ..Need::default()
        },
        other => Need {
            number: quantity(other),
            ..Need::default()
        },
    }
}

/// `eth_getLogs`: the higher end of its range (`toBlock` defaults to `latest`); a `blockHash`
/// filter names no height.
fn logs_need(params: Option<&RawValue>) -> Need {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Filter<'a> {
        #[serde(borrow)]
        from_block: Option<&'a RawValue>,
        #[serde(borrow)]
        to_block: Option<&'a RawValue>,
        #[serde(borrow)]
        block_hash: Option<&'a RawValue>,
    }
    let Some(list) = params.and_then(|p| serde_json::from_str::<Vec<Filter>>(p.get()).ok()) else {
        return Need::default();
    };
    let Some(filter) = list.first() else {
        return Need::default();
    };
    if filter.block_hash.is_some() {
        return Need::default();
    }
    let from = filter.from_block.map(block_need).unwrap_or_default();
    let to = match filter.to_block {
        Some(to) => block_need(to),
        None => Need {
            tag: Some(Tag::Latest),
            ..Need::default()
        },
    };
    Need {
        number: from.number.max(to.number),
        tag: to.tag.or(from.tag),
        reports: None,
    }
}

/// A hex quantity (`0x1a`), as nodes read block heights.
pub fn quantity(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The height an answer reports for a [`Reports`] call: the quantity, or the block's `number`.
pub fn reported(reports: Reports, result: &RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    struct Numbered {
        number: Option<String>,
    }
    let text = match reports {
        Reports::Quantity => serde_json::from_str::<String>(result.get()).ok()?,
        Reports::Block => {
            serde_json::from_str::<Numbered>(result.get())
                .ok()?
                .number?
        }
    };
    quantity(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, params: &str) -> Call {
        Call {
            id: None,
            method: method.into(),
            params: RawValue::from_string(params.into()).ok(),
        }
    }

    #[test]
    fn block_parameters_are_found_where_each_method_takes_them() {
        let latest = Some(Tag::Latest);
        let cases: &[(&str, &str, Option<u64>, Option<Tag>)] = &[
            ("eth_getBlockByNumber", r#"["0x10", false]"#, Some(16), None),
            (
                "eth_getBlockByNumber",
                r#"["finalized", false]"#,
                None,
                Some(Tag::Finalized),
            ),
            ("eth_getBalance", r#"["0x00", "0x20"]"#, Some(32), None),
            ("eth_getBalance", r#"["0x00"]"#, None, latest),
            ("eth_call", r#"[{}, {"blockNumber": "0x5"}]"#, Some(5), None),
            ("eth_call", r#"[{}, {"blockHash": "0xab"}]"#, None, None),
            (
                "eth_getStorageAt",
                r#"["0x0", "0x0", "safe"]"#,
                None,
                Some(Tag::Safe),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock": "0x1", "toBlock": "0x9"}]"#,
                Some(9),
                None,
            ),
            ("eth_getLogs", r#"[{"fromBlock": "0x1"}]"#, Some(1), latest),
            ("eth_getLogs", r#"[{"blockHash": "0xab"}]"#, None, None),
            ("eth_getTransactionByHash", r#"["0xab"]"#, None, None),
            ("eth_getBlockByNumber", r#"["0xzz", false]"#, None, None),
            ("eth_getBlockByNumber", r#"[]"#, None, None),
            ("eth_blockNumber", "[]", None, latest),
        ];
        for (method, params, number, tag) in cases {
            let need = need(&call(method, params));
            assert_eq!(
                (need.number, need.tag),
                (*number, *tag),
                "{method} {params}"
            );
        }
    }

    #[test]
    fn answers_report_their_height() {
        let raw = |s: &str| RawValue::from_string(s.into()).expect("raw");
        assert_eq!(reported(Reports::Quantity, &raw("\"0x36\"")), Some(0x36));
        assert_eq!(
            reported(Reports::Block, &raw(r#"{"number":"0x7","hash":"0x"}"#)),
            Some(7)
        );
        assert_eq!(reported(Reports::Block, &raw("null")), None);
        assert_eq!(quantity("0x"), None);
        assert_eq!(quantity("0x10000000000000000"), None);
    }
}
