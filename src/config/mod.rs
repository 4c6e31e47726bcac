//! Configuration: the YAML file (`docs/configuration.md`), turned into typed, validated structs.
//!
//! Layout:
//! - `mod.rs` — the types everyone reads, the load entry points, [`ConfigError`].
//! - `env.rs` — `${VAR}` substitution on the raw text, before parsing.
//! - `walk.rs` — reading a `serde_norway::Value` by hand, collecting every issue with its path.
//! - `parse.rs` — the top-level sections; `chain.rs` — chains, providers, devnet;
//!   `subscription.rs` — block and log subscriptions.
//! - `duration.rs` — integer milliseconds or humantime strings.
//! - `redact.rs` — URLs without their secrets; `report.rs` — `check-config` output.
//!
//! Invariant: a provider URL (which carries an API key) never appears whole in `Debug`,
//! `Display`, an error or a warning — only its host, through [`redacted_url`].

mod chain;
mod duration;
mod env;
mod gateway;
mod parse;
mod redact;
mod report;
mod rules;
mod sections;
mod subscription;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::{Address, B256};
use url::Url;

pub use duration::format as format_duration;
pub use redact::{Secret, redacted_url};
pub use report::check_report;

/// The embedded default: what `livechain run` uses without `--config`.
const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub aggregation: AggregationConfig,
    /// Defaults for every provider's breaker; a provider may override fields.
    pub breaker: BreakerConfig,
    pub retention: RetentionConfig,
    pub health: HealthConfig,
    /// The JSON-RPC gateway (`/rpc/{chain}`).
    pub gateway: GatewayConfig,
    /// How providers' error objects are classified before the built-in table (`error_rules`).
    pub error_rules: Vec<ErrorRule>,
    /// By chain name (`[a-z0-9_-]+`); never empty.
    pub chains: BTreeMap<String, ChainConfig>,
}

/// What a provider's JSON-RPC error object says, and so what is done with it (by ingestion and
/// by the gateway alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The provider failed: counts against its breaker; the call goes to another provider.
    Fault,
    /// Slow down: the provider cools down, never a failure.
    RateLimit,
    /// The request's range or result size was refused: split it, or ask another provider.
    Range,
    /// The provider lacks the block or state (behind, or pruned): ask another; not a failure.
    Missing,
    /// The request's own fault (bad params, a reverted call): passed back, nobody blamed.
    Caller,
}

impl ErrorClass {
    pub fn parse(name: &str) -> Option<ErrorClass> {
        Some(match name {
            "fault" => ErrorClass::Fault,
            "rate_limit" => ErrorClass::RateLimit,
            "range" => ErrorClass::Range,
            "missing" => ErrorClass::Missing,
            "caller" => ErrorClass::Caller,
            _ => return None,
        })
    }
}

/// One `error_rules` entry: an error object with this code and/or a message containing this
/// fragment (lower case) is of `class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRule {
    pub code: Option<i64>,
    pub message: Option<String>,
    pub class: ErrorClass,
}

/// `gateway`: how `/rpc/{chain}` forwards callers' JSON-RPC to the chain's providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Off: `/rpc/{chain}` answers 404.
    pub enabled: bool,
    /// A larger request body is refused with 413 (a node's limit: 5 MiB).
    pub max_body_bytes: usize,
    /// Requests in one batch at most; a longer batch is refused whole.
    pub max_batch: usize,
    /// How long one provider may take to answer a call.
    pub timeout: Duration,
    /// Per method, instead of `timeout` (a batch gets the longest of its methods').
    pub method_timeouts: BTreeMap<String, Duration>,
    /// When not empty, the only methods forwarded.
    pub allow_methods: Vec<String>,
    /// Methods never forwarded (e.g. `eth_sendRawTransaction`), whatever `allow_methods` says.
    pub deny_methods: Vec<String>,
    /// Name the provider that answered in an `x-livechain-provider` response header.
    pub provider_header: bool,
    /// Log filters the chain's configured subscriptions do not cover that WebSocket callers may
    /// have the chain follow at once (each an upstream subscription per provider and a
    /// `eth_getLogs` per range); 0 refuses them.
    pub max_dynamic_filters: usize,
    /// Bytes of answers that cannot change (finalized blocks, logs and state, anything by
    /// block hash) kept per chain and given again without a provider; 0 keeps none.
    pub cache_bytes: usize,
    /// Answer `eth_blockNumber` from the head the healthy providers' streams delivered last
    /// (forwarded when none streams).
    pub head_from_streams: bool,
    /// Calls one WebSocket connection may make per second (batch entries count one each, a
    /// burst of as many allowed); one more is answered `-32005` in its place.
    pub ws_calls_per_second: u32,
    /// Open WebSocket connections of `/rpc/{chain}` at most (all chains); one more is 503.
    pub max_ws_sessions: usize,
    /// Of those, one client address may hold this many; one more is 429. Trusted loopback
    /// callers are not counted.
    pub max_ws_sessions_per_client: usize,
}

