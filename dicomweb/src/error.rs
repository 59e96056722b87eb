//! The one mapping from failures to HTTP statuses (conventions §6). Bodies
//! are short plain-text sentences for a person; internal details (storage
//! paths, keys) are logged, never sent.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_core::ArchiveError;

/// An HTTP error answer: a status and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_ACCEPTABLE, message)
    }

    /// A failure of the server itself; `detail` is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %detail, "DICOMweb request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not complete the request (see the server log)",
        )
    }

    /// The archive's storage is unreachable; `detail` is logged, not sent.
    pub fn unavailable(detail: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %detail, "storage unavailable during a DICOMweb request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the archive's storage is unavailable; try again later",
        )
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> ApiError {
        match e {
            ArchiveError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            ArchiveError::Storage(e) => ApiError::unavailable(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut message = self.message;
        message.push('\n');
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
