//! `${VAR}` / `${VAR:-default}` substitution on the raw YAML text, before it is parsed.
//!
//! Substituting the text (rather than parsed strings) lets a variable supply any scalar —
//! `chain_id: ${CHAIN_ID}` becomes a YAML integer. The price is that the parser no longer knows
//! where a variable was, so an *unset* variable without a default is not an error here: it is
//! replaced by a marker (`UNSET_OPEN NAME UNSET_CLOSE`, private-use characters no real value
//! contains) that the typed walk finds later, at a known path. That is what lets a provider whose
//! URL names an unset key be dropped with a warning while an unset variable anywhere else is an
//! error with its path.
//!
//! Syntax, as in docker compose: `${NAME}`, `${NAME:-default}` (default when unset or empty),
//! `${NAME-default}` (default only when unset), `$$` for a literal `$`. A `$` not followed by
//! `{` or `$` is literal. Defaults do not nest; a reference does not span lines. Full-line
//! comments are left alone (so prose about `${...}` in them is fine). Values are inserted
//! verbatim: quote the scalar if a value may contain YAML-special characters.

use super::ConfigIssue;

/// Opens the marker that stands for an unset variable (Unicode private use area).
const UNSET_OPEN: char = '\u{E000}';
/// Closes it.
const UNSET_CLOSE: char = '\u{E001}';

/// The text with every reference replaced, and the references that could not be read.
pub(super) struct Substituted {
    pub text: String,
    pub issues: Vec<ConfigIssue>,
}

/// Replaces every `${...}` in `text` from `env`; see the module documentation for the syntax.
pub(super) fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let mut out = String::with_capacity(text.len());
    let mut issues = Vec::new();
    for (number, line) in text.split_inclusive('\n').enumerate() {
        // A full-line comment is never config: prose about `${...}` there must not be an error.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            substitute_line(line, number + 1, env, &mut out, &mut issues);
        }
    }
    Substituted { text: out, issues }
}

/// One line: references never span lines, so a missing `}` cannot swallow the rest of the file.
fn substitute_line(
    line: &str,
    number: usize,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    issues: &mut Vec<ConfigIssue>,
) {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let from_dollar = &rest[dollar..];
        // 1-based, in characters, as editors count.
        let column = line[..line.len() - from_dollar.len()].chars().count() + 1;
        let at = || format!("line {number}, column {column}");
        if let Some(after) = from_dollar.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                issues.push(ConfigIssue {
                    path: at(),
                    message: "unterminated `${` (write `$$` for a literal `$`)".into(),
                });
                out.push_str(from_dollar);
                return;
            };
            match expand(&after[..close], env) {
                Ok(value) => out.push_str(&value),
                Err(message) => {
                    // Keep the text as written so the error does not cascade into "missing" or
                    // "empty" complaints about the field around it.
                    out.push_str(&from_dollar[..close + 3]);
                    issues.push(ConfigIssue {
                        path: at(),
                        message,
                    });
                }
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &from_dollar[1..];
        }
    }
    out.push_str(rest);
}

/// The value of one reference body (the text between `${` and `}`).
fn expand(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, operator) = body.split_at(name_len);
    if !is_var_name(name) {
        return Err(format!(
            "invalid variable reference `${{{}}}`: a name is letters, digits and `_`, not starting with a digit",
            shorten(body)
        ));
    }
    let value = env(name);
    if operator.is_empty() {
        return Ok(value.unwrap_or_else(|| unset_marker(name)));
    }
    if let Some(default) = operator.strip_prefix(":-") {
        return Ok(value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned()));
    }
    if let Some(default) = operator.strip_prefix('-') {
        return Ok(value.unwrap_or_else(|| default.to_owned()));
    }
    Err(format!(
        "invalid variable reference `${{{}}}`: expected `${{NAME}}`, `${{NAME:-default}}` or `${{NAME-default}}`",
        shorten(body)
    ))
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quoting a whole malformed reference could quote a pasted secret; 40 characters identify it.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn unset_marker(name: &str) -> String {
    format!("{UNSET_OPEN}{name}{UNSET_CLOSE}")
}

/// The names of the unset variables whose markers `text` contains, in order.
pub(super) fn unset_vars(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(UNSET_OPEN) {
        let after = &rest[open + UNSET_OPEN.len_utf8()..];
        let Some(close) = after.find(UNSET_CLOSE) else {
            break;
        };
        names.push(&after[..close]);
        rest = &after[close + UNSET_CLOSE.len_utf8()..];
    }
    names
}

/// `text` with markers turned back into `${NAME}`, for messages that quote config text.
pub(super) fn display(text: &str) -> String {
    text.replace(UNSET_OPEN, "${").replace(UNSET_CLOSE, "}")
}

/// "A is not set" / "A, B are not set".
pub(super) fn not_set_message(names: &[&str]) -> String {
    match names {
        [one] => format!("{one} is not set"),
        many => format!("{} are not set", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("abc123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> (String, Vec<String>) {
        let s = substitute(text, &env);
        (s.text, s.issues.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn substitution_table() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("a ${KEY} b", "a abc123 b"),
            ("${KEY}${KEY}", "abc123abc123"),
            ("${MISSING:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${MISSING-dflt}", "dflt"),
            ("${KEY:-dflt}", "abc123"),
            ("${MISSING:-}", ""),
            ("${MISSING:-a:b/c}", "a:b/c"),
            ("cost $$5 and $$${KEY}", "cost $5 and $abc123"),
            ("$5 and $HOME", "$5 and $HOME"),
            ("${MISSING}", "\u{E000}MISSING\u{E001}"),
            ("héllo ${KEY} wörld", "héllo abc123 wörld"),
        ];
        for (input, expected) in cases {
            let (text, issues) = run(input);
            assert_eq!(&text, expected, "input {input:?}");
            assert!(issues.is_empty(), "input {input:?}: {issues:?}");
        }
    }

    #[test]
    fn malformed_references_report_line_and_column() {
        let (text, issues) = run("a: 1\nb: x${KEY\nc: ${1BAD}\nd: ${A?b}\n  # ${ in a comment\n");
        assert_eq!(
            text,
            "a: 1\nb: x${KEY\nc: ${1BAD}\nd: ${A?b}\n  # ${ in a comment\n"
        );
        assert_eq!(
            issues,
            [
                "line 2, column 5: unterminated `${` (write `$$` for a literal `$`)",
                "line 3, column 4: invalid variable reference `${1BAD}`: a name is letters, digits and `_`, not starting with a digit",
                "line 4, column 4: invalid variable reference `${A?b}`: expected `${NAME}`, `${NAME:-default}` or `${NAME-default}`",
            ]
        );
    }

    #[test]
    fn markers_are_found_and_displayed() {
        let (text, _) = run("https://x/${A}/${KEY}/${B}");
        assert_eq!(unset_vars(&text), ["A", "B"]);
        assert_eq!(display(&text), "https://x/${A}/abc123/${B}");
        assert_eq!(not_set_message(&["A"]), "A is not set");
        assert_eq!(not_set_message(&["A", "B"]), "A, B are not set");
    }
}