/// The largest `gateway.max_body_bytes` and `gateway.max_batch` accepted.
pub const MAX_GATEWAY_BODY: usize = 1 << 30;
pub const MAX_GATEWAY_BATCH: usize = 100_000;
/// The largest `gateway.max_dynamic_filters` accepted.
pub const MAX_DYNAMIC_FILTERS: usize = 10_000;
/// The largest `gateway.ws_calls_per_second` accepted.
pub const MAX_WS_CALLS_PER_SECOND: u32 = 1_000_000;
/// The largest `gateway.cache_bytes` accepted.
pub const MAX_GATEWAY_CACHE: usize = 1 << 36;

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: true,
            max_body_bytes: 5 << 20,
            max_batch: 1000,
            timeout: Duration::from_secs(10),
            method_timeouts: BTreeMap::new(),
            allow_methods: Vec::new(),
            deny_methods: Vec::new(),
            provider_header: false,
            max_dynamic_filters: 64,
            cache_bytes: 64 << 20,
            head_from_streams: true,
            ws_calls_per_second: 1000,
            max_ws_sessions: 1024,
            max_ws_sessions_per_client: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Any address other than loopback needs `auth_token` or `public` (checked when read).
    pub listen: SocketAddr,
    /// Callers not on loopback that present it (`Authorization: Bearer …`, or the
    /// `livechain_token` cookie) may use every route; without it they get none but `/health`,
    /// `/ready` and the status page's files — or, with `public`, the read routes.
    pub auth_token: Option<Secret>,
    /// Serve the read routes to anyone (admin routes stay loopback-or-token).
    pub public: bool,
    /// Callers on loopback may use every route without the token. Turn off when a proxy on
    /// this host forwards outside callers (they would all look local).
    pub trust_loopback: bool,
    /// Open `/v1/stream` sessions at most; one more is refused with a 503 (at least 1, at most
    /// [`MAX_STREAM_SESSIONS`]).
    pub max_stream_sessions: usize,
    /// Open `/v1/stream` sessions one client address may hold; one more is refused with a 429.
    /// Trusted loopback callers are not counted.
    pub max_stream_sessions_per_client: usize,
    /// How long a connection may take to send a request's headers, and stay idle between two
    /// requests; then it is closed (slow or idle clients).
    pub header_timeout: Duration,
    /// How long a request's body (the gateway's JSON-RPC) may take to arrive; then 408.
    pub body_timeout: Duration,
    /// How long one `/v1/events` page may read before SQLite stops it (422
    /// `query_too_costly`).
    pub query_timeout: Duration,
}

/// The largest `server.max_stream_sessions` accepted: each session is a task and a socket.
pub const MAX_STREAM_SESSIONS: usize = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            auth_token: None,
            public: false,
            trust_loopback: true,
            max_stream_sessions: 1024,
            max_stream_sessions_per_client: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Relative paths are relative to the working directory, not to the config file.
    pub path: PathBuf,
    /// The write-ahead log's ceiling in MiB: past it the writer checkpoints before its next
    /// transaction (`database.max_wal_mb`).
    pub max_wal_mb: u64,
}

/// `database.max_wal_mb` when absent, and its bounds.
pub const DEFAULT_MAX_WAL_MB: u64 = 256;
pub const MAX_WAL_MB_RANGE: (u64, u64) = (16, 1 << 20);

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("data/livechain.db"),
            max_wal_mb: DEFAULT_MAX_WAL_MB,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregationConfig {
    /// Keys in the per-chain dedupe LRU (at most [`MAX_CACHE_SIZE`]).
    pub max_cache_size: usize,
    /// How long a key stays hot.
    pub deduplication_window: Duration,
}

/// The LRU allocates its table up front, so an absurd size would abort at start.
pub const MAX_CACHE_SIZE: usize = 100_000_000;

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            max_cache_size: 10_000,
            deduplication_window: Duration::from_millis(2_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Time open before probes are let through (greater than 0).
    pub recovery_timeout: Duration,
    /// Consecutive successes in half-open that close it (at least 1).
    pub success_threshold: u32,
    /// Requests let through at once while half-open (at least 1).
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            recovery_timeout: Duration::from_millis(60_000),
            success_threshold: 2,
            half_open_max_probes: 1,
        }
    }
}

/// Limits on a chain's stored history; `None` means unbounded. The root section is every
/// chain's default; `chains.<name>.retention` overrides it field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionConfig {
    pub max_events: Option<u64>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Blocks behind the best head before a provider counts as unhealthy (at least 1).
    pub max_lag_blocks: u64,
    /// Silence after which a provider's stream counts as stalled.
    pub stall_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_lag_blocks: 5,
            stall_timeout: Duration::from_millis(10_000),
        }
    }
}

