//! `chains.<name>`: chain ids, providers (with unset-variable filtering), devnet sections.
//!
//! A provider whose `url` or `ws_url` names an unset variable is dropped with a warning, so one
//! example file serves operators who hold only some of the API keys. Everything else about a
//! dropped provider is still validated: `check-config` gives the same verdict on its structure
//! whichever keys the shell happens to hold.

use std::collections::{BTreeMap, HashMap};

use serde_norway::Value;
use url::Url;

use super::walk::{self, Issues, Map, index, join};
use super::{
    BreakerConfig, ChainConfig, DevnetChainConfig, MAX_DEVNET_PROVIDERS, MAX_LOGS_PER_BLOCK,
    ProviderConfig, RetentionConfig, Subscription, env, sections, subscription,
};

const CHAIN_KEYS: &[&str] = &[
    "chain_id",
    "confirmations",
    "providers",
    "devnet",
    "subscriptions",
    "retention",
];
const PROVIDER_KEYS: &[&str] = &["id", "url", "ws_url", "priority", "breaker"];
const DEVNET_KEYS: &[&str] = &[
    "providers",
    "block_time_ms",
    "logs_per_block",
    "seed",
    "initial_blocks",
    "reorg_every",
    "reorg_depth",
];

const DEFAULT_CONFIRMATIONS: u64 = 12;

/// The root sections a chain's own sections fall back on.
pub(super) struct Defaults<'a> {
    pub breaker: &'a BreakerConfig,
    pub retention: &'a RetentionConfig,
}

/// Reads the `chains` mapping; at least one chain is required.
pub(super) fn chains(
    value: Option<&Value>,
    path: &str,
    defaults: &Defaults<'_>,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, ChainConfig> {
    let mut out = BTreeMap::new();
    let mapping = match value {
        None => {
            issues.push(path, "missing (configure at least one chain)");
            return out;
        }
        Some(Value::Mapping(mapping)) if mapping.is_empty() => {
            issues.push(path, "empty (configure at least one chain)");
            return out;
        }
        Some(Value::Mapping(mapping)) => mapping,
        Some(other) => {
            walk::report_type(other, path, "a mapping of chain names", issues);
            return out;
        }
    };
    let mut chain_ids: HashMap<u64, String> = HashMap::new();
    for (key, value) in mapping {
        let Some(name) = key.as_str().map(env::display) else {
            let shown = walk::key_text(key);
            issues.push(
                join(path, &shown),
                format!("a chain name must be a string (quote it: \"{shown}\")"),
            );
            continue;
        };
        let chain_path = join(path, &name);
        if !walk::is_identifier(&name) {
            issues.push(
                &chain_path,
                "invalid chain name: use only a-z, 0-9, _ and - (it appears in URLs and metrics)",
            );
        }
        let Some(chain) = chain(value, &chain_path, defaults, issues, warnings) else {
            continue;
        };
        // Legitimate (two provider sets for one network) but far more often a copy-paste slip.
        if let Some(other) = chain_ids.insert(chain.chain_id, name.clone()) {
            warnings.push(format!(
                "{chain_path}.chain_id: {} is also the chain_id of chains.{other}",
                chain.chain_id
            ));
        }
        out.insert(name, chain);
    }
    out
}

fn chain(
    value: &Value,
    path: &str,
    defaults: &Defaults<'_>,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> Option<ChainConfig> {
    let breaker = defaults.breaker;
    let m = Map::read(value, path, CHAIN_KEYS, issues)?;
    let chain_id = m.req("chain_id", issues, &walk::uint(1, u64::MAX));
    let confirmations = m
        .opt("confirmations", issues, &walk::uint(0, u64::MAX))
        .unwrap_or(DEFAULT_CONFIRMATIONS);
    // A bare `devnet:` is a devnet with every default, not "no devnet": that is what a
    // newcomer trimming the default config means by it.
    let devnet = m
        .raw("devnet")
        .map(|v| devnet(v, &m.path_of("devnet"), issues, warnings));
    let providers_path = m.path_of("providers");
    let providers = match (m.get("providers"), &devnet) {
        (Some(_), Some(_)) => {
            issues.push(
                &providers_path,
                "not allowed with a `devnet` section (the devnet provides its own providers; \
                 point a separate chain at external nodes)",
            );
            Vec::new()
        }
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            issues.push(
                &providers_path,
                "missing (a chain needs at least one provider, or a `devnet` section)",
            );
            Vec::new()
        }
        (Some(list), None) => providers(list, &providers_path, breaker, issues, warnings),
    };
    let subscriptions = match m.get("subscriptions") {
        Some(value) => subscription::list(value, &m.path_of("subscriptions"), issues, warnings),
        None => vec![Subscription::Blocks],
    };
    let retention = match m.get("retention") {
        Some(value) => {
            sections::retention(value, &m.path_of("retention"), defaults.retention, issues)
        }
        None => *defaults.retention,
    };
    Some(ChainConfig {
        chain_id: chain_id?,
        confirmations,
        providers,
        devnet,
        subscriptions,
        retention,
    })
}

/// One `providers` entry as read: the config when usable, the id for duplicate checks, and
/// the unset variables that made us drop it.
struct Entry {
    id: Option<String>,
    config: Option<ProviderConfig>,
    unset: Vec<String>,
}

