//! Talking to JSON-RPC providers: the only module that knows JSON-RPC framing.
//!
//! - [`http::HttpClient`]: calls and batches over HTTP with deadlines.
//! - [`ws::WsClient`]: a WebSocket connection as an actor, with subscriptions.
//! - [`methods`]: the methods Livechain calls, typed: [`Request`]s built from alloy's types and
//!   their answers read back ([`methods::read_blocks`] and the like).
//! - [`LogFilter`]: a `logs` filter in the JSON shape nodes take.
//! - [`decode`]: provider JSON to domain values, with a cheap identity-only read for dedupe.
//! - [`ProviderError`]: errors that classify themselves (fault, rate limit, range, ...), by
//!   [`ErrorRules`]: the configured `error_rules`, then the built-in table.
//! - [`ErrorTally`]: a provider's errors counted by kind since start.

mod classify;
pub mod decode;
mod error;
mod filter;
pub mod http;
pub mod jsonrpc;
pub mod methods;
mod tally;
pub mod ws;

pub use classify::ErrorRules;
pub use error::ProviderError;
pub use filter::LogFilter;
pub use http::HttpClient;
pub use methods::{BlocksError, FINALITY_TAGS, Method, Request};
pub use tally::{ERROR_KINDS, ErrorTally};
pub use ws::{Burst, Notification, WsClient, WsOptions};

/// A URL fit for logs: scheme and host only, since paths and queries carry API keys.
pub fn redact(url: &url::Url) -> String {
    crate::config::redacted_url(url)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Quoted JSON-RPC method names: a string starting with one of these is a method name.
    const METHOD_PREFIXES: [&str; 3] = ["\"eth_", "\"net_", "\"web3_"];

    /// Every `.rs` file under `dir`, skipping the directories in `except`.
    fn sources(dir: &Path, except: &[PathBuf], out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if !except.contains(&path) {
                    sources(&path, except, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Only `provider` knows JSON-RPC (and the devnet and gateway, which serve it): a method name spelt
    /// anywhere else in `src/` means a call that bypasses the typed ones of [`super::methods`].
    #[test]
    fn no_json_rpc_method_name_outside_provider_and_devnet() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let except = [
            src.join("provider"),
            src.join("devnet"),
            src.join("gateway"),
        ];
        let mut files = Vec::new();
        sources(&src, &except, &mut files);
        assert!(files.len() > 50, "walked too few files: {files:?}");
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a source file");
            for (i, line) in text.lines().enumerate() {
                if METHOD_PREFIXES.iter().any(|p| line.contains(p)) {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "JSON-RPC method names outside src/provider/ (use provider::Request):\n{}",
            found.join("\n")
        );
    }
}
