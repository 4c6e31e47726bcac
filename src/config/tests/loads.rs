//! What valid files turn into: defaults, variables, provider filtering, the shipped YAML files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{address, b256};
use url::Url;

use super::{ONE_CHAIN, error_lines, ok, provider, with};
use crate::config::*;

#[test]
fn subscriptions_parse() {
    let yaml = r#"
chains:
  main:
    chain_id: 1
    providers: [{id: a, url: "https://a.example.com"}]
    subscriptions:
      - blocks: true
      - blocks: true
      - logs:
      - logs:
          address: "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
          topics:
            - "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
            - null
            - []
            - ["0x000000000000000000000000000000000000000000000000000000000000002a", "0x000000000000000000000000000000000000000000000000000000000000002b"]
          from_block: 100
"#;
    let chain = &ok(yaml, &[]).config.chains["main"];
    let transfer = b256!("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
    assert_eq!(
        chain.subscriptions,
        [
            Subscription::Blocks,
            Subscription::Logs(LogSubscription::default()),
            Subscription::Logs(LogSubscription {
                address: vec![address!("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")],
                topics: vec![
                    Some(vec![transfer]),
                    None,
                    None,
                    Some(vec![
                        b256!("0x000000000000000000000000000000000000000000000000000000000000002a"),
                        b256!("0x000000000000000000000000000000000000000000000000000000000000002b"),
                    ]),
                ],
                from_block: Some(100),
            }),
        ]
    );
    // Absent subscriptions: blocks only.
    assert_eq!(
        ok(ONE_CHAIN, &[]).config.chains["main"].subscriptions,
        [Subscription::Blocks]
    );
}

const TWO_PROVIDERS: &str = r#"
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: infura
        url: "https://mainnet.infura.io/v3/${INFURA_API_KEY}"
        ws_url: "wss://mainnet.infura.io/ws/v3/${INFURA_API_KEY}"
      - id: alchemy
        url: "https://eth-mainnet.g.alchemy.com/v2/${ALCHEMY_API_KEY}"
        ws_url: "wss://eth-mainnet.g.alchemy.com/v2/${ALCHEMY_API_KEY}"
"#;

#[test]
fn unset_provider_variables_drop_the_provider_with_a_warning() {
    let loaded = ok(TWO_PROVIDERS, &[("INFURA_API_KEY", "k1")]);
    let providers = &loaded.config.chains["ethereum"].providers;
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].id, "infura");
    assert_eq!(providers[0].url.as_str(), "https://mainnet.infura.io/v3/k1");
    assert_eq!(
        loaded.warnings,
        ["chains.ethereum.providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set"]
    );

    // Both unset: no provider left is an error that still names the variables.
    assert_eq!(
        error_lines(TWO_PROVIDERS, &[]),
        BTreeSet::from([
            "chains.ethereum.providers: no provider left: providers[0] (infura) dropped: \
             INFURA_API_KEY is not set; providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set"
                .to_owned()
        ])
    );

    // A dropped provider's other fields are still checked.
    let yaml = TWO_PROVIDERS.replace("- id: alchemy", "- id: alchemy\n        priorty: 2");
    assert_eq!(
        error_lines(&yaml, &[("INFURA_API_KEY", "k1")]),
        BTreeSet::from([
            "chains.ethereum.providers[1].priorty: unknown key (did you mean `priority`?)"
                .to_owned()
        ])
    );
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let loaded = ok(ONE_CHAIN, &[]);
    let config = &loaded.config;
    assert!(loaded.warnings.is_empty());
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(config.server.max_stream_sessions, 1024);
    assert_eq!(config.database.path, PathBuf::from("data/livechain.db"));
    assert_eq!(config.database.max_wal_mb, 256);
    assert_eq!(config.aggregation.max_cache_size, 10_000);
    assert_eq!(
        config.aggregation.deduplication_window,
        Duration::from_millis(2_000)
    );
    assert_eq!(config.breaker.failure_threshold, 5);
    assert_eq!(
        config.breaker.recovery_timeout,
        Duration::from_millis(60_000)
    );
    assert_eq!(config.breaker.success_threshold, 2);
    assert_eq!(config.breaker.half_open_max_probes, 1);
    assert_eq!(
        config.retention,
        RetentionConfig {
            max_events: None,
            max_age: None
        }
    );
    assert_eq!(config.health.max_lag_blocks, 5);
    assert_eq!(config.health.stall_timeout, Duration::from_millis(10_000));
    let chain = &config.chains["main"];
    assert_eq!(chain.confirmations, 12);
    assert_eq!(chain.devnet, None);
    assert_eq!(chain.providers[0].priority, 1);
    assert_eq!(chain.providers[0].breaker, None);
    assert_eq!(chain.providers[0].ws_url, None);

    // Null sections and fields mean "defaults" too.
    let loaded = ok(&with("breaker:\nhealth: {max_lag_blocks: ~}\n"), &[]);
    assert_eq!(loaded.config.breaker, BreakerConfig::default());
    assert_eq!(loaded.config.health, HealthConfig::default());
}

