//! What the binary prints for people on stdout and stderr, outside the logs.
//!
//! `println!` panics when the reader of a pipe is gone (`livechain devnet | head -1`, a log
//! shipper that died); a service must not, so these writes drop what cannot be written.

use std::io::Write;

/// Writes `text` and a newline to stdout; a closed or broken stdout is ignored.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// Writes `text` to stdout as it is (no newline added); a broken stdout is ignored.
pub fn out_raw(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Writes `text` and a newline to stderr; a closed or broken stderr is ignored.
pub fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
