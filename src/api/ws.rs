//! The WebSocket side of `/v1/stream`'s errors: which client messages are over the size limit,
//! and the close frame that ends a session with a code a client library can act on.

use axum::extract::ws::{CloseFrame, Message, close_code};

use super::ApiError;

/// The longest reason a close frame carries: a control frame's 125 bytes less the code.
const MAX_CLOSE_REASON: usize = 123;

/// A message read whole but over `limit` bytes.
pub(super) fn oversize(message: &Message, limit: usize) -> bool {
    match message {
        Message::Text(text) => text.len() > limit,
        Message::Binary(bytes) => bytes.len() > limit,
        _ => false,
    }
}

/// Whether a failed read was tungstenite refusing a frame or message over the transport's size
/// limit (the client is told). Any other failure (a reset, a protocol violation) ends the
/// session without a word. The error is axum's tungstenite's, hence that crate's version.
pub(super) fn over_limit(err: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        err.source()
            .and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The close frame after an `error` message (RFC 6455 section 7.4.1): 1008 for a request the
/// stream refuses, 1009 for a message over the limit, 1011 for a failure of ours.
pub(super) fn close_after(err: &ApiError) -> CloseFrame {
    match err {
        ApiError::BadRequest { field, .. } => {
            close_frame(close_code::POLICY, &format!("bad request: {field}"))
        }
        ApiError::TooLarge(_) => close_frame(close_code::SIZE, "message too big"),
        ApiError::CursorExpired { .. } => close_frame(close_code::POLICY, "cursor expired"),
        ApiError::NotReady(_) | ApiError::Busy(_) | ApiError::TooManyRequests(_) => {
            close_frame(close_code::AGAIN, "not ready")
        }
        ApiError::Internal(_) => close_frame(close_code::ERROR, "internal error"),
        ApiError::NotFound(_)
        | ApiError::Forbidden(_)
        | ApiError::Unauthorized(_)
        | ApiError::MethodNotAllowed(_)
        | ApiError::UpgradeRequired(_)
        | ApiError::TooCostly(_) => close_frame(close_code::POLICY, err.code()),
    }
}

/// A close frame whose reason fits a control frame (123 bytes after the code): a field name
/// comes from the client and may be long.
pub(super) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let reason = &reason[..reason.floor_char_boundary(MAX_CLOSE_REASON)];
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_carry_a_code_and_a_reason_that_fits() {
        let cases = [
            (ApiError::bad_request("kind", "no"), close_code::POLICY),
            (ApiError::TooLarge("big".into()), close_code::SIZE),
            (ApiError::Internal("disk".into()), close_code::ERROR),
            (ApiError::NotReady("later".into()), close_code::AGAIN),
        ];
        for (err, code) in cases {
            let frame = close_after(&err);
            assert_eq!(frame.code, code, "{err}");
            assert!(!frame.reason.is_empty(), "{err}");
        }
        assert_eq!(
            close_after(&ApiError::bad_request("kind", "no"))
                .reason
                .as_str(),
            "bad request: kind"
        );
        // A client's parameter name may be long and multi-byte: cut at a character boundary.
        let long = "é".repeat(100);
        let reason = close_after(&ApiError::bad_request(long, "unknown parameter")).reason;
        assert!(
            reason.len() <= MAX_CLOSE_REASON && reason.len() > 100,
            "{}",
            reason.len()
        );
        assert!(reason.as_str().starts_with("bad request: é"));
    }
}
