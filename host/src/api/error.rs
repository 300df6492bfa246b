//! The one HTTP error type. Every failure a client can see is an [`ApiError`]:
//! a status, a stable machine `code` and a human message, rendered as
//! `{"error":{"code","message"}}`. Internal failures are logged with their
//! context and answered with a generic 500 that leaks nothing.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ErrorCode;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, documented machine code (`tenant_not_found`, …).
    pub code: ErrorCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// Seconds, for 429/503 answers.
    pub retry_after: Option<u64>,
    /// Extra machine-readable fields (e.g. a decline code).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// Attach machine-readable details.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// Attach a `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "request body is too large",
        )
    }

    /// 422 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            message,
        )
    }

    /// 404 with a resource-specific code.
    pub fn not_found(code: ErrorCode, what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, what)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 409 `conflict` family.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500: logs `context` and the cause; the client sees nothing of them.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%context, error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "internal error; see the server log",
        )
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(obj)) = (&self.details, error.as_object_mut()) {
            obj.insert("details".into(), details.clone());
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// Marks a response the `Idempotency-Key` layer must not keep: it says the
/// key already belongs to another request, so keeping it would bind the key
/// to this one and lock out a retry of the first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotReplayable;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if !self.code.is_replayable() {
            response.extensions_mut().insert(NotReplayable);
        }
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Turn axum's own rejections (bad JSON, wrong content type, body too large)
/// into our error shape instead of plain text.
pub fn from_json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection as R;
    match rejection {
        R::JsonDataError(e) => ApiError::validation(e.body_text()),
        R::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            e.body_text(),
        ),
        R::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        R::BytesRejection(e) => from_bytes_rejection(&e),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// A request body that could not be read: too large (413 `body_too_large`),
/// not in time (408 `body_timeout`), or cut off (400 `body_unreadable`).
pub fn from_bytes_rejection(rejection: &axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::body_too_large();
    }
    body_read_error(rejection)
}

/// [`from_bytes_rejection`] for any error of reading a body.
pub fn body_read_error(error: &(dyn std::error::Error + 'static)) -> ApiError {
    if crate::http_server::is_body_timeout(error) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            "the request body did not arrive in time",
        );
    }
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::body_too_large();
        }
        current = e.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BodyUnreadable,
        "the request body could not be read",
    )
}
