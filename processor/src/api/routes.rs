//! The routes of the native API. Handlers translate; the pipeline decides.

use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use rand::Rng;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use timbre_schemas::{
    ConsentChanged, Contract, DecisionKind, EnrollmentRequested, ProfileCommand,
    ProfileCommandKind, Request, VerificationRequested,
};

use super::auth::Caller;
use super::jobs::{Early, decide, decide_within_request, request_id};
use super::{ApiError, ApiState, OPENAPI, error, form, views};
use crate::domain::{ChallengeSession, ProfileStatus, now_ms, policy, utc_rfc3339};
use crate::pipeline::BIOMETRIC_PURPOSE;

/// The router with its middleware: body limit, timeout, metrics, JSON errors.
pub fn router(state: ApiState) -> Router {
    let limit = state.inner.config.max_upload_bytes;
    Router::new()
        .route("/create-profile", post(create_profile))
        .route("/v1/consent", post(consent))
        .route("/enroll", post(enroll))
        .route("/v1/voice/verify", post(verify))
        .route("/start-auth", post(start_auth))
        .route("/verify-voice", post(verify_voice))
        .route("/verify-token", post(verify_token))
        .route("/v1/usage", get(usage))
        .route("/v1/user-learning/{user_id}", get(user_learning))
        .route("/v1/keys/demo", post(demo_key))
        .route("/v1/decisions/{request_id}", get(decision))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
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
    // Refused from the headers, so the client can stop sending; bodies
    // without a length are cut off by the body limit as they stream.
    let response = if announced.is_some_and(|n| n > state.inner.config.max_upload_bytes) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        )
        .into_response()
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
struct Body<T>(T);

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

#[derive(Deserialize)]
struct UserRef {
    user_id: String,
}

async fn create_profile(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<UserRef>,
) -> Result<Response, Early> {
    let job = ProfileCommand {
        request_id: request_id(&headers)?,
        tenant: caller.tenant.clone(),
        user_id: body.user_id,
        occurred_at: now_ms(),
        schema_version: ProfileCommand::CURRENT_VERSION,
        trace: None,
        command: ProfileCommandKind::Create,
        reason: None,
    };
    let d = decide(&state, &caller, Request::Profile(job)).await?;
    let created = d.reasons.iter().any(|r| r == "profile_created");
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "status": views::status_name(d.profile_status),
        "created": created,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ConsentBody {
    user_id: String,
    granted: bool,
    #[serde(default = "yes")]
    retain_audio: bool,
}

fn yes() -> bool {
    true
}

async fn consent(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<ConsentBody>,
) -> Result<Response, Early> {
    let job = ConsentChanged::new(
        request_id(&headers)?,
        caller.tenant.clone(),
        body.user_id,
        now_ms(),
        body.granted,
        BIOMETRIC_PURPOSE,
        body.retain_audio,
    );
    let d = decide(&state, &caller, Request::Consent(job)).await?;
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "granted": body.granted,
        "retain_audio": body.retain_audio,
        "status": views::status_name(d.profile_status),
    }))
    .into_response())
}

async fn enroll(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    let form = form::read(multipart).await?;
    let mut job = EnrollmentRequested::new(
        request_id(&headers)?,
        caller.tenant.clone(),
        form.required("user_id")?,
        now_ms(),
        form.audio.clone(),
    );
    job.channel = form.optional("channel").map(str::to_string);
    let d = decide(&state, &caller, Request::Enrollment(job)).await?;
    let status = if d.reasons.iter().any(|r| r == "NOT_ENOUGH_SPEECH") {
        Some("NOT_ENOUGH_SPEECH")
    } else {
        views::status_name(d.profile_status)
    };
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "decision": views::decision_name(d.decision),
        "status": status,
        "reason": views::reason(&d),
        "speech_millis": d.speech_millis,
        "enrollment_progress": d.enrollment_progress,
        "learning_progress": d.learning_progress,
        "model": d.model_id,
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
    let mut body = views::decision(&d);
    body["retries"] = json!(retries_left(&state, &caller.tenant, &d.user_id).await?);
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct StartAuth {
    user_id: String,
}

async fn start_auth(
    State(state): State<ApiState>,
    caller: Caller,
    Body(body): Body<StartAuth>,
) -> Result<Response, ApiError> {
    let profile = state
        .inner
        .store
        .profile(&caller.tenant, &body.user_id)
        .await?
        .ok_or_else(|| ApiError::profile_not_found(&body.user_id))?;
    if profile.status != ProfileStatus::Enrolled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_enrolled",
            format!("profile status is {}", profile.status.as_str()),
        ));
    }
    let now = now_ms();
    let (challenge, session_id) = {
        let mut rng = rand::rng();
        // Six digits (about 3 s of speech): enough to tell speakers apart.
        let digits: Vec<String> = (0..6)
            .map(|_| rng.random_range(0..10).to_string())
            .collect();
        (digits.join(" "), hex::encode(rng.random::<[u8; 16]>()))
    };
    let session = ChallengeSession {
        tenant: caller.tenant.clone(),
        session_id,
        user_id: body.user_id,
        challenge,
        created_at: now,
        expires_at: now + state.inner.config.session_ttl_secs as i64 * 1000,
    };
    state.inner.access.put_session(&session).await?;
    Ok(Json(json!({
        "session_id": session.session_id,
        "challenge": session.challenge,
        "expiresAt": utc_rfc3339(session.expires_at),
    }))
    .into_response())
}

