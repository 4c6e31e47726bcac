//! `error_rules`: how providers' JSON-RPC error objects are classified, taught in config. Each
//! rule matches a code, a message fragment (case-insensitive) or both, and names a class; the
//! first rule that matches wins, before the built-in table.

use serde_norway::Value;

use super::walk::{self, Issues, Map};
use super::{ErrorClass, ErrorRule};

const KEYS: &[&str] = &["code", "message", "class"];

pub(super) fn error_rules(value: &Value, path: &str, issues: &mut Issues) -> Vec<ErrorRule> {
    let Some(items) = walk::list(value, path, issues) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = walk::index(path, i);
        let Some(m) = Map::read(item, &at, KEYS, issues) else {
            continue;
        };
        if m.get("code").is_none() && m.get("message").is_none() {
            issues.push(&at, "a rule needs a code, a message fragment, or both");
            continue;
        }
        let code = m.opt("code", issues, &int);
        let message = m.opt("message", issues, &walk::string);
        let class = m.req("class", issues, &class);
        if message.as_deref().is_some_and(|t| t.trim().is_empty()) {
            issues.push(m.path_of("message"), "must not be empty");
            continue;
        }
        if let (Some(class), true) = (class, code.is_some() || message.is_some()) {
            out.push(ErrorRule {
                code,
                message: message.map(|t| t.to_lowercase()),
                class,
            });
        }
    }
    out
}

/// A JSON-RPC error code: any integer, negative included.
fn int(value: &Value, path: &str, issues: &mut Issues) -> Option<i64> {
    match value {
        Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
        other => {
            walk::report_type(other, path, "an integer (a JSON-RPC error code)", issues);
            None
        }
    }
}

fn class(value: &Value, path: &str, issues: &mut Issues) -> Option<ErrorClass> {
    let name = walk::string(value, path, issues)?;
    let class = ErrorClass::parse(&name);
    if class.is_none() {
        issues.push(
            path,
            format!("{name:?} is not a class: fault, rate_limit, range, missing or caller"),
        );
    }
    class
}
