//! From YAML text to [`Config`]: substitution, YAML syntax, then the top-level sections.
//!
//! Each section reader starts from the defaults and overwrites what the file sets, reporting
//! into one [`Issues`]; the result is only returned when nothing was reported.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_norway::Value;

use super::walk::{self, Issues, Map};
use super::{
    AggregationConfig, BreakerConfig, Config, ConfigError, ConfigIssue, DatabaseConfig,
    HealthConfig, Loaded, MAX_CACHE_SIZE, MAX_STREAM_SESSIONS, RetentionConfig, Secret,
    ServerConfig, chain, env, gateway, rules, sections,
};

const ROOT_KEYS: &[&str] = &[
    "server",
    "database",
    "aggregation",
    "breaker",
    "retention",
    "health",
    "gateway",
    "error_rules",
    "chains",
];

/// The whole pipeline behind [`Config::from_yaml`].
pub(super) fn from_yaml(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let substituted = env::substitute(text, lookup);
    let mut issues = Issues(substituted.issues);
    let mut value: Value = match serde_norway::from_str(&substituted.text) {
        Ok(value) => value,
        Err(err) => {
            issues.0.push(syntax_issue(&err));
            return Err(ConfigError::Invalid(issues.0));
        }
    };
    // `<<: *anchor` merge keys, so providers can share a breaker block.
    if let Err(err) = value.apply_merge() {
        issues.0.push(syntax_issue(&err));
        return Err(ConfigError::Invalid(issues.0));
    }
    let mut warnings = Vec::new();
    let config = config(&value, &mut issues, &mut warnings);
    if issues.0.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::Invalid(issues.0))
    }
}

/// A YAML error at its line and column. libyaml messages carry no scalar text, so a
/// substituted secret cannot leak through them.
fn syntax_issue(err: &serde_norway::Error) -> ConfigIssue {
    let path = match err.location() {
        Some(at) => format!("line {}, column {}", at.line(), at.column()),
        None => "yaml".to_owned(),
    };
    let text = err.to_string();
    // serde_norway appends " at line L column C"; the path already says where.
    let message = match text.find(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    };
    ConfigIssue {
        path,
        message: format!("invalid YAML: {message}"),
    }
}

fn config(value: &Value, issues: &mut Issues, warnings: &mut Vec<String>) -> Config {
    if !matches!(value, Value::Mapping(_) | Value::Null) {
        // The root has no path of its own; name it so the line does not start with ": ".
        walk::report_type(value, "(root)", "a mapping of sections", issues);
        return placeholder();
    }
    let Some(root) = Map::read(value, "", ROOT_KEYS, issues) else {
        return placeholder();
    };
    let breaker = match root.get("breaker") {
        Some(value) => sections::breaker(value, "breaker", &BreakerConfig::default(), issues),
        None => BreakerConfig::default(),
    };
    let retention = match root.get("retention") {
        Some(value) => sections::retention(value, "retention", &RetentionConfig::default(), issues),
        None => RetentionConfig::default(),
    };
    let defaults = chain::Defaults {
        breaker: &breaker,
        retention: &retention,
    };
    Config {
        server: section(&root, "server", issues, server),
        database: section(&root, "database", issues, database),
        aggregation: section(&root, "aggregation", issues, aggregation),
        breaker,
        retention,
        health: section(&root, "health", issues, health),
        gateway: section(&root, "gateway", issues, gateway::gateway),
        error_rules: section(&root, "error_rules", issues, rules::error_rules),
        chains: chain::chains(root.get("chains"), "chains", &defaults, issues, warnings),
    }
}

/// What the walk returns when the root is not even a mapping; never handed out (issues exist).
fn placeholder() -> Config {
    Config {
        server: ServerConfig::default(),
        database: DatabaseConfig::default(),
        aggregation: AggregationConfig::default(),
        breaker: BreakerConfig::default(),
        retention: RetentionConfig::default(),
        health: HealthConfig::default(),
        gateway: Default::default(),
        error_rules: Vec::new(),
        chains: Default::default(),
    }
}

/// A top-level section: its defaults when absent, else what `read` makes of it.
fn section<T: Default>(
    root: &Map<'_>,
    key: &str,
    issues: &mut Issues,
    read: fn(&Value, &str, &mut Issues) -> T,
) -> T {
    match root.get(key) {
        Some(value) => read(value, key, issues),
        None => T::default(),
    }
}

