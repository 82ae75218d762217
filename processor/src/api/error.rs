//! Every failure of the API is a JSON body `{"error": code, "message": …}`
//! with a stable code; this is the one place codes meet HTTP statuses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ports::{BusError, StoreError};

/// An API error: HTTP status, stable code, message and optional extras.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// Extra top-level fields (e.g. `retryAfterMs`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// Adds a top-level field to the body.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: missing, unknown or expired credentials (never says which).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid api key is required (x-api-key or Authorization: Bearer)",
        )
    }

    /// 404 for a user without a profile in the caller's tenant.
    pub fn profile_not_found(user_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile for user {user_id:?}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store call failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code().as_str(),
            "the store is unavailable, retry later",
        )
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        tracing::warn!(error = %e, "bus call failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code().as_str(),
            "the bus is unavailable, retry later",
        )
    }
}

impl From<crate::client::ClientError> for ApiError {
    fn from(e: crate::client::ClientError) -> Self {
        use crate::client::ClientError;
        match e {
            ClientError::Schema(e) => Self::bad_request(e.code().as_str(), e.to_string()),
            ClientError::Bus(e) => e.into(),
            ClientError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let retry_after = body
            .get("retryAfterMs")
            .and_then(serde_json::Value::as_i64)
            .map(|ms| ((ms + 999) / 1000).max(1));
        let mut response = (self.status, Json(serde_json::Value::Object(body))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Turns axum's plain-text rejections (bad JSON, bad multipart, body too
/// large, unknown route, wrong method) into JSON errors with stable codes.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "wrong content type for this route",
        ),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => (
            "invalid_request",
            "the request body is not valid for this route",
        ),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("invalid_request", "the request was refused"),
    };
    ApiError::new(status, code, message).into_response()
}
