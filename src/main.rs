//! `livechain`: parse the command line, load config, start telemetry, hand over to the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use livechain::cli::{Cli, Command, DevnetArgs};
use livechain::config::{Config, ConfigError, Loaded};
use livechain::devnet::{Devnet, DevnetConfig};
use livechain::store::Store;
use livechain::{app, console, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.log_format);
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(err) => {
            console::err(&format!("error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let config = load(config.as_deref())?;
            let root = CancellationToken::new();
            shutdown::cancel_on_signal(root.clone());
            app::run(config, root).await?;
        }
        Command::CheckConfig { file } => {
            let result = Config::load(&file);
            let ok = result.is_ok();
            console::out_raw(&livechain::config::check_report(&result));
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Devnet(args) => run_devnet(args).await?,
        Command::Migrate { config } => {
            let config = load(config.as_deref())?;
            let path = &config.database.path;
            let store = Store::open(path)
                .await
                .with_context(|| format!("opening database {}", path.display()))?;
            let applied = store.applied_migrations();
            let version = store.schema_version().await?;
            if applied.is_empty() {
                console::out(&format!(
                    "{}: schema already at version {version}",
                    path.display()
                ));
            } else {
                console::out(&format!(
                    "{}: applied {} (schema now at version {version})",
                    path.display(),
                    applied.join(", ")
                ));
            }
            store.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The config file named on the command line, or the embedded default.
fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let result = match path {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    };
    let Loaded { config, warnings } =
        result.map_err(|err: ConfigError| anyhow::anyhow!("{err}"))?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

async fn run_devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let root = CancellationToken::new();
    shutdown::cancel_on_signal(root.clone());
    let config = DevnetConfig {
        listen: args.listen,
        providers: usize::from(args.providers),
        block_time_ms: args.block_time_ms,
        logs_per_block: args.logs_per_block,
        seed: args.seed,
        chain_id: args.chain_id,
        initial_blocks: args.initial_blocks,
        resume_at: 0,
        reorg_every: args.reorg_every,
        reorg_depth: args.reorg_depth,
    };
    let devnet = Devnet::start(config, root.clone())
        .await
        .context("starting the devnet")?;
    for endpoint in devnet.endpoints() {
        console::out(&endpoint.to_string());
    }
    root.cancelled().await;
    devnet.stopped().await;
    Ok(())
}