fn providers(
    value: &Value,
    path: &str,
    breaker: &BreakerConfig,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> Vec<ProviderConfig> {
    let Some(items) = walk::list(value, path, issues) else {
        return Vec::new();
    };
    if items.is_empty() {
        issues.push(
            path,
            "empty (a chain needs at least one provider, or a `devnet` section)",
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut dropped = Vec::new();
    let mut broken = false;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let before = issues.0.len();
        let entry = provider(item, &item_path, i, breaker, issues);
        if let Some(id) = &entry.id {
            if let Some(first) = seen.get(id) {
                issues.push(
                    join(&item_path, "id"),
                    format!(
                        "duplicate provider id `{id}` (also {})",
                        index(path, *first)
                    ),
                );
            } else {
                seen.insert(id.clone(), i);
            }
        }
        broken |= issues.0.len() > before;
        if entry.unset.is_empty() {
            out.extend(entry.config);
            continue;
        }
        let names: Vec<&str> = entry.unset.iter().map(String::as_str).collect();
        let who = entry
            .id
            .as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default();
        let reason = env::not_set_message(&names);
        warnings.push(format!("{item_path}{who} dropped: {reason}"));
        dropped.push(format!("{}{who} dropped: {reason}", index("providers", i)));
    }
    // Only say "none left" when the filtering is why: other errors already explain themselves.
    if out.is_empty() && !dropped.is_empty() && !broken {
        issues.push(path, format!("no provider left: {}", dropped.join("; ")));
    }
    out
}

fn provider(
    value: &Value,
    path: &str,
    position: usize,
    breaker: &BreakerConfig,
    issues: &mut Issues,
) -> Entry {
    let mut entry = Entry {
        id: None,
        config: None,
        unset: Vec::new(),
    };
    let Some(m) = Map::read(value, path, PROVIDER_KEYS, issues) else {
        return entry;
    };
    entry.id = m.req("id", issues, &walk::string);
    if let Some(id) = &entry.id
        && !walk::is_identifier(id)
    {
        issues.push(
            m.path_of("id"),
            format!("invalid provider id `{id}`: use only a-z, 0-9, _ and -"),
        );
    }
    let url = match m.get("url") {
        Some(value) => url_field(value, &m.path_of("url"), HTTP, &mut entry.unset, issues),
        None => {
            issues.push(m.path_of("url"), "missing");
            None
        }
    };
    let ws_url = m
        .get("ws_url")
        .and_then(|value| url_field(value, &m.path_of("ws_url"), WS, &mut entry.unset, issues));
    let default_priority = u32::try_from(position + 1).unwrap_or(u32::MAX);
    let priority = m
        .opt("priority", issues, &walk::uint32(0))
        .unwrap_or(default_priority);
    let breaker_override = m
        .get("breaker")
        .map(|value| sections::breaker(value, &m.path_of("breaker"), breaker, issues));
    if let (Some(id), Some(url)) = (&entry.id, url) {
        entry.config = Some(ProviderConfig {
            id: id.clone(),
            url,
            ws_url,
            priority,
            breaker: breaker_override,
        });
    }
    entry
}

/// The schemes a URL field accepts, and the message when it has another.
type Schemes = (&'static [&'static str], &'static str);
const HTTP: Schemes = (&["http", "https"], "not an http:// or https:// URL");
const WS: Schemes = (&["ws", "wss"], "not a ws:// or wss:// URL");

/// A URL with one of `schemes`. Unset variables go to `unset` (the caller drops the provider)
/// instead of being errors. Messages never quote the URL: it may hold a key.
fn url_field(
    value: &Value,
    path: &str,
    (schemes, expected): Schemes,
    unset: &mut Vec<String>,
    issues: &mut Issues,
) -> Option<Url> {
    let Value::String(text) = value else {
        walk::report_type(value, path, "a URL string", issues);
        return None;
    };
    let names = env::unset_vars(text);
    if !names.is_empty() {
        for name in names {
            if !unset.iter().any(|seen| seen == name) {
                unset.push(name.to_owned());
            }
        }
        return None;
    }
    match Url::parse(text.trim()) {
        Ok(url) if schemes.contains(&url.scheme()) && url.host().is_some() => Some(url),
        Ok(_) => {
            issues.push(path, expected);
            None
        }
        Err(err) => {
            issues.push(path, format!("{expected} ({err})"));
            None
        }
    }
}

fn devnet(
    value: &Value,
    path: &str,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> DevnetChainConfig {
    let mut out = DevnetChainConfig::default();
    let Some(m) = Map::read(value, path, DEVNET_KEYS, issues) else {
        return out;
    };
    if let Some(n) = m.opt("providers", issues, &walk::size(1, MAX_DEVNET_PROVIDERS)) {
        out.providers = n;
    }
    if let Some(n) = m.opt("block_time_ms", issues, &walk::uint(0, u64::MAX)) {
        out.block_time_ms = n;
    }
    if let Some(n) = m.opt("logs_per_block", issues, &walk::size(0, MAX_LOGS_PER_BLOCK)) {
        out.logs_per_block = n;
    }
    if let Some(n) = m.opt("seed", issues, &walk::uint(0, u64::MAX)) {
        out.seed = n;
    }
    if let Some(n) = m.opt("initial_blocks", issues, &walk::uint(0, u64::MAX)) {
        out.initial_blocks = n;
    }
    out.reorg_every = m.opt("reorg_every", issues, &walk::uint(1, u64::MAX));
    if let Some(n) = m.opt("reorg_depth", issues, &walk::uint(0, u64::MAX)) {
        out.reorg_depth = n;
    }
    match (out.reorg_every, out.reorg_depth) {
        (Some(_), 0) => issues.push(
            m.path_of("reorg_depth"),
            "must be at least 1 when reorg_every is set",
        ),
        (None, depth) if depth > 0 => warnings.push(format!(
            "{}: has no effect without reorg_every",
            m.path_of("reorg_depth")
        )),
        _ => {}
    }
    out
}
