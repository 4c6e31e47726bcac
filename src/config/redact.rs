//! Provider URLs without their secrets (ARCHITECTURE.md, "Secrets stay secret").
//!
//! API keys live in the path (`/v3/<key>`), the query (`?apikey=`) or the userinfo
//! (`user:pass@`), so only the scheme, host and port survive. This is the one place that
//! formats a provider URL for humans; `ProviderConfig`'s `Debug` and `Display` go through it.

use std::fmt;

use url::Url;

use super::ProviderConfig;

/// `https://mainnet.infura.io/…`: scheme, host and port; `…` marks anything hidden.
pub fn redacted_url(url: &Url) -> String {
    let Some(host) = url.host_str() else {
        // No host (`mailto:`, `data:`): nothing is safe to show but the scheme.
        return format!("{}:…", url.scheme());
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = !url.username().is_empty()
        || url.password().is_some()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some();
    let tail = if hidden { "/…" } else { "" };
    format!("{}://{host}{port}{tail}", url.scheme())
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("url", &redacted_url(&self.url))
            .field("ws_url", &self.ws_url.as_ref().map(redacted_url))
            .field("priority", &self.priority)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// A secret from the config (`server.auth_token`): compared, never shown — its `Debug` is
/// `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for the one comparison that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `infura (mainnet.infura.io)`: what logs and status pages show for a provider.
impl fmt::Display for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.url.host_str() {
            Some(host) => write!(f, "{} ({host})", self.id),
            None => f.write_str(&self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_table() {
        let cases = [
            (
                "https://mainnet.infura.io/v3/SECRET",
                "https://mainnet.infura.io/…",
            ),
            (
                "wss://eth.example.com/ws?apikey=SECRET",
                "wss://eth.example.com/…",
            ),
            (
                "https://user:SECRET@node.example.com",
                "https://node.example.com/…",
            ),
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
            (
                "https://node.example.com/#SECRET",
                "https://node.example.com/…",
            ),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).unwrap();
            assert_eq!(redacted_url(&url), expected, "{input}");
        }
    }

    #[test]
    fn provider_debug_and_display_hide_the_key() {
        let provider = ProviderConfig {
            id: "alchemy".into(),
            url: Url::parse("https://eth-mainnet.g.alchemy.com/v2/SECRETKEY").unwrap(),
            ws_url: Some(Url::parse("wss://eth-mainnet.g.alchemy.com/v2/SECRETKEY").unwrap()),
            priority: 2,
            breaker: None,
        };
        for text in [
            format!("{provider:?}"),
            format!("{provider:#?}"),
            provider.to_string(),
        ] {
            assert!(!text.contains("SECRETKEY"), "{text}");
            assert!(text.contains("alchemy"), "{text}");
            assert!(text.contains("eth-mainnet.g.alchemy.com"), "{text}");
        }
        assert_eq!(provider.to_string(), "alchemy (eth-mainnet.g.alchemy.com)");
    }
}
