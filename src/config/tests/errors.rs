//! Every kind of config problem gives its exact path and message; several are reported at once.

use std::collections::BTreeSet;

use super::{error_lines, load, provider, with};
use crate::config::check_report;

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
            "zero max_events",
            with("retention: {max_events: 0}\n"),
            &["retention.max_events: must be at least 1, got 0"],
        ),
        (
            "negative max_age",
            with("retention: {max_age: \"-5d\"}\n"),
            &["retention.max_age: not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\""],
        ),
        (
            "max_age under a second",
            with("retention: {max_age: 500}\n"),
            &["retention.max_age: must be at least 1s (block timestamps are whole seconds)"],
        ),
        (
            "absurd max_age",
            with("retention: {max_age: \"1000000d\"}\n"),
            &["retention.max_age: must be at most 36500d (100 years)"],
        ),
        (
            "bad per-chain retention",
            provider(r#"{id: a, url: "https://a.example.com"}"#)
                + "    retention: {max_events: -3, keep: all}\n",
            &[
                "chains.main.retention.max_events: must not be negative",
                "chains.main.retention.keep: unknown key (expected one of: max_events, max_age)",
            ],
        ),
        (
            "retention override of a chain that is not configured",
            with("  mainnet:\n    retention: {max_events: 10}\n"),
            &[
                "chains.mainnet.chain_id: missing",
                "chains.mainnet.providers: missing (a chain needs at least one provider, or a `devnet` section)",
            ],
        ),
        (
            "zero threshold",
            with("breaker: {failure_threshold: 0}\n"),
            &["breaker.failure_threshold: must be at least 1, got 0"],
        ),
        (
            "a WAL ceiling below 16 MiB",
            with("database: {max_wal_mb: 8}\n"),
            &["database.max_wal_mb: must be at least 16, got 8"],
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
            "bound beyond loopback with no token and not public",
            with("server: {listen: \"0.0.0.0:4000\"}\n"),
            &["server.listen: 0.0.0.0:4000 is not a loopback address: set server.auth_token (callers then present it) or server.public: true (read routes open to anyone, admin routes to loopback only)"],
        ),
        (
            "a token too short to protect anything",
            with("server: {listen: \"[::]:4000\", auth_token: \"secret\"}\n"),
            &[
                "server.auth_token: too short: at least 16 characters (e.g. `openssl rand -hex 32`)",
                "server.listen: [::]:4000 is not a loopback address: set server.auth_token (callers then present it) or server.public: true (read routes open to anyone, admin routes to loopback only)",
            ],
        ),
        (
            "a token with a space",
            with("server: {auth_token: \"0123456789 abcdef\"}\n"),
            &["server.auth_token: may not hold spaces, control characters, ';' or ','"],
        ),
        (
            "no stream session allowed",
            with("server: {max_stream_sessions: 0}\n"),
            &["server.max_stream_sessions: must be at least 1, got 0"],
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
            "chain name that is not a string",
            "chains:\n  1: {chain_id: 1, devnet: {}}\n".into(),
            &["chains.1: a chain name must be a string (quote it: \"1\")"],
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
            "      - logs: {address: 0x12}\n",
            &[
                "chains.main.subscriptions[0].logs.address: expected a quoted \"0x...\" string (YAML reads unquoted hex as a number)",
            ],
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
fn gateway_and_error_rule_errors() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            with("gateway: {max_batch: 0, timeout: 0, deny_methods: [\"eth call\"]}\n"),
            &[
                "gateway.max_batch: must be at least 1, got 0",
                "gateway.timeout: must be greater than 0",
                "gateway.deny_methods[0]: \"eth call\" is not a JSON-RPC method name (e.g. eth_getLogs)",
            ],
        ),
        (
            with("gateway: {method_timeouts: {eth_getLogs: soon}}\n"),
            &[
                "gateway.method_timeouts.eth_getLogs: not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\"",
            ],
        ),
        (
            with(
                "error_rules: [{class: fault}, {code: -32000, class: broken}, {message: \"\", class: missing}]\n",
            ),
            &[
                "error_rules[0]: a rule needs a code, a message fragment, or both",
                "error_rules[1].class: \"broken\" is not a class: fault, rate_limit, range, missing or caller",
                "error_rules[2].message: must not be empty",
            ],
        ),
    ];
    for (yaml, want) in cases {
        let lines = error_lines(&yaml, &[]);
        for line in want {
            assert!(lines.contains(*line), "want {line:?} in {lines:?}");
        }
    }
}

#[test]
fn error_rules_and_gateway_load() {
    let yaml = with(
        "gateway: {deny_methods: [debug_traceCall], method_timeouts: {debug_getRawBlock: 30s}, provider_header: true}\n\
         error_rules:\n  - {code: -32000, message: \"Header Not Found\", class: fault}\n  - {code: -39001, class: rate_limit}\n",
    );
    let config = load(&yaml, &[]).expect("loads").config;
    assert_eq!(config.gateway.deny_methods, ["debug_traceCall"]);
    assert_eq!(
        config.gateway.method_timeouts.get("debug_getRawBlock"),
        Some(&std::time::Duration::from_secs(30))
    );
    assert!(config.gateway.provider_header);
    assert_eq!(config.error_rules.len(), 2);
    assert_eq!(
        config.error_rules[0].message.as_deref(),
        Some("header not found")
    );
    assert_eq!(
        config.error_rules[1].class,
        crate::config::ErrorClass::RateLimit
    );
}
