//! Config sections that appear at the root and again deeper (`breaker`, at the root and per
//! provider): parsed in one place, the deeper one over the root's values.

use serde_norway::Value;

use super::BreakerConfig;
use super::walk::{self, Issues, Map};

const BREAKER_KEYS: &[&str] = &[
    "failure_threshold",
    "recovery_timeout",
    "success_threshold",
    "half_open_max_probes",
];

/// A breaker section; fields it leaves out come from `base` (the defaults for the global
/// section, the global section for a provider's override).
pub(super) fn breaker(
    value: &Value,
    path: &str,
    base: &BreakerConfig,
    issues: &mut Issues,
) -> BreakerConfig {
    let mut out = *base;
    let Some(m) = Map::read(value, path, BREAKER_KEYS, issues) else {
        return out;
    };
    if let Some(n) = m.opt("failure_threshold", issues, &walk::uint32(1)) {
        out.failure_threshold = n;
    }
    if let Some(d) = m.opt("recovery_timeout", issues, &walk::duration(true)) {
        out.recovery_timeout = d;
    }
    if let Some(n) = m.opt("success_threshold", issues, &walk::uint32(1)) {
        out.success_threshold = n;
    }
    if let Some(n) = m.opt("half_open_max_probes", issues, &walk::uint32(1)) {
        out.half_open_max_probes = n;
    }
    out
}
