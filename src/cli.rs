//! The command line (`livechain run | check-config | devnet | reset-chain | migrate`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::devnet::DevnetConfig;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "livechain",
    version,
    about = "Multi-provider EVM event indexer"
)]
pub struct Cli {
    /// Log line format (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the embedded default config when --config is absent).
    Run {
        /// The YAML config to run (default: the embedded config/default.yaml, a devnet chain).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How often a long backfill's progress is logged when stderr is not a terminal (on a
        /// terminal it is a bar), e.g. 5s, 500ms.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
        progress_every: std::time::Duration,
    },
    /// Validate a config file: print every error with its path; exit non-zero on error.
    CheckConfig {
        /// The YAML config to validate.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Serve a simulated chain; provider i listens on port listen+i (HTTP and WS on one port).
    Devnet(DevnetArgs),
    /// Forget a chain's stored history so the next run indexes it from its configured start:
    /// every stored event is retracted (marked removed, streamed as `removed`) and the
    /// checkpoint deleted. For a node that was reset or another chain behind the same URL.
    /// Stop the service first.
    ResetChain {
        /// The chain's name, as in the config.
        #[arg(value_name = "CHAIN")]
        chain: String,
        /// The YAML config naming the database (default: the embedded config's).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a running service's chains, providers and supervised tasks as tables.
    Status {
        /// The service's API.
        #[arg(long, default_value = "http://127.0.0.1:4000")]
        url: String,
        /// The service's `server.auth_token`, for a service not on this host.
        #[arg(long, env = "LIVECHAIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// The YAML config naming the database (default: the embedded config's data/livechain.db).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Address of provider 0; provider i listens on the next ports (port + i).
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub listen: SocketAddr,
    /// Provider endpoints serving the same chain (1 to 64).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub providers: u16,
    /// Milliseconds between blocks; 0 is throughput mode (as fast as subscribers read).
    #[arg(long, default_value_t = 1000)]
    pub block_time_ms: u64,
    /// Synthetic contract logs in every block.
    #[arg(long, default_value_t = 20)]
    pub logs_per_block: usize,
    /// The same seed always produces the same chain, block for block.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// EIP-155 chain id answered to eth_chainId.
    #[arg(long, default_value_t = 31337)]
    pub chain_id: u64,
    /// Blocks that already exist at start (history to backfill).
    #[arg(long, default_value_t = 0)]
    pub initial_blocks: u64,
    /// Reorganise the chain every N blocks.
    #[arg(long)]
    pub reorg_every: Option<u64>,
    /// Depth of each reorganisation.
    #[arg(long, default_value_t = 3)]
    pub reorg_depth: u64,
}

impl DevnetArgs {
    /// The devnet these flags describe.
    pub fn devnet_config(&self) -> DevnetConfig {
        DevnetConfig {
            listen: self.listen,
            providers: usize::from(self.providers),
            block_time_ms: self.block_time_ms,
            logs_per_block: self.logs_per_block,
            seed: self.seed,
            chain_id: self.chain_id,
            initial_blocks: self.initial_blocks,
            resume_at: 0,
            reorg_every: self.reorg_every,
            reorg_depth: self.reorg_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help_text() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
            if command.get_name() != "livechain" && command.get_about().is_none() {
                missing.push(command.get_name().to_owned());
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{} {}", command.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
