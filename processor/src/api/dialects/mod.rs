//! Vendor-compatible route modules. A dialect maps another system's wire
//! format onto the same job client, views and errors as the native API:
//! no biometric logic, no second engine. Each vendor is one file here
//! (`dialects/<vendor>.rs` with a `routes()` like the native modules),
//! merged below; auth, scopes and limits come from the shared extractors.

use axum::Router;

use super::ApiState;
use crate::domain::Scope;

pub mod contact_consent;
pub mod dialogue;
pub mod standalone;
pub mod user_group_keys;

/// Every dialect's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .merge(contact_consent::routes())
        .merge(dialogue::routes())
        .merge(standalone::routes())
        .merge(user_group_keys::routes())
}

/// The native scope a dialect's OAuth2 scope name grants.
pub fn scope(name: &str) -> Option<Scope> {
    contact_consent::SCOPES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, scope)| *scope)
}
