//! Method names the gateway treats specially: writes (sent once), the configured allow and
//! deny lists, and the names used as metric labels.

use crate::config::GatewayConfig;

/// Methods that change state at the provider: never sent twice on a guess.
const WRITES: &[&str] = &[
    "eth_sendRawTransaction",
    "eth_sendTransaction",
    "eth_sendRawTransactionConditional",
    "eth_sendBundle",
    "eth_sendPrivateTransaction",
];

pub fn is_write(method: &str) -> bool {
    WRITES.contains(&method)
}

/// The answer to a write from a caller who may only read (not on this host, no
/// `server.auth_token`); `None` for any other call.
pub fn write_refused(call: &super::Call) -> Option<super::Reply> {
    is_write(&call.method).then(|| {
        super::Reply::error(
            call.id.clone(),
            super::reply::TRANSACTION_REJECTED,
            &format!(
                "{} needs a caller on this host or server.auth_token (Authorization: Bearer …)",
                call.method
            ),
            None,
        )
    })
}

/// Why `method` is not forwarded, when it is not: the `-32601` message a node gives for a
/// method it does not serve, naming the list that refused it.
pub fn refusal(config: &GatewayConfig, method: &str) -> Option<String> {
    if config.deny_methods.iter().any(|m| m == method) {
        return Some(format!(
            "the method {method} does not exist/is not available (denied by gateway.deny_methods)"
        ));
    }
    if !config.allow_methods.is_empty() && !config.allow_methods.iter().any(|m| m == method) {
        return Some(format!(
            "the method {method} does not exist/is not available (not in gateway.allow_methods)"
        ));
    }
    None
}

/// Method names kept as metric labels; any other is `other`, so callers cannot grow the
/// label set without bound.
const LABELS: &[&str] = &[
    "eth_blockNumber",
    "eth_call",
    "eth_chainId",
    "eth_createAccessList",
    "eth_estimateGas",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getBlockReceipts",
    "eth_getBlockTransactionCountByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getCode",
    "eth_getLogs",
    "eth_getProof",
    "eth_getStorageAt",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction",
    "eth_sendTransaction",
    "eth_subscribe",
    "eth_syncing",
    "eth_unsubscribe",
    "net_version",
    "web3_clientVersion",
];

pub fn label(method: &str) -> &'static str {
    LABELS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_over_allow_and_empty_allow_allows_all() {
        let mut config = GatewayConfig::default();
        assert!(refusal(&config, "eth_sendRawTransaction").is_none());
        config.deny_methods = vec!["eth_sendRawTransaction".into()];
        config.allow_methods = vec!["eth_sendRawTransaction".into(), "eth_call".into()];
        let why = refusal(&config, "eth_sendRawTransaction").unwrap_or_default();
        assert!(why.contains("gateway.deny_methods"), "{why}");
        assert!(refusal(&config, "eth_call").is_none());
        let why = refusal(&config, "eth_getLogs").unwrap_or_default();
        assert!(why.contains("gateway.allow_methods"), "{why}");
        assert_eq!(label("eth_getLogs"), "eth_getLogs");
        assert_eq!(label("eth_anything"), "other");
    }
}
