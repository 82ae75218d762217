//! The standalone voice-biometrics dialect (seed 000), under `/vb/v1/`:
//! users enrolled with biokeys (supplementary identifiers such as a phone
//! number), call session tokens, on-demand verification within a call,
//! and user info, opt-in, opt-out and greylist routes.
//!
//! A personal access token is an API key (or OAuth2 access token) of the
//! tenant; a VB profile is the tenant. Every route maps onto the native
//! jobs: enrollment carries the biokeys, which the processor stores with
//! the profile (and erases with it); opt-in and opt-out are consent
//! changes; the greylist is the tenant's watchlist of voices.

mod biokeys;
mod calls;

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use timbre_schemas::{ConsentChanged, EnrollmentRequested, ProfileCommandKind, Request};

use crate::api::auth::Caller;
use crate::api::jobs::{Early, decide, request_id};
use crate::api::users::{CommandFuture, UserState, on, profile_command};
use crate::api::{ApiError, ApiState, form, views};
use crate::domain::{BIOMETRIC_PURPOSE, ProfileStatus, Scope, now_ms};

/// Digest domain of the hashed user ids (`bio_user_id`).
const BIO_USER_PURPOSE: &str = "bio-user-id";

/// The dialect's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/vb/v1/users/enroll", post(enroll))
        .route(
            "/vb/v1/users/{user_id}",
            get(user_info).delete(on(ProfileCommandKind::Delete, answer)),
        )
        .route("/vb/v1/users/{user_id}/biokeys", get(user_biokeys))
        .route("/vb/v1/users/{user_id}/opt-in", post(opt_in))
        .route("/vb/v1/users/{user_id}/opt-out", post(opt_out))
        .route(
            "/vb/v1/users/{user_id}/greylist",
            put(on(ProfileCommandKind::GreylistAdd, answer))
                .delete(on(ProfileCommandKind::GreylistRemove, answer)),
        )
        .route("/vb/v1/tokens", post(calls::create_token))
        .route("/vb/v1/verify", post(calls::verify))
}

/// The keyed hash of a user id: stable for the tenant, not reversible
/// without the deployment's pepper, different in every tenant.
fn bio_user_id(state: &ApiState, tenant: &str, user_id: &str) -> String {
    state
        .keys()
        .keyed_digest(BIO_USER_PURPOSE, &[tenant, user_id])
}

/// The vendor's status names: a locked profile still holds its voiceprint,
/// so it shows as enrolled.
fn status_name(status: Option<ProfileStatus>) -> &'static str {
    match status {
        None | Some(ProfileStatus::NotEnrolled) => "NOT_ENROLLED",
        Some(ProfileStatus::Enrolled | ProfileStatus::Locked) => "ENROLLED",
        Some(ProfileStatus::ReEnroll) => "RE_ENROLL",
        Some(ProfileStatus::OptedOut) => "OPTED_OUT",
    }
}

/// `UserInfoResponse`: times in epoch milliseconds, 0 when never.
fn user_info_body(user_id: &str, user: &UserState) -> Value {
    json!({
        "user_id": user_id,
        "status": status_name(user.profile.as_ref().map(|p| p.status)),
        "last_update": user.profile.as_ref().map_or(0, |p| p.updated_at),
        "opt_out_ts": user.opted_out_at().unwrap_or(0),
        "opt_in_ts": user.opted_in_at().unwrap_or(0),
        "is_greylisted": user.listed,
    })
}

async fn user_info(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ProfilesRead)?;
    let user = UserState::load(&state, &caller.tenant, &user_id).await?;
    Ok(Json(user_info_body(&user_id, &user)))
}

async fn user_biokeys(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ProfilesRead)?;
    let set = state.inner.store.biokeys(&caller.tenant, &user_id).await?;
    if set.is_empty() {
        return Err(ApiError::profile_not_found(&user_id));
    }
    Ok(Json(
        json!({"user_id": user_id, "biokeys": biokeys::view(&set)}),
    ))
}