#[test]
fn provider_breaker_overrides_inherit_from_the_global_section() {
    let yaml = provider(
        "{id: a, url: \"https://a.example.com\", priority: 7, breaker: {recovery_timeout: 5s}}",
    ) + "breaker: {failure_threshold: 9}\n";
    let config = ok(&yaml, &[]).config;
    let p = &config.chains["main"].providers[0];
    assert_eq!(p.priority, 7);
    let expected = BreakerConfig {
        failure_threshold: 9,
        recovery_timeout: Duration::from_secs(5),
        ..BreakerConfig::default()
    };
    assert_eq!(p.breaker, Some(expected));
    assert_eq!(p.breaker_or(&config.breaker), expected);
}

#[test]
fn chain_retention_overrides_the_global_section_field_by_field() {
    let yaml = provider("{id: a, url: \"https://a.example.com\"}")
        + "    retention: {max_events: 20000}\n  other:\n    chain_id: 2\n    devnet: {}\n\
           retention: {max_events: 5000000, max_age: \"30d\"}\n";
    let config = ok(&yaml, &[]).config;
    let thirty_days = Some(Duration::from_secs(30 * 86_400));
    assert_eq!(
        config.chains["main"].retention,
        RetentionConfig {
            max_events: Some(20_000),
            max_age: thirty_days,
        }
    );
    assert_eq!(config.chains["other"].retention, config.retention);
    assert_eq!(config.retention.max_events, Some(5_000_000));
}

#[test]
fn variables_with_defaults_and_escapes() {
    let yaml = with(
        "server: {listen: \"${LISTEN:-0.0.0.0:9000}\", auth_token: \"${TOKEN:-0123456789abcdef}\"}\n\
         health: {max_lag_blocks: ${LAG:-7}}\n\
         database: {path: \"/srv/$${HOME}/${DB:-db}.sqlite\", max_wal_mb: ${WAL:-512}}\n",
    );
    let config = ok(&yaml, &[("DB", "main")]).config;
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
    let token = config.server.auth_token.as_ref().map(|t| t.expose());
    assert_eq!(token, Some("0123456789abcdef"));
    assert!(
        !format!("{:?}", config.server).contains("0123456789abcdef"),
        "the token never shows in Debug"
    );
    assert_eq!(config.database.max_wal_mb, 512);
    assert_eq!(config.health.max_lag_blocks, 7);
    assert_eq!(
        config.database.path,
        PathBuf::from("/srv/${HOME}/main.sqlite")
    );
    let config = ok(&yaml, &[("LAG", "3")]).config;
    assert_eq!(config.health.max_lag_blocks, 3);
}

