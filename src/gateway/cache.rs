//! Answers that cannot change, kept and given again without a provider: a block, its logs or
//! the state at a height the chain has finalized, anything named by a block hash, a transaction
//! or receipt once its block is final, the chain id. Nothing at a tag (`latest`, `pending`,
//! ...) and no error is kept; the bound is in bytes, least recently used first out.

use std::sync::{Mutex, PoisonError};

use lru::LruCache;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::blocks;
use super::request::Call;

/// Per entry, on top of its key and answer: the map's own bookkeeping.
const ENTRY_OVERHEAD: usize = 96;

/// What makes an answer to a call final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// Always the same (the chain id, a block by hash).
    Always,
    /// The answer names its block (`blockNumber`): final once that block is.
    IfItsBlockIs,
}

/// Whether `call`'s answer can be kept, with the chain finalized up to `finalized`.
pub fn finality(call: &Call, finalized: Option<u64>) -> Option<Final> {
    match call.method.as_str() {
        "eth_chainId" | "net_version" => Some(Final::Always),
        "eth_getBlockByHash"
        | "eth_getBlockTransactionCountByHash"
        | "eth_getTransactionByBlockHashAndIndex"
        | "eth_getUncleCountByBlockHash"
        | "eth_getUncleByBlockHashAndIndex" => Some(Final::Always),
        "eth_getTransactionByHash" | "eth_getTransactionReceipt" => Some(Final::IfItsBlockIs),
        "eth_getLogs" if logs_by_hash(call) => Some(Final::Always),
        _ => {
            let need = blocks::need(call);
            let at = need.number?;
            let known = blocks::reads_block(&call.method) || call.method == "eth_getLogs";
            (known && need.tag.is_none() && finalized.is_some_and(|f| at <= f))
                .then_some(Final::Always)
        }
    }
}

/// Whether an answer to a [`Final::IfItsBlockIs`] call is final: its block at or below
/// `finalized`.
pub fn answer_final(result: &RawValue, finalized: Option<u64>) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InBlock {
        block_number: Option<String>,
    }
    let Some(finalized) = finalized else {
        return false;
    };
    serde_json::from_str::<Option<InBlock>>(result.get())
        .ok()
        .flatten()
        .and_then(|a| blocks::quantity(a.block_number.as_deref()?))
        .is_some_and(|n| n <= finalized)
}

fn logs_by_hash(call: &Call) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ByHash<'a> {
        #[serde(borrow)]
        block_hash: Option<&'a RawValue>,
    }
    call.params
        .as_deref()
        .and_then(|p| serde_json::from_str::<Vec<ByHash>>(p.get()).ok())
        .is_some_and(|list| list.len() == 1 && list[0].block_hash.is_some())
}

/// Kept answers by method and params, bounded in bytes.
pub struct Answers {
    budget: usize,
    kept: Mutex<Kept>,
}

struct Kept {
    map: LruCache<String, Box<RawValue>>,
    bytes: usize,
}

fn key(call: &Call) -> String {
    let params = call.params.as_deref().map_or("", RawValue::get);
    let mut key = String::with_capacity(call.method.len() + 1 + params.len());
    key.push_str(&call.method);
    key.push(' ');
    key.push_str(params);
    key
}

