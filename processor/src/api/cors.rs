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
const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key";
/// Methods a page may use (a client token reads and submits, nothing else).
const ALLOWED_METHODS: &str = "GET, POST";
/// Response headers a page may read besides the safelisted ones.
const EXPOSED_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer (seconds).
const PREFLIGHT_MAX_AGE: &str = "600";

/// Whether `origin` can be listed: `scheme://host[:port]` over http(s),
/// as a browser sends it (no path, no trailing slash, not `*` or `null`,
/// which would never match or would admit sandboxed pages).
pub fn listable(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', ' '])
        && origin.chars().all(|c| c.is_ascii_graphic())
}

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
    if allowed.is_empty() {
        return next.run(request).await;
    }
    let origin = allowed_origin(request.headers(), allowed).cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(origin) = origin else {
            let mut refused = ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin may not call the api from a browser",
            )
            .into_response();
            refused
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("origin"));
            return refused;
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
    let h = response.headers_mut();
    // Every answer depends on the origin once a list is configured: a
    // shared cache must not hand one origin's answer to another.
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
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

    #[test]
    fn only_origins_a_browser_sends_can_be_listed() {
        for good in [
            "https://app.example",
            "http://127.0.0.1:8081",
            "https://a.b:8443",
        ] {
            assert!(listable(good), "{good}");
        }
        for bad in [
            "*",
            "null",
            "https://app.example/",
            "https://app.example/path",
            "app.example",
            "ftp://app.example",
            "https://",
            "https://*.example",
        ] {
            assert!(!listable(bad), "{bad}");
        }
    }
}
