//! Who may call what. Callers on loopback (unless `server.trust_loopback` is off), and callers
//! presenting `server.auth_token`, may use every route. Others get `/health`, `/ready` and the status page's own files; with
//! `server.public` also the read routes; never the admin routes (pause and resume,
//! `/v1/processes`) nor the gateway's write methods. Decided once per request, before any
//! handler, and left in the request as a [`Grant`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::ServerConfig;
use crate::telemetry::metrics as m;

/// The cookie the status page keeps the token in (a browser cannot set headers on a WebSocket).
pub const TOKEN_COOKIE: &str = "livechain_token";

/// The rules, from `server`.
#[derive(Clone)]
pub struct Access {
    token: Option<Arc<str>>,
    public: bool,
    trust_loopback: bool,
}

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Everything: on loopback, or with the token.
    Admin,
    /// The read routes only.
    Read,
}

/// How a route is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Probes and the status page's files: they tell nothing an attacker could use.
    Open,
    Read,
    Admin,
}

impl Access {
    pub fn new(config: &ServerConfig) -> Access {
        Access {
            token: config
                .auth_token
                .as_ref()
                .map(|t| Arc::from(t.expose().to_owned())),
            public: config.public,
            trust_loopback: config.trust_loopback,
        }
    }

    /// Whether `peer` is a caller on this host the rules trust (per-client limits skip it).
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        self.trust_loopback && peer.ip().is_loopback()
    }

    /// The address a per-client limit counts `peer` against: none for a trusted caller (or an
    /// unknown one).
    pub fn counted(&self, peer: Option<SocketAddr>) -> Option<std::net::IpAddr> {
        peer.filter(|p| !self.trusts(*p)).map(|p| p.ip())
    }

    /// The grant for a request from `peer` (unknown: treated as remote) with `headers`, to
    /// `method` `path`; an error when it may not go on.
    fn decide(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
    ) -> Result<Grant, ApiError> {
        match self.presented(headers) {
            Some(true) => return Ok(Grant::Admin),
            Some(false) => {
                return Err(ApiError::Unauthorized(
                    "the token presented is not server.auth_token".into(),
                ));
            }
            None => {}
        }
        if self.trust_loopback && peer.is_some_and(|p| p.ip().is_loopback()) {
            return Ok(Grant::Admin);
        }
        match (classify(method, path), self.public) {
            (Class::Open, _) | (Class::Read, true) => Ok(Grant::Read),
            (class, _) => Err(self.refusal(class)),
        }
    }

    /// Whether the request presents the token: `None` when it presents none (or none is
    /// configured, when any presented one is ignored).
    fn presented(&self, headers: &HeaderMap) -> Option<bool> {
        let token = self.token.as_deref()?;
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == TOKEN_COOKIE)
            .map(|(_, value)| value.trim());
        let given = bearer.or(cookie)?;
        Some(bool::from(given.as_bytes().ct_eq(token.as_bytes())))
    }

    fn refusal(&self, class: Class) -> ApiError {
        let what = if class == Class::Admin {
            "admin routes"
        } else {
            "this route"
        };
        if self.token.is_some() {
            ApiError::Unauthorized(format!(
                "{what} need server.auth_token from callers not on this host: send \
                 `Authorization: Bearer <token>`"
            ))
        } else {
            ApiError::Forbidden(format!(
                "{what} are served to callers on this host (loopback) only; set \
                 server.auth_token to allow others"
            ))
        }
    }
}

fn classify(method: &Method, path: &str) -> Class {
    let control = *method == Method::POST
        && (path.starts_with("/v1/providers/") || path.starts_with("/v1/chains/"));
    if control || path == "/v1/processes" {
        Class::Admin
    } else if matches!(path, "/health" | "/ready" | "/") || path.starts_with("/ui/") {
        Class::Open
    } else {
        Class::Read
    }
}

