//! `livechain`: parse the command line, load config, start telemetry, hand over to the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use livechain::cli::{Cli, Command, DevnetArgs};
use livechain::config::{Config, ConfigError, Loaded};
use livechain::devnet::Devnet;
use livechain::store::{DatabaseLock, Store};
use livechain::{app, console, shutdown, telemetry};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start: freed pages go back to the OS within about a
/// second, purged by a background thread rather than by whichever thread allocates next, so
/// resident memory follows what is in use. `_RJEM_MALLOC_CONF` in the environment overrides it.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string's address, as jemalloc reads `malloc_conf` (`const char *`).
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, never written; jemalloc only reads it.
unsafe impl Sync for MallocConf {}

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
        Command::Run {
            config,
            progress_every,
        } => {
            livechain::progress::set_every(progress_every);
            let config = load(config.as_deref())?;
            let root = CancellationToken::new();
            shutdown::cancel_on_signal(root.clone());
            shutdown::survive_file_size_limit();
            app::run(config, root).await?;
        }
        Command::Status { url, token } => {
            console::out_raw(&livechain::status::render(&url, token.as_deref()).await?);
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
        Command::ResetChain { chain, config } => {
            let config = load(config.as_deref())?;
            reset_chain(&config, &chain).await?;
        }
        Command::Migrate { config } => {
            let config = load(config.as_deref())?;
            let path = &config.database.path;
            let _lock = DatabaseLock::acquire(path)?;
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

/// `reset-chain`: refused while a service holds the database, or for a chain the config does
/// not name.
async fn reset_chain(config: &Config, chain: &str) -> anyhow::Result<()> {
    if !config.chains.contains_key(chain) {
        let known: Vec<&str> = config.chains.keys().map(String::as_str).collect();
        anyhow::bail!(
            "no chain {chain:?} in the config (its chains: {})",
            known.join(", ")
        );
    }
    let path = &config.database.path;
    let _lock = DatabaseLock::acquire(path)?;
    let store = Store::open(path)
        .await
        .with_context(|| format!("opening database {}", path.display()))?;
    let reset = store.reset_chain(chain).await;
    store.close().await;
    let reset = reset.with_context(|| format!("resetting chain {chain}"))?;
    let checkpoint = reset
        .checkpoint
        .map_or("it had no checkpoint".to_owned(), |n| {
            format!("its checkpoint at block {n} is deleted")
        });
    console::out(&format!(
        "chain {chain}: {} events retracted, {checkpoint}; the next run indexes it from its \
         configured start",
        reset.retracted
    ));
    Ok(())
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
    let config = args.devnet_config();
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
