//! Key lifecycle over HTTP (scope `keys:admin`): create with scopes, list,
//! disable, enable, revoke — always within the caller's tenant. Secrets are
//! shown once, at creation; listings carry no secret and no hash.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::router::Body;
use super::{ApiError, ApiState};
use crate::domain::{ApiKey, Scope, now_ms, utc_rfc3339};

/// The key administration routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{key_id}", delete(revoke))
        .route("/v1/keys/{key_id}/disable", post(disable))
        .route("/v1/keys/{key_id}/enable", post(enable))
}

/// Longest lifetime a key can be created with over HTTP (one year); keys
/// without expiry come from the CLI.
const MAX_EXPIRES_IN_SECS: u64 = 366 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// Scope names; at least one.
    scopes: Vec<String>,
    /// Operator's label.
    #[serde(default)]
    name: Option<String>,
    /// Lifetime; absent: one year.
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// A key as shown: no secret, no hash.
pub fn key_view(k: &ApiKey, last_used_day: Option<String>) -> Value {
    json!({
        "key_id": k.key_id,
        "name": k.name,
        "scopes": k.scope_names(),
        "enabled": k.enabled,
        "created_at": utc_rfc3339(k.created_at),
        "expires_at": (k.expires_at != 0).then(|| utc_rfc3339(k.expires_at)),
        "last_used_day": last_used_day,
    })
}

async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    caller.require(Scope::KeysAdmin)?;
    let mut scopes = BTreeSet::new();
    for name in &body.scopes {
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::bad_request("invalid_scope", format!("unknown scope {name:?}"))
                .with("field", "scopes")
        })?;
        // No key hands out more than it holds: a key narrowed to
        // `keys:admin` (or a token narrowed to it) cannot mint its way back
        // to the scopes it was narrowed from.
        caller.require(scope)?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err(
            ApiError::bad_request("invalid_scope", "a key needs at least one scope")
                .with("field", "scopes"),
        );
    }
    let name = body.name.unwrap_or_else(|| "api".to_string());
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "name: at most 100 characters, no control characters",
        )
        .with("field", "name"));
    }
    let lifetime = body.expires_in_secs.unwrap_or(MAX_EXPIRES_IN_SECS);
    if lifetime == 0 || lifetime > MAX_EXPIRES_IN_SECS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("expires_in_secs: between 1 and {MAX_EXPIRES_IN_SECS}"),
        )
        .with("field", "expires_in_secs"));
    }
    let now = now_ms();
    let minted = state.inner.keys.mint(
        &caller.tenant,
        &name,
        now,
        now + lifetime as i64 * 1000,
        Some(scopes),
    );
    state.inner.access.put_api_key(&minted.record).await?;
    tracing::info!(key_id = %minted.record.key_id, by = %caller.key_id, "api key created");
    let mut view = key_view(&minted.record, None);
    view["api_key"] = json!(minted.plaintext);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::KeysAdmin)?;
    let access = &state.inner.access;
    let mut keys = Vec::new();
    for k in access.api_keys(&caller.tenant).await? {
        let last_used = access
            .usage(&caller.tenant, &k.key_id)
            .await?
            .into_iter()
            .filter(|u| u.metric == "requests" && u.count > 0)
            .map(|u| u.day)
            .max();
        keys.push(key_view(&k, last_used));
    }
    Ok(Json(json!({ "keys": keys })))
}

fn key_not_found(key_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "key_not_found",
        format!("no key {key_id:?} in this tenant"),
    )
}

async fn set_enabled(
    state: &ApiState,
    caller: &Caller,
    key_id: &str,
    enabled: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::KeysAdmin)?;
    if !state
        .inner
        .access
        .set_api_key_enabled(&caller.tenant, key_id, enabled)
        .await?
    {
        return Err(key_not_found(key_id));
    }
    tracing::info!(key_id, enabled, by = %caller.key_id, "api key changed");
    Ok(Json(json!({ "key_id": key_id, "enabled": enabled })))
}

async fn disable(
    State(state): State<ApiState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &caller, &key_id, false).await
}

async fn enable(
    State(state): State<ApiState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &caller, &key_id, true).await
}

async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::KeysAdmin)?;
    if !state
        .inner
        .access
        .delete_api_key(&caller.tenant, &key_id)
        .await?
    {
        return Err(key_not_found(&key_id));
    }
    tracing::info!(key_id = %key_id, by = %caller.key_id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