impl Answers {
    /// Keeps up to `budget` bytes of answers; 0 keeps none.
    pub fn new(budget: usize) -> Answers {
        Answers {
            budget,
            kept: Mutex::new(Kept {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// The kept answer to `call`, if any.
    pub fn get(&self, call: &Call) -> Option<Box<RawValue>> {
        if self.budget == 0 {
            return None;
        }
        self.lock().map.get(&key(call)).cloned()
    }

    /// Keeps `result` as the answer to `call`; `null` (nothing there yet) is not kept.
    pub fn put(&self, call: &Call, result: &RawValue) {
        if self.budget == 0 || result.get() == "null" {
            return;
        }
        let key = key(call);
        let size = key.len() + result.get().len() + ENTRY_OVERHEAD;
        if size > self.budget / 8 {
            return; // one answer may not crowd out the rest
        }
        let mut kept = self.lock();
        if let Some(old) = kept.map.put(key.clone(), result.to_owned()) {
            kept.bytes -= key.len() + old.get().len() + ENTRY_OVERHEAD;
        }
        kept.bytes += size;
        while kept.bytes > self.budget {
            let Some((k, v)) = kept.map.pop_lru() else {
                break;
            };
            kept.bytes -= k.len() + v.get().len() + ENTRY_OVERHEAD;
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, params: &str) -> Call {
        Call {
            id: None,
            method: method.to_owned(),
            params: RawValue::from_string(params.to_owned()).ok(),
        }
    }

    #[test]
    fn only_what_cannot_change_is_kept() {
        let fin = Some(100);
        let block = |p: &str| finality(&call("eth_getBlockByNumber", p), fin);
        assert_eq!(block(r#"["0x64",false]"#), Some(Final::Always));
        assert_eq!(block(r#"["0x65",false]"#), None, "above finalized");
        assert_eq!(block(r#"["latest",false]"#), None);
        assert_eq!(block(r#"["pending",false]"#), None);
        assert_eq!(block(r#"["finalized",false]"#), None, "a tag moves");
        assert_eq!(
            finality(&call("eth_getBlockByNumber", r#"["0x1",false]"#), None),
            None,
            "nothing is final before the chain says so"
        );
        let logs = |p: &str| finality(&call("eth_getLogs", p), fin);
        assert_eq!(
            logs(r#"[{"fromBlock":"0x1","toBlock":"0x64"}]"#),
            Some(Final::Always)
        );
        assert_eq!(logs(r#"[{"fromBlock":"0x1"}]"#), None, "to latest");
        assert_eq!(logs(r#"[{"fromBlock":"0x1","toBlock":"0x65"}]"#), None);
        assert_eq!(
            logs(
                r#"[{"blockHash":"0x00000000000000000000000000000000000000000000000000000000000000aa"}]"#
            ),
            Some(Final::Always)
        );
        let balance = |p: &str| finality(&call("eth_getBalance", p), fin);
        assert_eq!(
            balance(r#"["0x00000000000000000000000000000000000000aa","0x10"]"#),
            Some(Final::Always)
        );
        assert_eq!(
            balance(r#"["0x00000000000000000000000000000000000000aa"]"#),
            None,
            "latest"
        );
        for method in [
            "eth_sendRawTransaction",
            "eth_gasPrice",
            "eth_blockNumber",
            "web3_clientVersion",
        ] {
            assert_eq!(finality(&call(method, "[]"), fin), None, "{method}");
        }
        assert_eq!(
            finality(&call("eth_chainId", "[]"), None),
            Some(Final::Always)
        );
        assert_eq!(
            finality(&call("eth_getTransactionReceipt", r#"["0xab"]"#), fin),
            Some(Final::IfItsBlockIs)
        );
    }

    #[test]
    fn a_receipt_is_final_with_its_block() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("json");
        assert!(answer_final(
            &raw(r#"{"blockNumber":"0x64","status":"0x1"}"#),
            Some(100)
        ));
        assert!(!answer_final(&raw(r#"{"blockNumber":"0x65"}"#), Some(100)));
        assert!(
            !answer_final(&raw(r#"{"blockNumber":null}"#), Some(100)),
            "pending"
        );
        assert!(!answer_final(&raw("null"), Some(100)));
        assert!(!answer_final(&raw(r#"{"blockNumber":"0x1"}"#), None));
    }

    #[test]
    fn answers_are_bounded_in_bytes_oldest_out() {
        let answers = Answers::new(4096);
        let result = RawValue::from_string(format!("\"{}\"", "a".repeat(300))).expect("json");
        for i in 0..20 {
            answers.put(
                &call("eth_getBlockByHash", &format!("[\"0x{i:x}\",false]")),
                &result,
            );
        }
        assert!(answers.bytes() <= 4096, "{}", answers.bytes());
        assert!(
            answers
                .get(&call("eth_getBlockByHash", "[\"0x0\",false]"))
                .is_none(),
            "oldest out"
        );
        let newest = answers.get(&call("eth_getBlockByHash", "[\"0x13\",false]"));
        assert_eq!(
            newest.map(|r| r.get().to_owned()),
            Some(result.get().to_owned())
        );
        answers.put(
            &call("eth_getBlockByHash", "[\"0xff\",false]"),
            &RawValue::NULL.to_owned(),
        );
        assert!(
            answers
                .get(&call("eth_getBlockByHash", "[\"0xff\",false]"))
                .is_none(),
            "null is not kept"
        );
        let off = Answers::new(0);
        off.put(&call("eth_chainId", "[]"), &result);
        assert!(off.get(&call("eth_chainId", "[]")).is_none());
    }
}
