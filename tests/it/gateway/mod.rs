//! The JSON-RPC gateway (`/rpc/{chain}`): transparency against recorded exchanges, failover
//! under provider faults, the write rule, bad input, and real clients against Anvil.

mod cache;
mod clients;
mod conformance;
mod dynamic;
mod failover;
mod input;
mod limits;
mod subscriptions;
mod viem;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use livechain::breaker::{Breaker, SystemClock};
use livechain::config::{BreakerConfig, ErrorRule, GatewayConfig, HealthConfig};
use livechain::domain::{ChainName, ProviderIndex};
use livechain::gateway::Gateway;
use livechain::health::{ChainHealth, Member};
use livechain::ingest::providers::{ChainProvider, ProviderSet};
use livechain::provider::{ErrorRules, HttpClient};

/// A gateway of chain `test` (chain id 1) over providers at `urls` (`u0`, `u1`, ...), with no
/// ingestion behind it: the providers' heads are unknown, their breakers fresh.
pub fn gateway_over(urls: &[String], config: GatewayConfig) -> Gateway {
    gateway_with_rules(urls, config, &[])
}

/// [`gateway_over`], its providers classifying error objects by `rules` first.
pub fn gateway_with_rules(urls: &[String], config: GatewayConfig, rules: &[ErrorRule]) -> Gateway {
    let rules = ErrorRules::new(rules);
    let name = ChainName::from("test");
    let members = (0..urls.len())
        .map(|i| Member {
            id: format!("u{i}"),
            priority: u32::try_from(i).expect("few providers"),
            breaker: Breaker::new(BreakerConfig::default()),
        })
        .collect();
    let health = ChainHealth::new(
        name,
        HealthConfig::default(),
        Arc::new(SystemClock),
        members,
    );
    let providers = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let http = HttpClient::new(
                "test",
                &format!("u{i}"),
                url.parse().expect("url"),
                Duration::from_secs(10),
            )
            .expect("client")
            .with_error_rules(rules.clone());
            ChainProvider::new(
                ProviderIndex::try_from(i).expect("few providers"),
                format!("u{i}"),
                http,
                None,
                u32::try_from(i).expect("few providers"),
            )
        })
        .collect();
    Gateway::new(
        "test",
        1,
        ProviderSet::new(providers, health.clone()),
        config,
    )
}

/// POSTs `body` to `url`: the status and the body's text.
pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
