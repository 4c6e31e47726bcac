//! The one error type of the HTTP layer: it alone decides status codes and the JSON error shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything a handler can fail with. Internal errors are logged, never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter, path segment or body field the client got wrong.
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A known route asked with a method it does not answer (axum adds the `Allow` header).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A WebSocket route asked without a WebSocket upgrade.
    #[error("{0}")]
    UpgradeRequired(String),
    /// A request or client message over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The service cannot answer yet (database not writable, no healthy provider, ...).
    #[error("{0}")]
    NotReady(String),
    /// Anything else: logged with its cause, answered with a generic message.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` of the JSON error shape (also in the stream's `error` messages).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UpgradeRequired(_) => "upgrade_required",
            ApiError::TooLarge(_) => "too_large",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (message, field) = match &self {
            ApiError::BadRequest { field, message } => (message.clone(), Some(field.as_str())),
            ApiError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal API error");
                ("internal error".to_owned(), None)
            }
            other => (other.to_string(), None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                field,
            },
        };
        (self.status_code(), Json(body)).into_response()
    }
}
