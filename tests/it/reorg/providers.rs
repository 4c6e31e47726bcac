//! A provider that lags behind the others (a shorter chain, late heads) is not a reorg.

use std::time::Duration;

use super::{canonical_rows, devnet_rows, wait_checkpoint};
use crate::support::{self, all_events, parse_config, service_yaml, start_app};

/// One provider 8 blocks behind all along, another falling 20 behind and catching up: nothing
/// is removed, no reorg is counted, and the rows are the devnet's chain.
#[tokio::test]
async fn lagging_providers_are_not_reorgs() {
    let net = support::devnet(3, 20, 3, 40).await;
    let faults = |i| net.faults(i).expect("a provider");
    faults(1).set_lag_blocks(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_app(parse_config(&service_yaml(&net, &dir.path().join("a.db")))).await;
    assert!(net.wait_for_head(80, Duration::from_secs(30)).await);
    faults(2).set_lag_blocks(20);
    assert!(net.wait_for_head(120, Duration::from_secs(30)).await);
    faults(2).set_lag_blocks(0);
    let top = net.head();
    wait_checkpoint(&app.base, top, Duration::from_secs(30)).await;
    assert!(
        canonical_rows(&app.base, top).await == devnet_rows(&net, top),
        "the rows are the devnet's chain"
    );
    let stored = all_events(&app.base, "include_removed=true").await;
    assert!(
        stored.iter().all(|e| e["removed"] == false),
        "nothing removed"
    );
    // (No metric check: the recorder is global to the test binary, and other tests reorganise
    // chains also named `devnet`.)
    app.stop().await;
}
