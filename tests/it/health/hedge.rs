//! Hedged range batches: a provider that hangs (a silent stall holds HTTP requests) is joined
//! by the next provider, whose answer wins; the hung attempt is cancelled, which says nothing
//! about its provider (no failure counted), instead of failing over after the HTTP timeout.

use std::sync::Arc;

use livechain::breaker::{Breaker, BreakerState, SystemClock};
use livechain::config::{BreakerConfig, HealthConfig};
use livechain::domain::ChainName;
use livechain::health::{ChainHealth, Member};
use livechain::ingest::providers::{ChainProvider, ProviderSet};
use livechain::provider::{HttpClient, Request};

use super::*;

/// The devnet's providers as one chain's set, with its health tracker.
fn provider_set(devnet: &support::TestDevnet) -> (ProviderSet, ChainHealth) {
    let mut members = Vec::new();
    let mut list = Vec::new();
    for (i, endpoint) in devnet.endpoints().iter().enumerate() {
        let id = format!("hedge-p{i}");
        let url = endpoint.http_url.parse().expect("devnet URL");
        let http = HttpClient::new("hedge", &id, url, Duration::from_secs(10)).expect("client");
        members.push(Member {
            id: id.clone(),
            priority: i as u32,
            breaker: Breaker::new(BreakerConfig::default()),
        });
        list.push(ChainProvider::new(i as u8, id, http, None, i as u32));
    }
    let config = HealthConfig {
        max_lag_blocks: 5,
        stall_timeout: Duration::from_secs(1),
    };
    let health = ChainHealth::new(
        ChainName::from("hedge"),
        config,
        Arc::new(SystemClock),
        members,
    );
    (ProviderSet::new(list, health.clone()), health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_is_hedged_not_waited_for() {
    let devnet = support::devnet(2, 100, 1, 20).await;
    let (set, health) = provider_set(&devnet);

    faults(&devnet, 0).set_stalled(true);
    let calls = [Request::block(1).expect("request")];
    let (served, answers) = set
        .batch_from(0, None, 0, &calls)
        .await
        .expect("answered by the other provider");
    assert_eq!(served, 1, "provider 1 answered");
    assert!(answers[0].is_ok(), "{answers:?}");
    let report = health.report();
    assert_eq!(
        (report[0].requests, report[0].errors),
        (0, 0),
        "the hung attempt was cancelled, not timed out: {report:?}"
    );
    assert_eq!(report[0].breaker, BreakerState::Closed);
    assert_eq!((report[1].requests, report[1].errors), (1, 0));
    faults(&devnet, 0).clear();
}

/// A range whose answer was wrong is asked of another provider even when the one that gave it
/// is the only healthy one (here the other is 50 blocks behind): the range sync once retried
/// such a range on it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_to_avoid_is_asked_last_even_when_it_alone_is_healthy() {
    let devnet = support::devnet(2, 100, 1, 20).await;
    let (set, health) = provider_set(&devnet);
    health.observe_head(0, 100, false);
    health.observe_head(1, 50, false);
    assert_eq!(
        health.healthy_count(),
        1,
        "provider 1 looks 50 blocks behind"
    );
    let calls = [Request::block(1).expect("request")];
    for start in 0..2 {
        let (served, _) = set
            .batch_from(start, None, 0, &calls)
            .await
            .expect("answered");
        assert_eq!(served, 0, "the healthy one first (start {start})");
        let (served, answers) = set
            .batch_from(start, Some(0), 0, &calls)
            .await
            .expect("answered");
        assert_eq!(served, 1, "the one to avoid last (start {start})");
        assert!(answers[0].is_ok(), "{answers:?}");
    }
}
