//! The native API under `/v1`: consent, verification, decisions, usage,
//! learning progress, demo keys.

use axum::extract::{Multipart, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use timbre_schemas::{ConsentChanged, Request, VerificationRequested};

use super::auth::Caller;
use super::jobs::{Early, decide, request_id};
use super::router::Body;
use super::{ApiError, ApiState, form, views};
use crate::domain::{BIOMETRIC_PURPOSE, Scope, now_ms, policy, utc_rfc3339};

/// The `/v1` routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/consent", post(consent))
        .route("/v1/consent/{user_id}", get(consent_of))
        .route("/v1/voice/verify", post(verify))
        .route("/v1/usage", get(usage))
        .route("/v1/user-learning/{user_id}", get(user_learning))
        .route("/v1/keys/demo", post(demo_key))
        .route("/v1/decisions/{request_id}", get(decision))
}

#[derive(Deserialize)]
struct ConsentBody {
    user_id: String,
    granted: bool,
    /// Absent: the tenant's `retain_audio_by_default` policy decides.
    retain_audio: Option<bool>,
}

/// A user's consent for voice biometrics: `NOT_ASKED` when never recorded.
async fn consent_of(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ConsentRead)?;
    let consent = state
        .inner
        .store
        .consent(&caller.tenant, &user_id, BIOMETRIC_PURPOSE)
        .await?;
    Ok(Json(match consent {
        None => json!({"user_id": user_id, "status": "NOT_ASKED"}),
        Some(c) => json!({
            "user_id": user_id,
            "status": if c.granted { "GRANTED" } else { "WITHDRAWN" },
            "retain_audio": c.retain_audio,
            "updated_at": utc_rfc3339(c.updated_at),
        }),
    }))
}

async fn consent(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<ConsentBody>,
) -> Result<Response, Early> {
    caller.require(Scope::ConsentWrite)?;
    let retain_audio = body.retain_audio.unwrap_or(
        state
            .inner
            .policies
            .for_tenant(&caller.tenant)
            .retain_audio_by_default,
    );
    let job = ConsentChanged::new(
        request_id(&headers)?,
        caller.tenant.clone(),
        body.user_id,
        now_ms(),
        body.granted,
        BIOMETRIC_PURPOSE,
        retain_audio,
    );
    let d = decide(&state, &caller, Request::Consent(job)).await?;
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "granted": body.granted,
        "retain_audio": retain_audio,
        "status": views::status_name(d.profile_status),
    }))
    .into_response())
}

/// Attempts left before a cooldown, from the stored failure count.
async fn retries_left(state: &ApiState, tenant: &str, user_id: &str) -> Result<u32, ApiError> {
    let free = state.inner.policies.for_tenant(tenant).free_failures;
    let failures = state
        .inner
        .store
        .profile(tenant, user_id)
        .await?
        .map_or(0, |p| p.failures);
    Ok(free.saturating_sub(failures))
}

async fn verify(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    caller.require(Scope::Verify)?;
    let form = form::read(multipart).await?;
    let mut job = VerificationRequested::new(
        request_id(&headers)?,
        caller.tenant.clone(),
        form.required("user_id")?,
        now_ms(),
        form.audio.clone(),
    );
    job.expected_phrase = form.optional("phrase").map(str::to_string);
    job.channel = form.optional("channel").map(str::to_string);
    let d = decide(&state, &caller, Request::Verification(job)).await?;
    let expose = state.inner.policies.for_tenant(&caller.tenant).expose_score;
    let mut body = views::decision(&d, expose);
    body["retries"] = json!(retries_left(&state, &caller.tenant, &d.user_id).await?);
    Ok(Json(body).into_response())
}