fn failure_text(code: &str) -> &'static str {
    match code {
        "voice_mismatch" => "the voice did not match the enrolled voice",
        "voice_uncertain" => "the voice match was inconclusive; try again",
        "cooldown" => "too many failed attempts; wait before trying again",
        "NOT_ENOUGH_SPEECH" => "not enough speech in the recording",
        _ => "verification failed",
    }
}

async fn verify_voice(
    State(state): State<ApiState>,
    caller: Caller,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    let form = form::read(multipart).await?;
    let user_id = form.required("user_id")?;
    let session_id = form.required("session_id")?;
    // Taken before scoring: a session is good for one attempt, whatever its outcome.
    let session = state
        .inner
        .access
        .take_session(&caller.tenant, session_id, now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "session_invalid",
                "unknown, expired or already used session",
            )
        })?;
    if session.user_id != user_id {
        return Err(ApiError::bad_request(
            "session_user_mismatch",
            "the session was issued to another user",
        )
        .into());
    }
    // The job id comes from the session, never from the caller: one session,
    // one job, and only that job's accept can mint this session's token.
    let mut job = VerificationRequested::new(
        format!("session-{}", session.session_id),
        caller.tenant.clone(),
        user_id,
        now_ms(),
        form.audio.clone(),
    );
    job.session_id = Some(session.session_id.clone());
    job.expected_phrase = Some(session.challenge.clone());
    let d = decide_within_request(&state, &caller, Request::Verification(job)).await?;
    let for_this_session =
        d.user_id == session.user_id && d.session_id.as_deref() == Some(&session.session_id);
    if d.decision == DecisionKind::Accept && for_this_session {
        let (token, _) =
            state
                .inner
                .tokens
                .mint(&caller.tenant, &d.user_id, &d.request_id, now_ms() / 1000);
        return Ok(Json(json!({
            "success": true,
            "decision": "accept",
            "voiceToken": token,
            "user_id": d.user_id,
            "request_id": d.request_id,
            "confidence": d.confidence,
        }))
        .into_response());
    }
    let code = views::reason(&d).unwrap_or_else(|| "verification_failed".into());
    let mut body = json!({
        "success": false,
        "decision": views::decision_name(d.decision),
        "code": code,
        "reason": failure_text(&code),
        "request_id": d.request_id,
    });
    if let Some(ms) = d.retry_after_ms {
        body["retryAfterMs"] = json!(ms);
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

async fn verify_token(
    State(state): State<ApiState>,
    caller: Caller,
    Body(body): Body<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let invalid = |reason: &str| Json(json!({"valid": false, "reason": reason}));
    let Some(claims) = state.inner.tokens.check(&body.token) else {
        return Ok(invalid("invalid_or_expired"));
    };
    // Another tenant's token is not even spent: it does not exist for this caller.
    if claims.tenant != caller.tenant {
        return Ok(invalid("invalid_or_expired"));
    }
    if !state
        .inner
        .access
        // The token is valid through second `exp`: keep the mark past it.
        .spend_token(&claims.jti, (claims.exp + 1) * 1000)
        .await?
    {
        return Ok(invalid("already_used"));
    }
    Ok(Json(json!({
        "valid": true,
        "user_id": claims.sub,
        "iat": claims.iat,
    })))
}

async fn usage(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
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

async fn demo_key(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let config = &state.inner.config;
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
    let minted = state
        .inner
        .keys
        .mint(&config.demo_tenant, "demo", now, expires);
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
    let d = state
        .inner
        .waiter
        .stored(&caller.tenant, &request_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "decision_not_found",
                "no decision for this request id (yet)",
            )
        })?;
    Ok(Json(views::decision(&d)))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state.inner.bus.ping().await?;
    state.inner.store.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
