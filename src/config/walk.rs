//! Reading a parsed `serde_norway::Value` by hand, collecting every problem with its path.
//!
//! serde's derive stops at the first error (`deny_unknown_fields` included); an operator fixing
//! a config wants all of them at once. So the parsers walk the tree themselves: every reader
//! reports into [`Issues`] and returns `None` on failure, and the caller carries on with a
//! default so later fields are still checked.

use std::time::Duration;

use serde_norway::Value;

use super::{ConfigIssue, duration, env};

/// Every problem found so far.
#[derive(Default)]
pub(super) struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `parent.key`, or `key` at the root.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(super) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A mapping whose keys were checked against the known set; lookups are by known key only.
pub(super) struct Map<'a> {
    pub path: String,
    entries: Vec<(&'a str, &'a Value)>,
}

impl<'a> Map<'a> {
    /// Reads `value` as a mapping at `path`, reporting every key not in `known`.
    /// `None` (after reporting) when `value` is not a mapping; null reads as an empty mapping,
    /// because `breaker:` with nothing under it means "all defaults".
    pub fn read(value: &'a Value, path: &str, known: &[&str], issues: &mut Issues) -> Option<Self> {
        let mut map = Map {
            path: path.to_owned(),
            entries: Vec::new(),
        };
        let mapping = match value {
            Value::Null => return Some(map),
            Value::Mapping(mapping) => mapping,
            other => {
                report_type(other, path, "a mapping", issues);
                return None;
            }
        };
        for (key, value) in mapping {
            match key.as_str() {
                Some(name) if known.contains(&name) => map.entries.push((name, value)),
                _ => {
                    let shown = key_text(key);
                    issues.push(join(path, &shown), unknown_key_message(&shown, known));
                }
            }
        }
        Some(map)
    }

    /// The path of `key` under this mapping.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; `None` when absent or null (a bare `key:` means "not set").
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.raw(key).filter(|value| !value.is_null())
    }

    /// The value of `key` even when null; `None` only when absent.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
    }

    /// Reads an optional field; `None` when absent, null or invalid (reported).
    pub fn opt<T>(&self, key: &str, issues: &mut Issues, read: Reader<T>) -> Option<T> {
        let value = self.get(key)?;
        read(value, &self.path_of(key), issues)
    }

    /// Reads a required field, reporting `key: missing` when absent.
    pub fn req<T>(&self, key: &str, issues: &mut Issues, read: Reader<T>) -> Option<T> {
        match self.get(key) {
            Some(value) => read(value, &self.path_of(key), issues),
            None => {
                issues.push(self.path_of(key), "missing");
                None
            }
        }
    }
}

/// A typed reader of one value at a path.
pub(super) type Reader<'r, T> = &'r dyn Fn(&Value, &str, &mut Issues) -> Option<T>;

/// A key as the operator wrote it, for paths and messages.
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => env::display(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_owned(),
        _ => "<complex key>".to_owned(),
    }
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(best) => format!("unknown key (did you mean `{best}`?)"),
        None if known.is_empty() => "unknown key".to_owned(),
        None => format!("unknown key (expected one of: {})", known.join(", ")),
    }
}

/// The known key nearest to `key` by edit distance, if near enough to be a likely typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| (levenshtein(&key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What a value is, for "expected X, got Y".
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Reports a wrong type, or an unset variable when that is why the value is a string.
pub(super) fn report_type(value: &Value, path: &str, expected: &str, issues: &mut Issues) {
    if !report_unset(value, path, issues) {
        issues.push(path, format!("expected {expected}, got {}", kind(value)));
    }
}

/// Reports (and returns true) when `value` is text naming unset variables without a default.
pub(super) fn report_unset(value: &Value, path: &str, issues: &mut Issues) -> bool {
    let Value::String(text) = value else {
        return false;
    };
    let names = env::unset_vars(text);
    if names.is_empty() {
        return false;
    }
    issues.push(
        path,
        format!(
            "{} (give a default with ${{{}:-value}})",
            env::not_set_message(&names),
            names[0]
        ),
    );
    true
}

