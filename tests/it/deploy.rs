//! What `deploy/` ships for operators: the Prometheus alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), every alert has a test, and the rules and the
//! Grafana dashboard name only metrics the service exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The metric names `text` mentions: `livechain_…` and `process_…` words.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for token in text.split(|c: char| !word(c)) {
        if token.starts_with("livechain_") || token.starts_with("process_") {
            names.insert(token.to_owned());
        }
    }
    names
}

/// The names the service registers: the string constants of `telemetry/metrics.rs`, and the
/// process collector's.
fn exported() -> BTreeSet<String> {
    let source = read("src/telemetry/metrics.rs");
    let mut names: BTreeSet<String> = source
        .split('"')
        .filter(|s| s.starts_with("livechain_") && !s.contains(' '))
        .map(str::to_owned)
        .collect();
    for process in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_virtual_memory_max_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_threads",
    ] {
        names.insert(process.to_owned());
    }
    names
}

/// `name` without the suffix a histogram's series carry.
fn base(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    let exported = exported();
    assert!(exported.len() > 40, "{exported:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/livechain.json")).expect("dashboard JSON");
    let mut exprs = String::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    let charts = panels.iter().filter(|p| p["type"] != "row").count();
    assert!(charts >= 30, "{charts} charts");
    for (file, text) in [
        ("dashboard", exprs),
        ("rules", read("deploy/prometheus/livechain.rules.yml")),
    ] {
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            assert!(
                exported.contains(base(&name)),
                "the {file} names {name}, which the service does not export"
            );
        }
    }
}

#[test]
fn every_alert_has_a_unit_test() {
    let rules = read("deploy/prometheus/livechain.rules.yml");
    let tests = read("deploy/prometheus/livechain.rules.test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alert {alert} has no promtool test"
        );
    }
}

/// `promtool check rules` and `promtool test rules`. Skipped with a printed reason when promtool
/// is not installed, unless `LIVECHAIN_REQUIRE_PROMTOOL=1` (the README's test command installs
/// it and sets that).
#[test]
fn promtool_checks_and_tests_the_rules() {
    let dir = repo_file("deploy/prometheus");
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let version = Command::new(&promtool).arg("--version").output();
    if version.is_err() {
        assert!(
            std::env::var("LIVECHAIN_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "promtool is required (LIVECHAIN_REQUIRE_PROMTOOL=1) but {promtool} cannot be run"
        );
        eprintln!("skipped: {promtool} not found (Debian's prometheus package ships it)");
        return;
    }
    for args in [
        ["check", "rules", "livechain.rules.yml"],
        ["test", "rules", "livechain.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
