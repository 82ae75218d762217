//! The routes of the product brief: `/create-profile`, `/enroll`,
//! `/start-auth` → `/verify-voice` (challenge sessions, single-use voice
//! tokens) and `/verify-token`.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use timbre_schemas::{
    Code, DecisionKind, EnrollmentRequested, ProfileCommandKind, Request, VerificationRequested,
};

use super::auth::Caller;
use super::jobs::{Early, decide, decide_within_request, request_id_of};
use super::router::Body;
use super::users::profile_command;
use super::{ApiError, ApiState, form, views};
use crate::domain::{ChallengeSession, Profile, ProfileStatus, Scope, now_ms, utc_rfc3339};
use crate::phrase::challenge_code;

/// The brief's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/create-profile", post(create_profile))
        .route("/enroll", post(enroll))
        .route("/start-auth", post(start_auth))
        .route("/verify-voice", post(verify_voice))
        .route("/verify-token", post(verify_token))
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
    caller.require(Scope::Enroll)?;
    let job = profile_command(&caller, &headers, body.user_id, ProfileCommandKind::Create)?;
    let d = decide(&state, &caller, job).await?;
    let created = d.has_reason(Code::ProfileCreated);
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "status": views::status_name(d.profile_status),
        "created": created,
    }))
    .into_response())
}

async fn enroll(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    caller.require(Scope::Enroll)?;
    let form = form::read(multipart).await?;
    let user_id = caller.acting_for(form.optional("user_id"), || form::missing_field("user_id"))?;
    if caller.user.is_some() {
        refuse_enrolled(&state, &caller.tenant, &user_id).await?;
    }
    let mut job = EnrollmentRequested::new(
        request_id_of(&caller, &headers)?,
        caller.tenant.clone(),
        user_id,
        now_ms(),
        form.audio.clone(),
    );
    job.channel = form.optional("channel").map(str::to_string);
    let d = decide(&state, &caller, Request::Enrollment(job)).await?;
    let status = if d.has_reason(Code::NotEnoughSpeech) {
        Some(Code::NotEnoughSpeech.as_str())
    } else {
        views::status_name(d.profile_status)
    };
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "decision": views::decision_name(d.decision),
        "status": status,
        "reason": d.main_code(),
        "speech_millis": d.speech_millis,
        "enrollment_progress": d.enrollment_progress,
        "learning_progress": d.learning_progress,
        "model": d.model_id.filter(|_| caller.user.is_none()),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct StartAuth {
    /// Required of keys; a client token's holder may leave it out.
    #[serde(default)]
    user_id: Option<String>,
}

async fn start_auth(
    State(state): State<ApiState>,
    caller: Caller,
    Body(body): Body<StartAuth>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Verify)?;
    let user_id = caller.acting_for(body.user_id.as_deref(), || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "missing field `user_id`",
        )
    })?;
    let profile = ready_to_verify(&state, &caller.tenant, &user_id).await?;
    let now = now_ms();
    // A challenge in a cooldown could only be answered `cooldown`: say so
    // before the user speaks.
    if profile.cooldown_until > now {
        let until = profile.cooldown_until;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Code::Cooldown.as_str(),
            "too many failed attempts; wait before trying again",
        )
        .with("retryAfterMs", until - now));
    }
    let (challenge, session_id) = {
        let mut rng = rand::rng();
        // Six digits (about 3 s of speech): enough to tell speakers apart.
        (
            challenge_code(&mut rng, 6),
            hex::encode(rng.random::<[u8; 16]>()),
        )
    };
    let session = ChallengeSession {
        tenant: caller.tenant.clone(),
        session_id,
        user_id,
        challenge,
        created_at: now,
        expires_at: now + state.inner.config.session_ttl_secs as i64 * 1000,
        dialogue: None,
        call: None,
    };
    state.inner.access.put_session(&session).await?;
    Ok(Json(json!({
        "session_id": session.session_id,
        "challenge": session.challenge,
        "expiresAt": utc_rfc3339(session.expires_at),
    }))
    .into_response())
}

/// A browser enrolls a user once: more samples for an enrolled profile
/// would give whoever holds the page unlimited tries at matching it (a
/// mismatching sample costs no failure) and a way to move the voiceprint.
/// The integrator's backend, with its key, can still add samples.
async fn refuse_enrolled(state: &ApiState, tenant: &str, user_id: &str) -> Result<(), ApiError> {
    let profile = state.inner.store.profile(tenant, user_id).await?;
    if profile.is_some_and(|p| p.status == ProfileStatus::Enrolled) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_enrolled",
            "the user is enrolled; a client token enrolls a user once",
        ));
    }
    Ok(())
}

/// Refuses a challenge to a user who cannot answer it: no profile (`404`),
/// a locked one (`423`), or one not enrolled (`409`); else the profile.
pub async fn ready_to_verify(
    state: &ApiState,
    tenant: &str,
    user_id: &str,
) -> Result<Profile, ApiError> {
    let profile = state
        .inner
        .store
        .profile(tenant, user_id)
        .await?
        .ok_or_else(|| ApiError::profile_not_found(user_id))?;
    if profile.status == ProfileStatus::Locked {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            Code::ProfileLocked.as_str(),
            "the profile is locked after repeated failed verifications",
        ));
    }
    if profile.status != ProfileStatus::Enrolled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_enrolled",
            format!("profile status is {}", profile.status.as_str()),
        ));
    }
    Ok(profile)
}

fn failure_text(code: Option<Code>) -> &'static str {
    match code {
        Some(Code::VoiceMismatch) => "the voice did not match the enrolled voice",
        Some(Code::VoiceUncertain) => "the voice match was inconclusive; try again",
        Some(Code::Cooldown) => "too many failed attempts; wait before trying again",
        Some(Code::NotEnoughSpeech) => "not enough speech in the recording",
        Some(Code::ReplayDetected | Code::LivenessFailed) => {
            "the audio did not pass the liveness check; speak live"
        }
        _ => "verification failed",
    }
}

async fn verify_voice(
    State(state): State<ApiState>,
    caller: Caller,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    caller.require(Scope::Verify)?;
    let form = form::read(multipart).await?;
    let user_id = caller.acting_for(form.optional("user_id"), || form::missing_field("user_id"))?;
    let session_id = form.required("session_id")?;
    // Taken before scoring: a session is good for one attempt, whatever its
    // outcome. A dialogue's prompt is answered in its dialogue only.
    let session = state
        .inner
        .access
        .take_session(&caller.tenant, session_id, now_ms())
        .await?
        .filter(|s| s.dialogue.is_none() && s.call.is_none())
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
            // Kept from a page, like the scores (see `signals`).
            "confidence": d.confidence.filter(|_| caller.user.is_none()),
            "signals": signals(&caller, &d),
        }))
        .into_response());
    }
    let code = d.main_code().unwrap_or("verification_failed");
    let mut body = json!({
        "success": false,
        "decision": views::decision_name(d.decision),
        "code": code,
        "reason": failure_text(Code::parse(code)),
        "request_id": d.request_id,
        "signals": signals(&caller, &d),
    });
    if let Some(ms) = d.retry_after_ms {
        body["retryAfterMs"] = json!(ms);
    }
    Ok(Json(body).into_response())
}

/// The signals of an answer: in full for a key's caller, tiers only for a
/// browser holding a client token.
fn signals(caller: &Caller, d: &timbre_schemas::Decision) -> Option<Value> {
    if caller.user.is_some() {
        views::signal_tiers(d)
    } else {
        views::signals(d)
    }
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
    caller.require(Scope::Verify)?;
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
