//! The one error type of the HTTP layer: it alone decides status codes and the JSON error shape.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::Cursor;
use crate::store::StoreError;

/// Seconds a client is told to wait when the store was busy: a lock is held for milliseconds.
const BUSY_RETRY_AFTER_SECS: &str = "1";

/// Everything a handler can fail with. Internal errors are logged, never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter, path segment or body field the client got wrong.
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller must present `server.auth_token` (or presented a wrong one).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is over a per-client limit (its open streams).
    #[error("{0}")]
    TooManyRequests(String),
    /// A known route asked with a method it does not answer (axum adds the `Allow` header).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A WebSocket route asked without a WebSocket upgrade.
    #[error("{0}")]
    UpgradeRequired(String),
    /// A request or client message over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The changes after the client's cursor were partly pruned by retention: resuming there
    /// would hand it a gap. It may resume after `oldest_cursor` (or start over from 0).
    #[error(
        "cursor {cursor} is below the oldest retained cursor {oldest_cursor}: changes after it \
         were pruned; resume after {oldest_cursor}, or from 0 for everything still stored"
    )]
    CursorExpired {
        cursor: Cursor,
        oldest_cursor: Cursor,
    },
    /// The query ran past `server.query_timeout` and was stopped.
    #[error("{0}")]
    TooCostly(String),
    /// The service cannot answer yet (database not writable, no healthy provider, ...).
    #[error("{0}")]
    NotReady(String),
    /// The store could not answer right now (busy, locked, a full disk, a pool timeout) and
    /// the same request may succeed shortly: a 503 with a `Retry-After`, not a 500.
    #[error("{0}")]
    Busy(String),
    /// Anything else: logged with its cause, answered with a generic message.
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

/// A store failure is the client's to retry when trying again can help, ours otherwise.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if let StoreError::TooCostly(budget) = err {
            metrics::counter!(crate::telemetry::metrics::API_TIMEOUTS, "kind" => "query")
                .increment(1);
            return ApiError::TooCostly(format!(
                "the query read for longer than {budget:?} (server.query_timeout) and was \
                 stopped: narrow it (chain, a block range, address or topics) or ask a smaller limit"
            ));
        }
        if err.is_busy() || err.is_retryable() {
            tracing::debug!(error = %err, "store busy: answering 503");
            ApiError::Busy("the database is busy; retry shortly".to_owned())
        } else {
            ApiError::Internal(Box::new(err))
        }
    }
}

/// What the JSON error shape says about an error (REST body and the stream's `error` message).
/// Building it logs an internal error with its whole cause chain, since the client never sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `not_found`, `forbidden`, `unauthorized`, `too_many_requests`,
    /// `method_not_allowed`, `upgrade_required`, `too_large`, `cursor_expired`,
    /// `query_too_costly`, `not_ready` or `internal`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The parameter, path segment or field at fault (`bad_request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `cursor_expired`: the lowest cursor to resume after without a gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_cursor: Option<Cursor>,
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::CursorExpired { .. } => StatusCode::GONE,
            ApiError::TooCostly(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` of the JSON error shape (also in the stream's `error` messages).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UpgradeRequired(_) => "upgrade_required",
            ApiError::TooLarge(_) => "too_large",
            ApiError::CursorExpired { .. } => "cursor_expired",
            ApiError::TooCostly(_) => "query_too_costly",
            ApiError::NotReady(_) | ApiError::Busy(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    /// `cursor_expired` when a reader resuming after `cursor` may have missed pruned changes
    /// (`oldest_cursor` above it); 0 means "from the oldest retained" and never expires.
    pub fn check_cursor(cursor: Cursor, oldest_cursor: Cursor) -> Result<(), ApiError> {
        if cursor > 0 && cursor < oldest_cursor {
            Err(ApiError::CursorExpired {
                cursor,
                oldest_cursor,
            })
        } else {
            Ok(())
        }
    }

    /// The code, message and field a client is told; an internal error is logged here, once.
    pub fn detail(&self) -> ErrorDetail {
        let (message, field) = match self {
            ApiError::BadRequest { field, message } => (message.clone(), Some(field.clone())),
            ApiError::Internal(err) => {
                tracing::error!(error = %cause_chain(err.as_ref()), "internal API error");
                ("internal error".to_owned(), None)
            }
            other => (other.to_string(), None),
        };
        let oldest_cursor = match self {
            ApiError::CursorExpired { oldest_cursor, .. } => Some(*oldest_cursor),
            _ => None,
        };
        ErrorDetail {
            code: self.code(),
            message,
            field,
            oldest_cursor,
        }
    }
}

/// An error and its sources, `outer: inner: ...`, for the log.
fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    // Bounded: a source chain is finite, but a cyclic one would not be.
    for _ in 0..16 {
        let Some(inner) = source else { break };
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Every error's JSON: `{"error": {"code", "message", "field"?, "oldest_cursor"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
        };
        let response = (self.status_code(), Json(body));
        if matches!(self, ApiError::Busy(_)) {
            ([(RETRY_AFTER, BUSY_RETRY_AFTER_SECS)], response).into_response()
        } else if matches!(self, ApiError::Unauthorized(_)) {
            ([(WWW_AUTHENTICATE, "Bearer")], response).into_response()
        } else {
            response.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    /// A real `SQLITE_BUSY`: one connection holds the write lock, a second with no busy
    /// timeout tries to write.
    async fn busy_error() -> StoreError {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = options.connect().await.expect("first connection");
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut holder)
            .await
            .expect("create");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .expect("take the write lock");
        let mut other = options.connect().await.expect("second connection");
        let err = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .expect_err("the write lock is held");
        other.close().await.expect("close");
        StoreError::from(err)
    }

    async fn respond(err: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let body = serde_json::from_slice(&body).expect("JSON");
        (status, retry_after, body)
    }

    #[tokio::test]
    async fn a_busy_store_is_a_503_to_retry_and_a_corrupt_row_a_500() {
        let busy = busy_error().await;
        assert!(busy.is_busy(), "{busy}");
        let (status, retry_after, body) = respond(ApiError::from(busy)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some(BUSY_RETRY_AFTER_SECS));
        assert_eq!(body["error"]["code"], "not_ready");

        let timed_out = ApiError::from(StoreError::Sqlx(sqlx::Error::PoolTimedOut));
        assert_eq!(timed_out.status_code(), StatusCode::SERVICE_UNAVAILABLE);

        let corrupt = StoreError::Corrupt("block hash of 31 bytes".into());
        let (status, retry_after, body) = respond(ApiError::from(corrupt)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal");
        // The cause is logged, never echoed.
        assert_eq!(body["error"]["message"], "internal error");
    }
}
