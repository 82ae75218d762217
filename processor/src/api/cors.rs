//! Cross-origin requests from the pages of configured origins
//! (`api.cors_origins`). Browsers there hold client tokens sent as
//! `Authorization: Bearer`, never cookies, so no response allows
//! credentials; a preflight is answered here, before authentication, and
//! an origin not on the list gets no CORS headers at all (the browser
//! then withholds the response from the page).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};

/// Request headers a page may send.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-request-id";
/// Methods a page may use.
const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";
/// Response headers a page may read besides the safelisted ones.
const EXPOSED_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer (seconds).
const PREFLIGHT_MAX_AGE: &str = "600";

/// The request's origin when it is one of `allowed` (exact match).
fn allowed_origin<'h>(headers: &'h HeaderMap, allowed: &[String]) -> Option<&'h HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed.iter().any(|a| a == text).then_some(origin)
}

/// Answers preflights and marks the responses of allowed origins.
pub async fn cors(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = &state.inner.config.cors_origins;
    let origin = allowed_origin(request.headers(), allowed).cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(origin) = origin else {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin may not call the api from a browser",
            )
            .into_response();
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_match_exactly() {
        let allowed = vec!["https://app.example".to_string()];
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h
        };
        assert!(allowed_origin(&with("https://app.example"), &allowed).is_some());
        for other in [
            "https://app.example.evil",
            "http://app.example",
            "https://app.example:8443",
            "null",
        ] {
            assert!(allowed_origin(&with(other), &allowed).is_none(), "{other}");
        }
        assert!(allowed_origin(&HeaderMap::new(), &allowed).is_none());
        assert!(allowed_origin(&with("https://app.example"), &[]).is_none());
    }
}
