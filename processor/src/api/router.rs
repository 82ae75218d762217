//! The router: every route module merged under one set of middleware
//! (body limit, timeout, metrics, JSON errors).

use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, middleware};
use serde::de::DeserializeOwned;

use super::{
    ApiError, ApiState, brief, client_tokens, cors, dialects, error, key_admin, oauth, ops, users,
    v1, web,
};

/// The router with its middleware: body limit, timeout, metrics, JSON errors.
pub fn router(state: ApiState) -> Router {
    let limit = state.inner.config.max_upload_bytes;
    Router::new()
        .merge(v1::routes())
        .merge(key_admin::routes())
        .merge(users::routes())
        .merge(oauth::routes())
        .merge(brief::routes())
        .merge(ops::routes())
        .merge(dialects::routes())
        .merge(client_tokens::routes())
        .merge(web::routes(state.inner.config.console))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // Outermost: a preflight is answered before anything else runs.
        .layer(middleware::from_fn_with_state(state.clone(), cors::cors))
        .with_state(state)
}

/// Bounds each request's time and counts it by route and status.
async fn observe(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let started = Instant::now();
    let limit = Duration::from_millis(state.inner.config.request_timeout_ms);
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    // Bodies in flight are bounded by bytes; a body without a length may
    // grow to the upload limit, so it counts as that.
    let streamed = request.headers().contains_key(header::TRANSFER_ENCODING);
    let cost = match announced {
        Some(n) => n,
        None if streamed => state.inner.config.max_upload_bytes,
        None => 0,
    };
    let permit = u32::try_from(cost).ok().and_then(|n| {
        state
            .inner
            .body_bytes
            .clone()
            .try_acquire_many_owned(n)
            .ok()
    });
    // Refused from the headers, so the client can stop sending; bodies
    // without a length are cut off by the body limit as they stream.
    let response = if announced.is_some_and(|n| n > state.inner.config.max_upload_bytes) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        )
        .into_response()
    } else if permit.is_none() {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "too many request bytes in flight on this replica; retry shortly",
        )
        .with("retryAfterMs", 1_000)
        .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        busy
    } else {
        match tokio::time::timeout(limit, next.run(request)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "the request took too long",
            )
            .into_response(),
        }
    };
    let m = &state.inner.metrics;
    m.api_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    m.api_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A JSON body whose rejections are JSON errors too.
pub(super) struct Body<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::MissingJsonContentType(e)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::new(e.status(), "invalid_request", e.body_text())),
        }
    }
}
