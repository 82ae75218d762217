//! Vendor-compatible route modules. A dialect maps another system's wire
//! format onto the same job client, views and errors as the native API:
//! no biometric logic, no second engine. Each vendor is one file here
//! (`dialects/<vendor>.rs` with a `routes()` like the native modules),
//! merged below; auth, scopes and limits come from the shared extractors.

use axum::Router;

use super::ApiState;

/// Every dialect's routes (none are enabled yet).
pub fn routes() -> Router<ApiState> {
    Router::new()
}
