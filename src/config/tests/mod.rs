//! Table-driven tests of the whole pipeline: YAML and an environment in, issues and warnings out.
//!
//! `errors.rs` pins the exact `path: message` line of every kind of problem; `loads.rs` checks
//! what valid files turn into (defaults, variables, filtering, the shipped YAML files).

mod errors;
mod loads;

use std::collections::BTreeSet;

use super::*;

/// A valid one-chain config to hang test cases on.
pub(super) const ONE_CHAIN: &str = r#"
chains:
  main:
    chain_id: 1
    providers:
      - id: a
        url: "https://a.example.com/v3/KEY"
"#;

/// Loads `yaml` with exactly the variables in `env`.
pub(super) fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    Config::from_yaml(yaml, &lookup)
}

/// The `path: message` lines of a failed load, as a set (order is the walk's business).
pub(super) fn error_lines(yaml: &str, env: &[(&str, &str)]) -> BTreeSet<String> {
    match load(yaml, env) {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(err) => err.to_string().lines().map(str::to_owned).collect(),
    }
}

pub(super) fn ok(yaml: &str, env: &[(&str, &str)]) -> Loaded {
    match load(yaml, env) {
        Ok(loaded) => loaded,
        Err(err) => panic!("expected success, got:\n{err}"),
    }
}

/// `ONE_CHAIN` with `extra` appended (top-level sections).
pub(super) fn with(extra: &str) -> String {
    format!("{ONE_CHAIN}{extra}")
}

/// One chain `main` whose single provider has the given keys (indented for the list item).
pub(super) fn provider(keys: &str) -> String {
    format!("chains:\n  main:\n    chain_id: 1\n    providers:\n      - {keys}\n")
}
