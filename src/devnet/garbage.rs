//! The malformed WebSocket frames of the garbage fault ([`super::Faults::set_garbage_every`]):
//! what a broken proxy or a buggy node puts on the wire.

use super::faults::GarbageKind;

/// The garbage frame of `kind`, sent just before `real` (a response or notification).
/// `subscription` makes the malformed notification name a live subscription, so a client
/// cannot dismiss it by its id alone.
pub(crate) fn frame(kind: GarbageKind, real: &str, subscription: Option<&str>) -> String {
    match kind {
        GarbageKind::NotJson => "<html><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
        GarbageKind::Truncated => {
            // Messages are ASCII JSON, but cut on a character boundary all the same.
            let mut cut = real.len() / 2;
            while !real.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                "{\"jsonrpc\":\"2.0\",".to_owned()
            } else {
                real[..cut].to_owned()
            }
        }
        GarbageKind::MalformedNotification => {
            let id = subscription.unwrap_or("0x0");
            serde_json::json!({
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {
                    "subscription": id,
                    // Wrong types everywhere, and no hash, parentHash, address or topics.
                    "result": {"number": true, "blockNumber": -1, "logIndex": [], "data": 7},
                },
            })
            .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_unusable_as_a_response_or_a_notification() {
        let real = r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#;
        let not_json = frame(GarbageKind::NotJson, real, None);
        assert!(serde_json::from_str::<serde_json::Value>(&not_json).is_err());
        let truncated = frame(GarbageKind::Truncated, real, None);
        assert!(real.starts_with(&truncated) && truncated.len() < real.len());
        assert!(serde_json::from_str::<serde_json::Value>(&truncated).is_err());
        assert!(
            serde_json::from_str::<serde_json::Value>(&frame(GarbageKind::Truncated, "", None))
                .is_err()
        );
        let malformed = frame(GarbageKind::MalformedNotification, real, Some("0xab"));
        let value: serde_json::Value = serde_json::from_str(&malformed).unwrap();
        assert_eq!(value["params"]["subscription"], "0xab");
        let result = value["params"]["result"].clone();
        assert!(serde_json::from_value::<alloy_rpc_types_eth::Header>(result.clone()).is_err());
        assert!(serde_json::from_value::<alloy_rpc_types_eth::Log>(result).is_err());
    }
}