/// The middleware: a refused request is answered here (401 or 403, counted by reason); an
/// allowed one carries its [`Grant`].
pub async fn guard(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let decided = access.decide(
        peer,
        request.headers(),
        request.method(),
        request.uri().path(),
    );
    match decided {
        Ok(grant) => {
            request.extensions_mut().insert(grant);
            next.run(request).await
        }
        Err(err) => {
            metrics::counter!(m::API_REFUSED, "reason" => err.code()).increment(1);
            err.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn access(token: Option<&str>, public: bool) -> Access {
        Access::new(&ServerConfig {
            auth_token: token.map(|t| Secret::new(t.to_owned())),
            public,
            ..ServerConfig::default()
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("a header value"));
        }
        map
    }

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn each_caller_gets_what_the_rules_say() {
        let local: Option<SocketAddr> = "127.0.0.1:5000".parse().ok();
        let remote: Option<SocketAddr> = "203.0.113.7:5000".parse().ok();
        let none = HeaderMap::new();
        let bearer = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        let cookie = headers(&[("cookie", &format!("theme=dark; {TOKEN_COOKIE}={TOKEN}"))]);
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdef0124")]);
        let (get, post) = (Method::GET, Method::POST);
        let pause = "/v1/providers/devnet/p0/pause";

        let token = access(Some(TOKEN), false);
        assert_eq!(
            token.decide(local, &none, &post, pause).ok(),
            Some(Grant::Admin)
        );
        assert_eq!(
            token.decide(remote, &bearer, &post, pause).ok(),
            Some(Grant::Admin)
        );
        assert_eq!(
            token.decide(remote, &cookie, &get, "/v1/processes").ok(),
            Some(Grant::Admin)
        );
        assert_eq!(
            token.decide(remote, &none, &get, "/health").ok(),
            Some(Grant::Read)
        );
        assert_eq!(
            token.decide(remote, &none, &get, "/ui/status.js").ok(),
            Some(Grant::Read)
        );
        for (method, path) in [(&get, "/v1/events"), (&get, "/metrics"), (&post, pause)] {
            let refused = token.decide(remote, &none, method, path).err();
            assert_eq!(refused.map(|e| e.code()), Some("unauthorized"), "{path}");
        }
        // A wrong token is refused even on loopback: it is a mistake worth hearing about.
        let refused = token.decide(local, &wrong, &get, "/v1/events").err();
        assert_eq!(refused.map(|e| e.code()), Some("unauthorized"));

        let public = access(None, true);
        assert_eq!(
            public.decide(remote, &none, &get, "/v1/events").ok(),
            Some(Grant::Read)
        );
        assert_eq!(
            public.decide(remote, &none, &post, "/rpc/devnet").ok(),
            Some(Grant::Read)
        );
        for (method, path) in [(&post, pause), (&get, "/v1/processes")] {
            let refused = public.decide(remote, &none, method, path).err();
            assert_eq!(refused.map(|e| e.code()), Some("forbidden"), "{path}");
        }
        // Without a token configured, a presented one means nothing.
        assert_eq!(
            public
                .decide(remote, &bearer, &post, pause)
                .err()
                .map(|e| e.code()),
            Some("forbidden")
        );

        let closed = access(None, false);
        assert_eq!(
            closed.decide(local, &none, &post, pause).ok(),
            Some(Grant::Admin)
        );
        let refused = closed.decide(remote, &none, &get, "/v1/events").err();
        assert_eq!(refused.map(|e| e.code()), Some("forbidden"));
        // No peer known: treated as remote.
        assert!(closed.decide(None, &none, &get, "/v1/events").is_err());

        // Behind a proxy on this host: loopback is no longer trusted.
        let proxied = Access {
            trust_loopback: false,
            ..access(Some(TOKEN), false)
        };
        let refused = proxied.decide(local, &none, &get, "/v1/events").err();
        assert_eq!(refused.map(|e| e.code()), Some("unauthorized"));
        assert_eq!(
            proxied.decide(local, &bearer, &post, pause).ok(),
            Some(Grant::Admin)
        );
    }
}
