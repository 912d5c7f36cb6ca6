//! HTTP error answers: a precise status code and `{"type","detail"}` body.
//!
//! The status says what happened where Trustee's clients can tell: 400
//! malformed, 401 not authenticated or refused (bad evidence, policy denial:
//! Trustee's KBS answers 401 to both and its clients then attest again), 403
//! an admin token with the wrong role, 404 no such resource, 413 too large, 429
//! slow down, 503 full. The body's `type` names the exact reason
//! (`.../errors/PolicyDeny`, `.../errors/EvidenceRejected`, ...).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }
    pub fn unauthorized(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, detail)
    }
    pub fn forbidden(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, detail)
    }
    pub fn not_found(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, detail)
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        // Details go to the log, not to the client.
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            "internal error; see the KBS log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = kbs_types::ErrorInformation {
            error_type: format!(
                "https://github.com/confidential-containers/kbs/errors/{}",
                self.kind
            ),
            detail: self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::storage::PathError> for ApiError {
    fn from(e: crate::storage::PathError) -> Self {
        Self::bad_request("InvalidResourcePath", e.to_string())
    }
}
