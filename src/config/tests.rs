//! Table-driven tests of the whole pipeline: YAML and an environment in, issues and warnings out.

use std::collections::BTreeSet;
use std::time::Duration;

use alloy_primitives::{address, b256};

use super::*;

/// A valid chain to hang test cases on; `{P}` is replaced by extra provider keys.
const ONE_CHAIN: &str = r#"
chains:
  main:
    chain_id: 1
    providers:
      - id: a
        url: "https://a.example.com/v3/KEY"
"#;

/// Loads `yaml` with exactly the variables in `env`.
fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    Config::from_yaml(yaml, &lookup)
}

/// The `path: message` lines of a failed load, as a set (order is the walk's business).
fn error_lines(yaml: &str, env: &[(&str, &str)]) -> BTreeSet<String> {
    match load(yaml, env) {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(err) => err.to_string().lines().map(str::to_owned).collect(),
    }
}

fn ok(yaml: &str, env: &[(&str, &str)]) -> Loaded {
    match load(yaml, env) {
        Ok(loaded) => loaded,
        Err(err) => panic!("expected success, got:\n{err}"),
    }
}

/// `ONE_CHAIN` with `extra` appended (top-level sections).
fn with(extra: &str) -> String {
    format!("{ONE_CHAIN}{extra}")
}

/// One chain `main` whose single provider has the given keys (indented for the list item).
fn provider(keys: &str) -> String {
    format!("chains:\n  main:\n    chain_id: 1\n    providers:\n      - {keys}\n")
}

