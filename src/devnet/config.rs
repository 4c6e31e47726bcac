//! How a devnet is configured ([`DevnetConfig`]), what starting one can fail with, and where
//! each provider listens.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use super::schedule::MAX_REORG_DEPTH;
use super::{MAX_LOGS_PER_BLOCK, MAX_PROVIDERS};
use crate::config::DevnetChainConfig;

/// How to run a devnet. `Default` is `livechain devnet` without flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetConfig {
    /// Provider `i` listens on `listen.port() + i`; port 0 gives every provider its own
    /// ephemeral port (what tests use).
    pub listen: SocketAddr,
    pub providers: usize,
    /// Milliseconds between blocks; 0 is throughput mode: blocks as fast as subscribers read
    /// them, none while nobody is subscribed.
    pub block_time_ms: u64,
    pub logs_per_block: usize,
    pub seed: u64,
    pub chain_id: u64,
    /// Blocks that exist at start (history for backfill tests): the head starts here.
    pub initial_blocks: u64,
    /// Where a devnet that ran before resumes its head, when above `initial_blocks`: the chain
    /// is a function of the seed, so it continues block for block where a database left it.
    /// The reorg schedule stays anchored at `initial_blocks`.
    pub resume_at: u64,
    /// Automatic reorgs: every this many blocks (past `initial_blocks`) the top `reorg_depth`
    /// blocks are replaced by a different branch in one step, the head moving on by one as
    /// usual (see `schedule`). `None`: only [`super::Devnet::reorg`] reorganises.
    pub reorg_every: Option<u64>,
    /// Depth of automatic reorgs, at most [`MAX_REORG_DEPTH`]; also the least depth of the
    /// `safe` tag (and `finalized` sits 16 blocks deeper still), so no reorg ever rewrites a
    /// block that was reported safe.
    pub reorg_depth: u64,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8600)),
            providers: 3,
            block_time_ms: 1000,
            logs_per_block: 20,
            seed: 1,
            chain_id: 31337,
            initial_blocks: 0,
            resume_at: 0,
            reorg_every: None,
            reorg_depth: 3,
        }
    }
}

impl DevnetConfig {
    /// The devnet of a configured chain (`chains.<name>.devnet`), its providers on ephemeral
    /// ports of 127.0.0.1, its head resumed at `resume_at` (the chain's stored checkpoint).
    pub fn for_chain(sim: &DevnetChainConfig, chain_id: u64, resume_at: u64) -> DevnetConfig {
        DevnetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            providers: sim.providers,
            block_time_ms: sim.block_time_ms,
            logs_per_block: sim.logs_per_block,
            seed: sim.seed,
            chain_id,
            initial_blocks: sim.initial_blocks,
            resume_at,
            reorg_every: sim.reorg_every,
            reorg_depth: sim.reorg_depth,
        }
    }

    /// Every problem with the config, or `Ok`.
    pub fn validate(&self) -> Result<(), DevnetError> {
        let mut problems = Vec::new();
        if self.providers == 0 || self.providers > MAX_PROVIDERS {
            problems.push(format!(
                "providers must be 1..={MAX_PROVIDERS}, got {}",
                self.providers
            ));
        }
        if self.logs_per_block > MAX_LOGS_PER_BLOCK {
            problems.push(format!(
                "logs_per_block must be at most {MAX_LOGS_PER_BLOCK}, got {}",
                self.logs_per_block
            ));
        }
        if self.reorg_every == Some(0) {
            problems.push("reorg_every must be at least 1 block".to_owned());
        }
        if self.reorg_depth > MAX_REORG_DEPTH {
            problems.push(format!(
                "reorg_depth must be at most {MAX_REORG_DEPTH}, got {}",
                self.reorg_depth
            ));
        }
        let port = u64::from(self.listen.port());
        let last_port = port + self.providers.max(1) as u64 - 1;
        if port != 0 && last_port > u64::from(u16::MAX) {
            problems.push(format!(
                "listen port {port} + {} providers runs past port 65535",
                self.providers
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DevnetError::Config(problems.join("; ")))
        }
    }

    pub(super) fn provider_addr(&self, index: usize) -> SocketAddr {
        let mut addr = self.listen;
        if addr.port() != 0 {
            // Validated above: the sum fits in a port.
            addr.set_port(addr.port().saturating_add(index as u16));
        }
        addr
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("invalid devnet config: {0}")]
    Config(String),
    #[error("devnet provider {provider}: cannot listen on {addr}: {source}")]
    Bind {
        provider: usize,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where one provider listens. HTTP and WebSocket share the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoint {
    pub index: usize,
    pub http_url: String,
    pub ws_url: String,
    pub addr: SocketAddr,
}

impl fmt::Display for ProviderEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider {}: {} {}",
            self.index, self.http_url, self.ws_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_reports_every_problem() {
        assert!(DevnetConfig::default().validate().is_ok());
        let bad = DevnetConfig {
            providers: 0,
            logs_per_block: MAX_LOGS_PER_BLOCK + 1,
            reorg_every: Some(0),
            reorg_depth: MAX_REORG_DEPTH + 1,
            ..DevnetConfig::default()
        };
        let message = bad.validate().unwrap_err().to_string();
        for needle in ["providers", "logs_per_block", "reorg_every", "reorg_depth"] {
            assert!(message.contains(needle), "{message}");
        }
        let high = DevnetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 65_534)),
            ..DevnetConfig::default()
        };
        assert!(high.validate().unwrap_err().to_string().contains("65535"));
        let ephemeral = DevnetConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            providers: MAX_PROVIDERS,
            ..DevnetConfig::default()
        };
        assert!(ephemeral.validate().is_ok());
    }

    #[test]
    fn providers_take_consecutive_ports() {
        let config = DevnetConfig::default();
        let ports: Vec<u16> = (0..3).map(|i| config.provider_addr(i).port()).collect();
        assert_eq!(ports, [8600, 8601, 8602]);
        let endpoint = ProviderEndpoint {
            index: 1,
            http_url: "http://127.0.0.1:8601".into(),
            ws_url: "ws://127.0.0.1:8601".into(),
            addr: config.provider_addr(1),
        };
        assert_eq!(
            endpoint.to_string(),
            "provider 1: http://127.0.0.1:8601 ws://127.0.0.1:8601"
        );
    }
}