/// One chain. Exactly one of `providers` (non-empty) and `devnet` is set: a devnet chain gets
/// its providers from the in-process simulator, and mixing in external providers (which serve
/// a different chain) is refused at validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainConfig {
    pub chain_id: u64,
    /// Depth at which an event counts as final when the node has no `safe`/`finalized` tags.
    pub confirmations: u64,
    /// In file order, minus those dropped for unset variables; ids unique within the chain.
    pub providers: Vec<ProviderConfig>,
    pub devnet: Option<DevnetChainConfig>,
    /// When the key is absent: `[Blocks]`.
    pub subscriptions: Vec<Subscription>,
    /// The root `retention` section with this chain's `retention` fields over it.
    pub retention: RetentionConfig,
}

/// A JSON-RPC provider. `Debug` and `Display` show the id and host only (see [`redacted_url`]).
#[derive(Clone, PartialEq)]
pub struct ProviderConfig {
    /// `[a-z0-9_-]+`, unique within its chain.
    pub id: String,
    /// `http` or `https`.
    pub url: Url,
    /// `ws` or `wss`; without it the provider is polled over HTTP.
    pub ws_url: Option<Url>,
    /// Lower is tried first; defaults to the provider's 1-based position in the file.
    pub priority: u32,
    /// This provider's breaker when the file overrides any field (the rest from `breaker`).
    pub breaker: Option<BreakerConfig>,
}

impl ProviderConfig {
    /// This provider's breaker settings: its override, else the global section.
    pub fn breaker_or(&self, global: &BreakerConfig) -> BreakerConfig {
        self.breaker.unwrap_or(*global)
    }
}

/// The in-process simulated chain (`chains.<name>.devnet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetChainConfig {
    /// Provider endpoints sharing the chain (1..=64).
    pub providers: usize,
    /// 0 is throughput mode: blocks as fast as they are read.
    pub block_time_ms: u64,
    pub logs_per_block: usize,
    pub seed: u64,
    /// Blocks that already exist at start (history to backfill).
    pub initial_blocks: u64,
    /// Reorganise every N blocks; `reorg_depth` must then be at least 1.
    pub reorg_every: Option<u64>,
    pub reorg_depth: u64,
}

/// Most providers one devnet chain may simulate (each is a listener and a task).
pub const MAX_DEVNET_PROVIDERS: usize = 64;
/// Logs a devnet block may carry; beyond this a block is a memory hazard, not a test.
pub const MAX_LOGS_PER_BLOCK: usize = 100_000;

impl Default for DevnetChainConfig {
    fn default() -> Self {
        DevnetChainConfig {
            providers: 3,
            block_time_ms: 1_000,
            logs_per_block: 20,
            seed: 1,
            initial_blocks: 0,
            reorg_every: None,
            reorg_depth: 0,
        }
    }
}

/// What to index on a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// `- blocks: true`
    Blocks,
    /// `- logs: { address, topics, from_block }`
    Logs(LogSubscription),
}

/// An `eth_getLogs` / `eth_subscribe logs` filter. Empty `address` means any contract.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSubscription {
    pub address: Vec<Address>,
    /// Up to 4 positions; `None` matches anything, `Some(list)` any of the list.
    pub topics: Vec<Option<Vec<B256>>>,
    /// Backfill starts here; `None` means from the chain's checkpoint (or the head when new).
    pub from_block: Option<u64>,
}

/// A validated config and the non-fatal things the operator should hear about.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// E.g. `chains.ethereum.providers[1] (alchemy) dropped: ALCHEMY_API_KEY is not set`.
    pub warnings: Vec<String>,
}

/// One problem in a config file, at a path like `chains.ethereum.providers[1].ws_url`
/// (or `line 3, column 7` for YAML syntax and `${...}` errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Every problem found, in file order as far as the walk allows.
    #[error("{}", IssueLines(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The issues, one per problem (a read error counts as one, at the file's path).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Read { path, source } => vec![ConfigIssue {
                path: path.display().to_string(),
                message: format!("cannot read: {source}"),
            }],
            ConfigError::Invalid(issues) => issues.clone(),
        }
    }
}

/// `path: message` lines, without a trailing newline.
struct IssueLines<'a>(&'a [ConfigIssue]);

impl fmt::Display for IssueLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates `path`, substituting variables from the process environment.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Validates YAML `text`, looking variables up in `env`. Pure: tests pass a map.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        parse::from_yaml(text, env)
    }

    /// The compiled-in `config/default.yaml`: a 3-provider devnet chain on 127.0.0.1:4000.
    pub fn embedded_default() -> Result<Loaded, ConfigError> {
        Self::from_yaml(DEFAULT_YAML, &|name| std::env::var(name).ok())
    }
}
