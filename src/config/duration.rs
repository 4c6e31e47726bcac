//! Durations in config: an integer is milliseconds (the seed's convention, kept so old files
//! still mean the same), a string is humantime (`"500ms"`, `"30s"`, `"30d"`).

use std::time::Duration;

/// Parses a duration given as text: all digits means milliseconds, anything else is humantime.
pub(super) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // A quoted "2000" (e.g. from `"${WINDOW:-2000}"`) means what the bare integer means.
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| "out of range".to_owned());
    }
    humantime::parse_duration(text).map_err(|err| match err {
        // humantime's own text lists every unit variant; ours names the ones people use.
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("not a duration: unknown unit `{unit}` (use ms, s, m, h or d, e.g. \"30s\")")
        }
        humantime::DurationError::NumberOverflow => "not a duration: too large".to_owned(),
        _ => HINT.to_owned(),
    })
}

const HINT: &str =
    "not a duration: write milliseconds or a number with a unit, e.g. \"500ms\", \"30s\", \"30d\"";

/// For summaries and messages: `30s`, `1day`, `500ms`.
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_forms() {
        let ok: &[(&str, Duration)] = &[
            ("2000", Duration::from_millis(2000)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("1m 30s", Duration::from_secs(90)),
            ("30d", Duration::from_secs(30 * 86_400)),
            (" 2h ", Duration::from_secs(7_200)),
            ("1.5s", Duration::from_millis(1_500)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse(text).as_ref(), Ok(expected), "{text:?}");
        }
        for bad in ["", "soon", "30 parsecs", "-5s", "5 s s"] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(format(Duration::from_millis(1500)), "1s 500ms");
    }
}
