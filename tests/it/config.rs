//! Integration tests: config — the real files on disk, and files with errors written to a temp dir.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use livechain::config::{Config, ConfigError, Loaded, check_report};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Loads a file from disk with a fixed environment (the process environment is not ours to set).
fn load_with_env(path: &Path, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_yaml(&text, &|name| env.get(name).cloned())
}

fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("creating a temp file");
    file.write_all(text.as_bytes())
        .expect("writing the temp file");
    file
}

#[test]
fn default_yaml_on_disk_loads_and_matches_the_embedded_copy() {
    let from_disk =
        Config::load(&repo_file("config/default.yaml")).unwrap_or_else(|err| panic!("{err}"));
    let embedded = Config::embedded_default().unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(from_disk, embedded);
    let chain = &from_disk.config.chains["devnet"];
    assert_eq!(chain.chain_id, 31337);
    assert_eq!(chain.devnet.as_ref().map(|d| d.providers), Some(3));
    assert_eq!(
        check_report(&Ok(from_disk)),
        "ok: 1 chain (devnet: 3 devnet providers)\n"
    );
}

#[test]
fn example_yaml_on_disk_loads_with_keys_and_filters_without() {
    let path = repo_file("config/example.yaml");
    let both = load_with_env(
        &path,
        &[("INFURA_API_KEY", "ik"), ("ALCHEMY_API_KEY", "ak")],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(both.warnings.is_empty(), "{:?}", both.warnings);
    assert_eq!(both.config.chains["ethereum"].providers.len(), 2);

    let infura_only =
        load_with_env(&path, &[("INFURA_API_KEY", "ik")]).unwrap_or_else(|err| panic!("{err}"));
    let ids: Vec<&str> = infura_only.config.chains["ethereum"]
        .providers
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(ids, ["infura"]);
    assert_eq!(
        infura_only.warnings,
        ["chains.ethereum.providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set"]
    );

    let neither = load_with_env(&path, &[]);
    let report = check_report(&neither);
    assert!(neither.is_err());
    assert!(
        report.starts_with("chains.ethereum.providers: no provider left:"),
        "{report}"
    );
    assert!(
        report.contains("INFURA_API_KEY") && report.contains("ALCHEMY_API_KEY"),
        "{report}"
    );
}

#[test]
fn a_file_with_errors_reports_each_with_its_path() {
    let file = temp_config(
        r#"
server: { listen: "127.0.0.1:4000" }
breaker: { failur_threshold: 3, recovery_timeout: "a while" }
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: infura
        url: "https://mainnet.infura.io/v3/SECRETKEY"
        ws_url: "https://mainnet.infura.io/ws/v3/SECRETKEY"
      - id: infura
        url: "http://127.0.0.1:8545"
    subscriptions:
      - logs: { topics: [null, null, null, null, null] }
"#,
    );
    let result = Config::load(file.path());
    let report = check_report(&result);
    assert!(matches!(result, Err(ConfigError::Invalid(_))), "{report}");
    let mut lines: Vec<&str> = report.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "breaker.failur_threshold: unknown key (did you mean `failure_threshold`?)",
            "breaker.recovery_timeout: not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\"",
            "chains.ethereum.providers[0].ws_url: not a ws:// or wss:// URL",
            "chains.ethereum.providers[1].id: duplicate provider id `infura` (also chains.ethereum.providers[0])",
            "chains.ethereum.subscriptions[0].logs.topics: at most 4 topic positions, got 5",
        ]
    );
    assert!(!report.contains("SECRETKEY"), "{report}");
}

#[test]
fn yaml_syntax_errors_and_missing_files() {
    let file = temp_config("chains:\n  main:\n    chain_id: 1\n   bad_indent: 2\n");
    let report = check_report(&Config::load(file.path()));
    assert!(report.starts_with("line 4, column "), "{report}");
    assert!(report.contains("invalid YAML"), "{report}");

    let missing = repo_file("config/does-not-exist.yaml");
    let result = Config::load(&missing);
    assert!(matches!(result, Err(ConfigError::Read { .. })));
    let report = check_report(&result);
    assert!(report.contains("does-not-exist.yaml"), "{report}");
}