async fn usage(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::UsageRead)?;
    let counts = state
        .inner
        .access
        .usage(&caller.tenant, &caller.key_id)
        .await?;
    let mut totals =
        json!({"requests": 0, "throttled": 0, "pending": 0, "decisions": {}, "reasons": {}});
    let mut days: std::collections::BTreeMap<String, Value> = Default::default();
    for c in &counts {
        let day = days.entry(c.day.clone()).or_insert_with(|| {
            json!({"day": c.day, "requests": 0, "throttled": 0, "pending": 0, "decisions": {}, "reasons": {}})
        });
        for target in [&mut totals, day] {
            let slot = match c.metric.split_once(':') {
                Some(("decision", d)) => &mut target["decisions"][d],
                Some(("reason", r)) => &mut target["reasons"][r],
                _ => &mut target[c.metric.as_str()],
            };
            *slot = json!(slot.as_i64().unwrap_or(0) + c.count);
        }
    }
    Ok(Json(json!({
        "key_id": caller.key_id,
        "tenant": caller.tenant,
        "totals": totals,
        "by_day": days.into_values().collect::<Vec<_>>(),
    })))
}

async fn user_learning(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ProfilesRead)?;
    let p = state
        .inner
        .store
        .profile(&caller.tenant, &user_id)
        .await?
        .ok_or_else(|| ApiError::profile_not_found(&user_id))?;
    let policy = state.inner.policies.for_tenant(&caller.tenant);
    Ok(Json(json!({
        "user_id": p.user_id,
        "status": p.status.as_str(),
        "learning_progress": p.learning_progress,
        "enrollment_progress": policy::enrollment_progress(&p, policy),
        "samples": p.samples,
        "net_speech_millis": p.net_speech_millis,
        "sessions": p.sessions,
        "created_at": utc_rfc3339(p.created_at),
        "updated_at": utc_rfc3339(p.updated_at),
    })))
}

async fn demo_key(State(state): State<ApiState>, parts: Parts) -> Result<Response, ApiError> {
    let config = &state.inner.config;
    // Unauthenticated: the address's budget first, as for key lookups.
    super::auth::admit_address(&state, &parts)?;
    if !config.demo_keys {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "demo_keys_disabled",
            "demo keys are disabled on this server",
        ));
    }
    let now = now_ms();
    if let Err(ms) = state.inner.limiter.admit("demo-key-minting", now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many demo keys minted",
        )
        .with("retryAfterMs", ms)
        .with("scope", "minute"));
    }
    let expires = now + config.demo_key_ttl_secs as i64 * 1000;
    // Demo keys share one tenant: they may not manage keys or erase users.
    let scopes = Scope::ALL
        .into_iter()
        .filter(|s| !matches!(s, Scope::KeysAdmin | Scope::ProfilesAdmin))
        .collect();
    let minted = state
        .inner
        .keys
        .mint(&config.demo_tenant, "demo", now, expires, Some(scopes));
    state.inner.access.put_api_key(&minted.record).await?;
    tracing::info!(key_id = %minted.record.key_id, "demo key minted");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "api_key": minted.plaintext,
            "tenant": config.demo_tenant,
            "expiresAt": utc_rfc3339(expires),
        })),
    )
        .into_response())
}

async fn decision(
    State(state): State<ApiState>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // A client token reads its own user's decisions of its own kind of job
    // (an answer that came back 202 is polled here), without scores; keys
    // need the read scope.
    if caller.user.is_none() {
        caller.require(Scope::ProfilesRead)?;
    }
    let readable = |d: &timbre_schemas::Decision| match &caller.user {
        None => true,
        Some(user) => {
            let scope = match d.job {
                timbre_schemas::JobKind::Verification => Scope::Verify,
                timbre_schemas::JobKind::Enrollment => Scope::Enroll,
                _ => return false,
            };
            *user == d.user_id && caller.require(scope).is_ok()
        }
    };
    let d = state
        .inner
        .client
        .stored(&caller.tenant, &request_id)
        .await?
        .filter(readable)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "decision_not_found",
                "no decision for this request id (yet)",
            )
        })?;
    if caller.user.is_some() {
        return Ok(Json(views::client_decision(&d)));
    }
    let expose = state.inner.policies.for_tenant(&caller.tenant).expose_score;
    Ok(Json(views::decision(&d, expose)))
}
