//! Browser assets compiled into the binary, so a deployment serves them
//! without files or a CDN: the JavaScript SDK (`/sdk/timbre.js`, always)
//! and the evaluation console (`/console`, when `api.console` is on).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiState;

const SDK: &str = include_str!("../../web/sdk/timbre.js");
const CONSOLE_HTML: &str = include_str!("../../web/console/index.html");
const CONSOLE_JS: &str = include_str!("../../web/console/console.js");
const CONSOLE_CSS: &str = include_str!("../../web/console/console.css");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The console loads only its own files and talks only to this API; the
/// SDK's audio worklet is a `blob:` module.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self' blob:; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The asset routes; the console's only when `console`.
pub fn routes(console: bool) -> Router<ApiState> {
    let router = Router::new().route("/sdk/timbre.js", get(|| async { asset(JAVASCRIPT, SDK) }));
    if !console {
        return router;
    }
    router
        .route(
            "/console",
            get(|| async {
                let mut page = asset("text/html; charset=utf-8", CONSOLE_HTML);
                page.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONSOLE_POLICY),
                );
                page
            }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset(JAVASCRIPT, CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load, so an upgrade is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