/// Enrolls one sample of a user named by its biokeys (multipart `biokeys`
/// JSON array and `audio` WAV, optional `channel`). The biokeys replace the
/// user's stored set; one already identifying another user is refused.
async fn enroll(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    caller.require(Scope::Enroll)?;
    let form = form::read(multipart).await?;
    let tenant = caller.tenant.as_str();
    let (user_id, set) = biokeys::enrollment_set(form.required("biokeys")?, state.keys(), tenant)?;
    for k in &set {
        let owner = state
            .inner
            .store
            .find_by_biokey(tenant, &k.key, &k.digest)
            .await?;
        if owner.is_some_and(|(owner, _)| owner != user_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "biokey_taken",
                format!("the biokey {:?} already identifies another user", k.key),
            )
            .into());
        }
    }
    let mut job = EnrollmentRequested::new(
        request_id(&headers)?,
        tenant,
        user_id.clone(),
        now_ms(),
        form.audio.clone(),
    );
    job.channel = form.optional("channel").map(str::to_string);
    job.biokeys = set;
    let d = decide(&state, &caller, Request::Enrollment(job)).await?;
    let user = UserState::load(&state, tenant, &user_id).await?;
    let mut body = user_info_body(&user_id, &user);
    body["bio_user_id"] = json!(bio_user_id(&state, tenant, &user_id));
    body["request_id"] = json!(d.request_id);
    body["decision"] = json!(views::decision_name(d.decision));
    body["reasons"] = json!(d.reasons);
    body["enrollment_progress"] = json!(d.enrollment_progress);
    body["speech_millis"] = json!(d.speech_millis);
    Ok(Json(body).into_response())
}

/// Opt-in and opt-out are consent changes: opting out erases the user's
/// biometrics (the biokeys stay, so the user can opt in again).
async fn consent(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    user_id: String,
    granted: bool,
) -> Result<Response, Early> {
    caller.require(Scope::ConsentWrite)?;
    let retain_audio = granted
        && state
            .inner
            .policies
            .for_tenant(&caller.tenant)
            .retain_audio_by_default;
    let job = ConsentChanged::new(
        request_id(headers)?,
        caller.tenant.clone(),
        user_id.clone(),
        now_ms(),
        granted,
        BIOMETRIC_PURPOSE,
        retain_audio,
    );
    decide(state, caller, Request::Consent(job)).await?;
    let user = UserState::load(state, &caller.tenant, &user_id).await?;
    Ok(Json(user_info_body(&user_id, &user)).into_response())
}

async fn opt_in(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Response, Early> {
    consent(&state, &caller, &headers, user_id, true).await
}

async fn opt_out(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Response, Early> {
    consent(&state, &caller, &headers, user_id, false).await
}

/// A profile command on the path's user, answered with the user's info
/// (`deleted: true` once the user is gone).
async fn command(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    user_id: String,
    kind: ProfileCommandKind,
) -> Result<Response, Early> {
    caller.require(Scope::ProfilesAdmin)?;
    let job = profile_command(caller, headers, user_id.clone(), kind)?;
    decide(state, caller, job).await?;
    if kind == ProfileCommandKind::Delete {
        return Ok(Json(json!({"user_id": user_id, "deleted": true})).into_response());
    }
    let user = UserState::load(state, &caller.tenant, &user_id).await?;
    Ok(Json(user_info_body(&user_id, &user)).into_response())
}

/// [`command`] as a route's answer.
fn answer(
    state: ApiState,
    caller: Caller,
    headers: HeaderMap,
    user_id: String,
    kind: ProfileCommandKind,
) -> CommandFuture {
    Box::pin(async move { command(&state, &caller, &headers, user_id, kind).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_statuses_cover_every_profile_status() {
        assert_eq!(status_name(None), "NOT_ENROLLED");
        assert_eq!(status_name(Some(ProfileStatus::Locked)), "ENROLLED");
        assert_eq!(status_name(Some(ProfileStatus::ReEnroll)), "RE_ENROLL");
        assert_eq!(status_name(Some(ProfileStatus::OptedOut)), "OPTED_OUT");
    }

    #[test]
    fn user_info_times_are_epoch_millis_and_zero_when_never() {
        let user = UserState {
            profile: None,
            consent: Some(crate::domain::Consent {
                tenant: "t".into(),
                user_id: "u".into(),
                purpose: BIOMETRIC_PURPOSE.into(),
                granted: false,
                retain_audio: false,
                updated_at: 1_699_021_370_022,
            }),
            listed: true,
        };
        let body = user_info_body("u", &user);
        assert_eq!(body["opt_out_ts"], 1_699_021_370_022_i64);
        assert_eq!(body["opt_in_ts"], 0);
        assert_eq!(body["last_update"], 0);
        assert_eq!(body["is_greylisted"], true);
        assert_eq!(body["status"], "NOT_ENROLLED");
    }
}
