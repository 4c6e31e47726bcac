//! The text `livechain check-config FILE` prints: warnings, then errors, or a summary line.

use std::fmt::Write as _;

use super::{ChainConfig, ConfigError, Loaded};

/// One line per warning (`warning: ...`), then one `path: message` line per error, or on
/// success a summary such as `ok: 1 chain (devnet: 3 devnet providers)`. Ends with a newline.
/// The caller decides the exit code from `result.is_err()`.
pub fn check_report(result: &Result<Loaded, ConfigError>) -> String {
    let mut out = String::new();
    match result {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                let _ = writeln!(out, "warning: {warning}");
            }
            let chains = &loaded.config.chains;
            let plural = if chains.len() == 1 { "" } else { "s" };
            let parts: Vec<String> = chains
                .iter()
                .map(|(name, chain)| format!("{name}: {}", describe(chain)))
                .collect();
            let _ = writeln!(
                out,
                "ok: {} chain{plural} ({})",
                chains.len(),
                parts.join("; ")
            );
        }
        Err(err) => {
            for issue in err.issues() {
                let _ = writeln!(out, "{issue}");
            }
        }
    }
    out
}

/// `3 devnet providers` or `2 providers: infura, alchemy`.
fn describe(chain: &ChainConfig) -> String {
    if let Some(devnet) = &chain.devnet {
        return count(devnet.providers, "devnet provider");
    }
    let ids: Vec<&str> = chain.providers.iter().map(|p| p.id.as_str()).collect();
    format!("{}: {}", count(ids.len(), "provider"), ids.join(", "))
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