#[test]
fn each_error_kind_has_its_path_and_message() {
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "bad url",
            provider(r#"{id: a, url: "not a url"}"#),
            &["chains.main.providers[0].url: not an http:// or https:// URL (relative URL without a base)"],
        ),
        (
            "wrong url scheme",
            provider(r#"{id: a, url: "wss://a.example.com"}"#),
            &["chains.main.providers[0].url: not an http:// or https:// URL"],
        ),
        (
            "wrong ws_url scheme",
            provider(r#"{id: a, url: "https://a.example.com", ws_url: "https://a.example.com/ws"}"#),
            &["chains.main.providers[0].ws_url: not a ws:// or wss:// URL"],
        ),
        (
            "url not a string",
            provider("{id: a, url: 42}"),
            &["chains.main.providers[0].url: expected a URL string, got an integer"],
        ),
        (
            "missing chain_id",
            "chains:\n  main:\n    providers: [{id: a, url: \"https://a.example.com\"}]\n".into(),
            &["chains.main.chain_id: missing"],
        ),
        (
            "missing provider url and id",
            provider("{priority: 1}"),
            &["chains.main.providers[0].id: missing", "chains.main.providers[0].url: missing"],
        ),
        (
            "missing providers",
            "chains:\n  main:\n    chain_id: 1\n".into(),
            &["chains.main.providers: missing (a chain needs at least one provider, or a `devnet` section)"],
        ),
        (
            "missing chains",
            "server: {listen: \"127.0.0.1:1\"}\n".into(),
            &["chains: missing (configure at least one chain)"],
        ),
        ("empty file", String::new(), &["chains: missing (configure at least one chain)"]),
        (
            "unknown key with suggestion",
            with("breaker: {failur_threshold: 3}\n"),
            &["breaker.failur_threshold: unknown key (did you mean `failure_threshold`?)"],
        ),
        (
            "unknown key without suggestion",
            with("health: {colour: blue}\n"),
            &["health.colour: unknown key (expected one of: max_lag_blocks, stall_timeout)"],
        ),
        (
            "unknown top-level key",
            with("chain: {}\n"),
            &["chain: unknown key (did you mean `chains`?)"],
        ),
        (
            "unset variable outside a provider url",
            with("database: {path: \"${DB_DIR}/x.db\"}\n"),
            &["database.path: DB_DIR is not set (give a default with ${DB_DIR:-value})"],
        ),
        (
            "unset variable in a number",
            with("health: {max_lag_blocks: ${LAG}}\n"),
            &["health.max_lag_blocks: LAG is not set (give a default with ${LAG:-value})"],
        ),
        (
            "duplicate provider id",
            provider("{id: a, url: \"https://a.example.com\"}\n      - {id: a, url: \"https://b.example.com\"}"),
            &["chains.main.providers[1].id: duplicate provider id `a` (also chains.main.providers[0])"],
        ),
        (
            "bad duration string",
            with("breaker: {recovery_timeout: soon}\n"),
            &["breaker.recovery_timeout: not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\""],
        ),
        (
            "duration with an unknown unit",
            with("health: {stall_timeout: 30 parsecs}\n"),
            &["health.stall_timeout: not a duration: unknown unit `parsecs` (use ms, s, m, h or d, e.g. \"30s\")"],
        ),
        (
            "negative duration",
            with("health: {stall_timeout: -5}\n"),
            &["health.stall_timeout: expected milliseconds (a non-negative integer) or a string like \"30s\""],
        ),
        (
            "zero duration",
            with("retention: {max_age: 0}\n"),
            &["retention.max_age: must be greater than 0"],
        ),
        (
            "zero threshold",
            with("breaker: {failure_threshold: 0}\n"),
            &["breaker.failure_threshold: must be at least 1, got 0"],
        ),
        (
            "negative integer",
            with("aggregation: {max_cache_size: -1}\n"),
            &["aggregation.max_cache_size: must not be negative"],
        ),
        (
            "wrong type",
            "chains:\n  main:\n    chain_id: one\n    providers: [{id: a, url: \"https://a.example.com\"}]\n".into(),
            &["chains.main.chain_id: expected an integer, got a string"],
        ),
        (
            "float where an integer belongs",
            with("health: {max_lag_blocks: 1.5}\n"),
            &["health.max_lag_blocks: expected an integer, got a float"],
        ),
        (
            "u32 out of range",
            with("breaker: {success_threshold: 4294967296}\n"),
            &["breaker.success_threshold: must be at most 4294967295, got 4294967296"],
        ),
        (
            "section of the wrong type",
            with("server: 4000\n"),
            &["server: expected a mapping, got an integer"],
        ),
        (
            "bad listen address",
            with("server: {listen: \"localhost:4000\"}\n"),
            &["server.listen: not an IP:port address (e.g. 127.0.0.1:4000)"],
        ),
        (
            "root not a mapping",
            "- a\n- b\n".into(),
            &["(root): expected a mapping of sections, got a list"],
        ),
        (
            "invalid chain name and provider id",
            "chains:\n  Main:\n    chain_id: 1\n    providers: [{id: My.Node, url: \"https://a.example.com\"}]\n".into(),
            &[
                "chains.Main: invalid chain name: use only a-z, 0-9, _ and - (it appears in URLs and metrics)",
                "chains.Main.providers[0].id: invalid provider id `My.Node`: use only a-z, 0-9, _ and -",
            ],
        ),
        (
            "devnet with providers",
            "chains:\n  dev:\n    chain_id: 31337\n    devnet: {}\n    providers: [{id: a, url: \"http://127.0.0.1:8545\"}]\n".into(),
            &["chains.dev.providers: not allowed with a `devnet` section (the devnet provides its own providers; point a separate chain at external nodes)"],
        ),
        (
            "devnet bounds",
            "chains:\n  dev:\n    chain_id: 31337\n    devnet: {providers: 0, reorg_every: 10, colour: 2}\n".into(),
            &[
                "chains.dev.devnet.providers: must be at least 1, got 0",
                "chains.dev.devnet.reorg_depth: must be at least 1 when reorg_every is set",
                "chains.dev.devnet.colour: unknown key (expected one of: providers, block_time_ms, logs_per_block, seed, initial_blocks, reorg_every, reorg_depth)",
            ],
        ),
        (
            "yaml syntax error has line and column",
            "chains:\n  main: [\n    chain_id: 1\n".into(),
            &["line 4, column 1: invalid YAML: did not find expected ',' or ']'"],
        ),
        (
            "malformed variable reference",
            with("database: {path: \"${1X}\"}\n"),
            &["line 8, column 19: invalid variable reference `${1X}`: a name is letters, digits and `_`, not starting with a digit"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(error_lines(&yaml, &[]), expected, "case {name:?}:\n{yaml}");
    }
}

#[test]
fn subscription_errors() {
    let base = "chains:\n  main:\n    chain_id: 1\n    providers: [{id: a, url: \"https://a.example.com\"}]\n    subscriptions:\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "      - logs: {address: \"0x12\"}\n",
            &[
                "chains.main.subscriptions[0].logs.address: not an address (0x followed by 40 hex digits)",
            ],
        ),
        (
            "      - logs: {address: [\"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB49\"]}\n",
            &[
                "chains.main.subscriptions[0].logs.address[0]: bad EIP-55 checksum (a typo? write the address in lowercase to skip the check)",
            ],
        ),
        (
            "      - logs: {topics: [null, [\"0x1234\"]]}\n",
            &[
                "chains.main.subscriptions[0].logs.topics[1][0]: not a topic (0x followed by 64 hex digits)",
            ],
        ),
        (
            "      - logs: {topics: [null, null, null, null, null]}\n",
            &["chains.main.subscriptions[0].logs.topics: at most 4 topic positions, got 5"],
        ),
        (
            "      - {blocks: true, logs: {}}\n",
            &["chains.main.subscriptions[0]: expected exactly one of `blocks` or `logs` per entry"],
        ),
        (
            "      - {}\n",
            &["chains.main.subscriptions[0]: expected `blocks: true` or `logs: {...}`"],
        ),
        (
            "      - blocks: yes please\n",
            &["chains.main.subscriptions[0].blocks: expected true or false, got a string"],
        ),
        (
            "      - logs: {from_block: -1, adress: []}\n",
            &[
                "chains.main.subscriptions[0].logs.adress: unknown key (did you mean `address`?)",
                "chains.main.subscriptions[0].logs.from_block: must not be negative",
            ],
        ),
    ];
    for (items, expected) in cases {
        let yaml = format!("{base}{items}");
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(error_lines(&yaml, &[]), expected, "{items}");
    }
}

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

#[test]
fn several_errors_are_all_listed() {
    let yaml = r#"
server: {listen: nowhere}
breaker: {failure_threshold: 0, recovery_timeout: "eventually", succes_threshold: 2}
chains:
  ethereum:
    providers:
      - {id: infura, url: "ftp://mainnet.infura.io/v3/KEY"}
      - {id: infura, url: "https://x.example.com", ws_url: "https://x.example.com"}
"#;
    let lines = error_lines(yaml, &[]);
    let expected: BTreeSet<String> = [
        "server.listen: not an IP:port address (e.g. 127.0.0.1:4000)",
        "breaker.failure_threshold: must be at least 1, got 0",
        "breaker.recovery_timeout: not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\"",
        "breaker.succes_threshold: unknown key (did you mean `success_threshold`?)",
        "chains.ethereum.chain_id: missing",
        "chains.ethereum.providers[0].url: not an http:// or https:// URL",
        "chains.ethereum.providers[1].id: duplicate provider id `infura` (also chains.ethereum.providers[0])",
        "chains.ethereum.providers[1].ws_url: not a ws:// or wss:// URL",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(lines, expected);
    assert!(
        !lines.iter().any(|line| line.contains("KEY")),
        "a URL leaked: {lines:?}"
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
    assert_eq!(config.database.path, PathBuf::from("data/livechain.db"));
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
fn variables_with_defaults_and_escapes() {
    let yaml = with(
        "server: {listen: \"${LISTEN:-0.0.0.0:9000}\"}\n\
         health: {max_lag_blocks: ${LAG:-7}}\n\
         database: {path: \"/srv/$${HOME}/${DB:-db}.sqlite\"}\n",
    );
    let config = ok(&yaml, &[("DB", "main")]).config;
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
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

const EXAMPLE: &str = include_str!("../../config/example.yaml");

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
fn error_report_lists_every_issue() {
    let result = load(
        "chains: {main: {providers: []}}\nhealth: {stall_timeout: 0}\n",
        &[],
    );
    assert!(result.is_err());
    let report = check_report(&result);
    assert_eq!(
        report,
        "health.stall_timeout: must be greater than 0\n\
         chains.main.chain_id: missing\n\
         chains.main.providers: empty (a chain needs at least one provider, or a `devnet` section)\n"
    );
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
fn zz_scratch_print() {
    for yaml in [
        "chains: {a: 1, a: 2}\n",
        "chains:\n  main: !custom {chain_id: 1}\n",
        "chains:\n  1: {chain_id: 1, devnet: {}}\n",
        "chains:\n  main:\n    chain_id: 1\n    providers: {id: a}\n",
        "chains:\n  main: {chain_id: 1, devnet: {}}\nbreaker: &b {failure_threshold: 2}\nhealth:\n  <<: *b\n",
        "chains: [\n",
        "\tchains: 1\n",
        "chains:\n  main: {chain_id: 1, devnet: {}, subscriptions: []}\n",
        "chains:\n  main: {chain_id: 18446744073709551616, devnet: {}}\n",
        "chains:\n  main: {chain_id: 0x10, devnet: {}}\n",
        "chains:\n  main: {chain_id: 1, devnet: {reorg_depth: 3}}\n",
    ] {
        println!("=== {yaml}{}", check_report(&load(yaml, &[])));
    }
}