#[test]
fn durations_accept_milliseconds_and_strings() {
    let config = ok(
        &with(
            "aggregation: {deduplication_window: 1500}\n\
             breaker: {recovery_timeout: \"30s\"}\n\
             health: {stall_timeout: \"500ms\"}\n\
             retention: {max_events: 1000, max_age: \"30d\"}\n",
        ),
        &[],
    )
    .config;
    assert_eq!(
        config.aggregation.deduplication_window,
        Duration::from_millis(1500)
    );
    assert_eq!(config.breaker.recovery_timeout, Duration::from_secs(30));
    assert_eq!(config.health.stall_timeout, Duration::from_millis(500));
    assert_eq!(
        config.retention.max_age,
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(config.retention.max_events, Some(1000));
}

#[test]
fn embedded_default_loads() {
    let loaded = Config::embedded_default().unwrap_or_else(|err| panic!("{err}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = &loaded.config;
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(config.database.path, PathBuf::from("data/livechain.db"));
    let chain = &config.chains["devnet"];
    assert_eq!(chain.chain_id, 31337);
    assert!(chain.providers.is_empty());
    assert_eq!(chain.devnet, Some(DevnetChainConfig::default()));
    assert_eq!(
        chain.subscriptions,
        [
            Subscription::Blocks,
            Subscription::Logs(LogSubscription::default())
        ]
    );
    assert_eq!(
        check_report(&Ok(loaded)),
        "ok: 1 chain (devnet: 3 devnet providers)\n"
    );
}

const EXAMPLE: &str = include_str!("../../../config/example.yaml");

#[test]
fn example_loads_with_both_keys_and_filters_with_one() {
    let both = [
        ("INFURA_API_KEY", "infurakey"),
        ("ALCHEMY_API_KEY", "alchemykey"),
    ];
    let loaded = ok(EXAMPLE, &both);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let chain = &loaded.config.chains["ethereum"];
    assert_eq!(chain.chain_id, 1);
    let ids: Vec<&str> = chain.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["infura", "alchemy"]);
    assert_eq!(
        chain.providers[1].ws_url.as_ref().map(Url::scheme),
        Some("wss")
    );
    assert_eq!(
        chain.providers[1].breaker.map(|b| b.recovery_timeout),
        Some(Duration::from_secs(120))
    );
    assert_eq!(loaded.config.retention.max_events, Some(5_000_000));
    let Some(Subscription::Logs(usdc)) = chain.subscriptions.get(1) else {
        panic!("expected a log subscription: {:?}", chain.subscriptions);
    };
    assert_eq!(usdc.from_block, Some(19_000_000));
    assert_eq!(
        usdc.address,
        [address!("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")]
    );
    let report = check_report(&Ok(loaded.clone()));
    assert_eq!(
        report,
        "ok: 1 chain (ethereum: 2 providers: infura, alchemy)\n"
    );
    let debug = format!("{:?}", loaded.config);
    assert!(
        !debug.contains("infurakey") && !debug.contains("alchemykey"),
        "{debug}"
    );

    let one = ok(EXAMPLE, &both[..1]);
    assert_eq!(one.config.chains["ethereum"].providers.len(), 1);
    assert_eq!(
        one.warnings,
        ["chains.ethereum.providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set"]
    );
    assert!(check_report(&Ok(one)).starts_with(
        "warning: chains.ethereum.providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set\nok: 1 chain"
    ));
}

#[test]
fn secrets_stay_out_of_debug_errors_and_warnings() {
    let yaml = provider(
        r#"{id: a, url: "https://user:${SECRET}@a.example.com/v3/${SECRET}?k=${SECRET}"}"#,
    );
    let loaded = ok(&yaml, &[("SECRET", "hunter2")]);
    let debug = format!(
        "{:?} {:#?}",
        loaded, loaded.config.chains["main"].providers[0]
    );
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("https://a.example.com/…"), "{debug}");

    // An invalid URL holding the secret: the error names the field, not the value.
    let yaml = provider(r#"{id: a, url: "https://a.example.com:99999/${SECRET}"}"#);
    let lines = error_lines(&yaml, &[("SECRET", "hunter2")]);
    assert!(lines.iter().all(|l| !l.contains("hunter2")), "{lines:?}");
}

#[test]
fn duplicate_chain_ids_warn() {
    let yaml = "chains:\n  a: {chain_id: 5, devnet: {}}\n  b: {chain_id: 5, devnet: {}}\n";
    assert_eq!(
        ok(yaml, &[]).warnings,
        ["chains.b.chain_id: 5 is also the chain_id of chains.a"]
    );
}

#[test]
fn merge_keys_share_settings_between_providers() {
    let yaml = r#"
chains:
  main:
    chain_id: 1
    providers:
      - &base {id: a, url: "https://a.example.com", priority: 3, breaker: {failure_threshold: 9}}
      - <<: *base
        id: b
"#;
    let providers = &ok(yaml, &[]).config.chains["main"].providers;
    assert_eq!(providers.len(), 2);
    assert_eq!(providers[1].id, "b");
    assert_eq!(providers[1].priority, 3);
    assert_eq!(providers[1].breaker.map(|b| b.failure_threshold), Some(9));
}

/// An explicit empty subscription list warns, and says what is still stored: the blocks.
#[test]
fn an_empty_subscription_list_warns_that_only_blocks_are_stored() {
    let yaml = format!("{ONE_CHAIN}    subscriptions: []\n");
    let loaded = ok(&yaml, &[]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    assert!(
        warning.starts_with("chains.main.subscriptions: empty"),
        "{warning}"
    );
    assert!(warning.contains("block headers are stored"), "{warning}");
}