/// A string.
pub(super) fn string(value: &Value, path: &str, issues: &mut Issues) -> Option<String> {
    match value {
        Value::String(s) if env::unset_vars(s).is_empty() => Some(s.clone()),
        other => {
            report_type(other, path, "a string", issues);
            None
        }
    }
}

/// A boolean.
pub(super) fn boolean(value: &Value, path: &str, issues: &mut Issues) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        other => {
            report_type(other, path, "true or false", issues);
            None
        }
    }
}

/// A non-negative integer in `min..=max`.
pub(super) fn uint(min: u64, max: u64) -> impl Fn(&Value, &str, &mut Issues) -> Option<u64> {
    move |value, path, issues| {
        let n = match value {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(n), _) => n,
                (None, Some(_)) => {
                    issues.push(path, "must not be negative");
                    return None;
                }
                (None, None) => {
                    issues.push(path, "expected an integer, got a float");
                    return None;
                }
            },
            other => {
                report_type(other, path, "an integer", issues);
                return None;
            }
        };
        if n < min {
            issues.push(path, format!("must be at least {min}, got {n}"));
            None
        } else if n > max {
            issues.push(path, format!("must be at most {max}, got {n}"));
            None
        } else {
            Some(n)
        }
    }
}

/// A `u32` in `min..=u32::MAX`.
pub(super) fn uint32(min: u32) -> impl Fn(&Value, &str, &mut Issues) -> Option<u32> {
    let read = uint(min.into(), u32::MAX.into());
    move |value, path, issues| read(value, path, issues).and_then(|n| u32::try_from(n).ok())
}

/// A `usize` in `min..=max`.
pub(super) fn size(min: usize, max: usize) -> impl Fn(&Value, &str, &mut Issues) -> Option<usize> {
    // usize -> u64 is lossless on every target Rust supports (pointers are at most 64 bits).
    let read = uint(min as u64, max as u64);
    move |value, path, issues| read(value, path, issues).and_then(|n| usize::try_from(n).ok())
}

/// A duration: integer milliseconds or a humantime string; zero is refused when `nonzero`.
pub(super) fn duration(nonzero: bool) -> impl Fn(&Value, &str, &mut Issues) -> Option<Duration> {
    move |value, path, issues| {
        let parsed = match value {
            Value::Number(n) => match n.as_u64() {
                Some(ms) => Ok(Duration::from_millis(ms)),
                None => Err(
                    "expected milliseconds (a non-negative integer) or a string like \"30s\""
                        .to_owned(),
                ),
            },
            Value::String(s) if env::unset_vars(s).is_empty() => duration::parse(s),
            other => {
                report_type(
                    other,
                    path,
                    "a duration (milliseconds or e.g. \"30s\")",
                    issues,
                );
                return None;
            }
        };
        match parsed {
            Ok(d) if nonzero && d.is_zero() => {
                issues.push(path, "must be greater than 0");
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                issues.push(path, message);
                None
            }
        }
    }
}

/// A list; a single non-list value is not accepted (lists stay lists).
pub(super) fn list<'a>(value: &'a Value, path: &str, issues: &mut Issues) -> Option<&'a [Value]> {
    match value {
        Value::Sequence(items) => Some(items),
        other => {
            report_type(other, path, "a list", issues);
            None
        }
    }
}

/// `[a-z0-9_-]+`: names that go into paths, metrics labels and URLs unescaped.
pub(super) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_suggestions() {
        let known = ["failure_threshold", "recovery_timeout", "success_threshold"];
        assert_eq!(
            closest("failur_threshold", &known),
            Some("failure_threshold")
        );
        assert_eq!(
            closest("Recovery_Timeout", &known),
            Some("recovery_timeout")
        );
        assert_eq!(closest("colour", &known), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
