//! Config sections that appear at the root and again deeper (`breaker`, at the root and per
//! provider; `retention`, at the root and per chain): parsed in one place, the deeper one over
//! the root's values.

use std::time::Duration;

use serde_norway::Value;

use super::walk::{self, Issues, Map};
use super::{BreakerConfig, RetentionConfig};

/// The shortest `max_age`: block timestamps are whole seconds.
const MIN_MAX_AGE: Duration = Duration::from_secs(1);
/// The longest `max_age` (a century): anything longer is a unit slip, not a policy.
const MAX_MAX_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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

/// A retention section; fields it leaves out come from `base` (nothing for the global section,
/// the global section for a chain's override).
pub(super) fn retention(
    value: &Value,
    path: &str,
    base: &RetentionConfig,
    issues: &mut Issues,
) -> RetentionConfig {
    let mut out = *base;
    let Some(m) = Map::read(value, path, &["max_events", "max_age"], issues) else {
        return out;
    };
    if let Some(n) = m.opt("max_events", issues, &walk::uint(1, u64::MAX)) {
        out.max_events = Some(n);
    }
    if let Some(age) = m.opt("max_age", issues, &walk::duration(true)) {
        let at = m.path_of("max_age");
        if age < MIN_MAX_AGE {
            issues.push(
                &at,
                "must be at least 1s (block timestamps are whole seconds)",
            );
        } else if age > MAX_MAX_AGE {
            issues.push(&at, "must be at most 36500d (100 years)");
        } else {
            out.max_age = Some(age);
        }
    }
    out
}