fn server(value: &Value, path: &str, issues: &mut Issues) -> ServerConfig {
    let mut out = ServerConfig::default();
    let keys = [
        "listen",
        "auth_token",
        "public",
        "trust_loopback",
        "max_stream_sessions",
        "max_stream_sessions_per_client",
        "header_timeout",
        "body_timeout",
        "query_timeout",
    ];
    let Some(m) = Map::read(value, path, &keys, issues) else {
        return out;
    };
    if let Some(listen) = m.opt("listen", issues, &socket_addr) {
        out.listen = listen;
    }
    out.auth_token = m.opt("auth_token", issues, &token).map(Secret::new);
    if let Some(public) = m.opt("public", issues, &walk::boolean) {
        out.public = public;
    }
    if let Some(trust) = m.opt("trust_loopback", issues, &walk::boolean) {
        out.trust_loopback = trust;
    }
    if !out.listen.ip().is_loopback() && out.auth_token.is_none() && !out.public {
        issues.push(
            format!("{path}.listen"),
            format!(
                "{} is not a loopback address: set {path}.auth_token (callers then present it) \
                 or {path}.public: true (read routes open to anyone, admin routes to loopback only)",
                out.listen
            ),
        );
    }
    let sessions = walk::size(1, MAX_STREAM_SESSIONS);
    if let Some(max) = m.opt("max_stream_sessions", issues, &sessions) {
        out.max_stream_sessions = max;
    }
    if let Some(max) = m.opt("max_stream_sessions_per_client", issues, &sessions) {
        out.max_stream_sessions_per_client = max;
    }
    if let Some(d) = m.opt("header_timeout", issues, &walk::duration(true)) {
        out.header_timeout = d;
    }
    if let Some(d) = m.opt("body_timeout", issues, &walk::duration(true)) {
        out.body_timeout = d;
    }
    if let Some(d) = m.opt("query_timeout", issues, &walk::duration(true)) {
        out.query_timeout = d;
    }
    out
}

/// Shortest `server.auth_token` accepted: a guessable token protects nothing.
const MIN_TOKEN_CHARS: usize = 16;

fn token(value: &Value, path: &str, issues: &mut Issues) -> Option<String> {
    let text = walk::string(value, path, issues)?;
    let trimmed = text.trim();
    if trimmed.chars().count() < MIN_TOKEN_CHARS {
        issues.push(
            path,
            format!(
                "too short: at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
            ),
        );
        return None;
    }
    if trimmed
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == ',')
    {
        issues.push(path, "may not hold spaces, control characters, ';' or ','");
        return None;
    }
    Some(trimmed.to_owned())
}

fn socket_addr(value: &Value, path: &str, issues: &mut Issues) -> Option<SocketAddr> {
    let text = walk::string(value, path, issues)?;
    match text.trim().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            issues.push(path, "not an IP:port address (e.g. 127.0.0.1:4000)");
            None
        }
    }
}

fn database(value: &Value, path: &str, issues: &mut Issues) -> DatabaseConfig {
    let mut out = DatabaseConfig::default();
    let Some(m) = Map::read(value, path, &["path", "max_wal_mb"], issues) else {
        return out;
    };
    let (least, most) = super::MAX_WAL_MB_RANGE;
    if let Some(n) = m.opt("max_wal_mb", issues, &walk::uint(least, most)) {
        out.max_wal_mb = n;
    }
    if let Some(text) = m.opt("path", issues, &walk::string) {
        if text.trim().is_empty() {
            issues.push(m.path_of("path"), "must not be empty");
        } else {
            out.path = PathBuf::from(text);
        }
    }
    out
}

fn aggregation(value: &Value, path: &str, issues: &mut Issues) -> AggregationConfig {
    let mut out = AggregationConfig::default();
    let Some(m) = Map::read(
        value,
        path,
        &["max_cache_size", "deduplication_window"],
        issues,
    ) else {
        return out;
    };
    if let Some(n) = m.opt("max_cache_size", issues, &walk::size(1, MAX_CACHE_SIZE)) {
        out.max_cache_size = n;
    }
    if let Some(d) = m.opt("deduplication_window", issues, &walk::duration(true)) {
        out.deduplication_window = d;
    }
    out
}

fn health(value: &Value, path: &str, issues: &mut Issues) -> HealthConfig {
    let mut out = HealthConfig::default();
    let Some(m) = Map::read(value, path, &["max_lag_blocks", "stall_timeout"], issues) else {
        return out;
    };
    if let Some(n) = m.opt("max_lag_blocks", issues, &walk::uint(1, u64::MAX)) {
        out.max_lag_blocks = n;
    }
    if let Some(d) = m.opt("stall_timeout", issues, &walk::duration(true)) {
        out.stall_timeout = d;
    }
    out
}
