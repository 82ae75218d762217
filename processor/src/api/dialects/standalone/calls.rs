//! Call sessions and on-demand verification: a contact centre opens a
//! session per call (`POST /vb/v1/tokens`), then verifies the caller
//! within it as often as it needs (`POST /vb/v1/verify`). Each answer says
//! whether the speaker changed since the call's previous verification.
//!
//! The session is stored like a challenge session, under the SHA-256 of
//! its token (a token is never kept in plain text), and is taken for the
//! length of one verification: two verifications of one call never run at
//! once, so the previous speaker is always the one before.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use timbre_schemas::{BioResult, Code, DecisionKind, Request, VerificationRequested};

use super::{bio_user_id, biokeys};
use crate::api::auth::{Caller, record_usage};
use crate::api::form::{self, AudioForm};
use crate::api::jobs::{self, Early, request_id};
use crate::api::router::Body;
use crate::api::{ApiError, ApiState};
use crate::domain::{CallState, ChallengeSession, Scope, now_ms};
use crate::ports::AccessStore;

const TOKEN_PREFIX: &str = "vbc_";

/// `CreateTokenRequest`: every field but `customProperties` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CreateTokenRequest {
    agent_id: String,
    agent_skill: String,
    ccaas_provider: String,
    master_id: String,
    tenant_id: String,
    vb_profile: String,
    #[serde(default)]
    custom_properties: Option<String>,
}

/// What a call session token is stored under.
fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn check_field(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{name} must be 1-256 bytes of text"),
        )
        .with("field", name));
    }
    Ok(())
}

/// Opens a call session. The personal access token must belong to the
/// group of the VB profile: here, the profile is the key's tenant.
pub(super) async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    Body(request): Body<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Verify)?;
    // A missing or unknown field is a bad request (400) naming the field.
    let request: CreateTokenRequest = serde_json::from_value(request)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    for (name, value) in [
        ("agentId", &request.agent_id),
        ("agentSkill", &request.agent_skill),
        ("ccaasProvider", &request.ccaas_provider),
        ("masterId", &request.master_id),
        ("tenantId", &request.tenant_id),
        ("vbProfile", &request.vb_profile),
    ] {
        check_field(name, value)?;
    }
    if request
        .custom_properties
        .as_deref()
        .is_some_and(|p| p.len() > 4096)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "customProperties must be at most 4096 bytes",
        )
        .with("field", "customProperties"));
    }
    if request.vb_profile != caller.tenant {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "profile_not_in_group",
            "the access token does not belong to the group of this VB profile",
        ));
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let now = now_ms();
    let ttl = state.inner.config.call_session_ttl_secs;
    let session = ChallengeSession {
        tenant: caller.tenant.clone(),
        session_id: token_digest(&token),
        user_id: String::new(),
        challenge: String::new(),
        created_at: now,
        expires_at: now + ttl as i64 * 1000,
        dialogue: None,
        call: Some(CallState {
            agent_id: request.agent_id,
            agent_skill: request.agent_skill,
            ccaas_provider: request.ccaas_provider,
            master_id: request.master_id.clone(),
            platform_tenant: request.tenant_id,
            custom_properties: request.custom_properties,
            last_speaker: None,
        }),
    };
    state.inner.access.put_session(&session).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "masterId": request.master_id,
            "expires_at": session.expires_at,
            "expires_in": ttl,
        })),
    )
        .into_response())
}

fn is_true(result: BioResult) -> bool {
    matches!(result, BioResult::TrueHigh | BioResult::TrueLow)
}

/// The vendor's result of a decision whose voice scored `voice`. A
/// rejection never reads `TRUE_*`, even when the voice matched (a replay,
/// synthetic speech, a greylisted voice, a wrong phrase): an integration
/// that reads only `bio_result` must not let it through. Anything neither
/// accepted nor rejected (too little speech, a cooldown) is `ERROR`.
fn vendor_result(decision: DecisionKind, voice: BioResult) -> BioResult {
    match decision {
        DecisionKind::Accept if is_true(voice) => voice,
        DecisionKind::Accept => BioResult::TrueLow,
        DecisionKind::Reject if is_true(voice) => BioResult::FalseLow,
        DecisionKind::Reject if voice == BioResult::Error => BioResult::FalseLow,
        DecisionKind::Reject => voice,
        _ => BioResult::Error,
    }
}

/// Whether the speaker differs from the call's previous one: another user,
/// or the same user's voice now matching where it did not (or the other
/// way round). Nothing to compare before the call's first scored answer.
fn speaker_changed(before: Option<&(String, bool)>, now: Option<&(String, bool)>) -> bool {
    matches!((before, now), (Some(b), Some(n)) if b != n)
}

/// Verifies the caller of a call (multipart `call_token`, `biokeys` JSON
/// array of `{key, value}` naming the claimed user, `audio`, optional
/// `channel`) and answers an `OnDemandVerificationResponse`.
pub(super) async fn verify(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Early> {
    caller.require(Scope::Verify)?;
    let form = form::read(multipart).await?;
    let presented = biokeys::presented(form.required("biokeys")?, state.keys(), &caller.tenant)?;
    let token = form.required("call_token")?;
    let session = state
        .inner
        .access
        .take_session(&caller.tenant, &token_digest(token), now_ms())
        .await?
        .filter(|s| s.call.is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "call_token_invalid",
                "unknown or expired call token, or another verification of this call is running",
            )
        })?;
    let call = session.call.clone().expect("filtered to call sessions");
    let mut held = HeldCall {
        access: state.inner.access.clone(),
        session: Some(session),
    };
    let answer = on_demand(&state, &caller, &headers, &form, &presented, &call).await;
    let speaker = match &answer {
        Ok((_, Some(speaker))) => Some(speaker.clone()),
        _ => None,
    };
    held.put_back(speaker).await;
    let (body, _) = answer?;
    Ok(axum::Json(body).into_response())
}

/// A call session taken for one verification. It goes back when the
/// verification ends, with the speaker it scored; if the request is cut
/// off first (a timeout, a client gone), it goes back unchanged from
/// `Drop`, so the call is never stranded.
struct HeldCall {
    access: std::sync::Arc<dyn AccessStore>,
    session: Option<ChallengeSession>,
}

impl HeldCall {
    async fn put_back(&mut self, speaker: Option<(String, bool)>) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        if let (Some(call), Some(speaker)) = (session.call.as_mut(), speaker) {
            call.last_speaker = Some(speaker);
        }
        put_back(self.access.as_ref(), &session).await;
    }
}

impl Drop for HeldCall {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let access = self.access.clone();
            tokio::spawn(async move { put_back(access.as_ref(), &session).await });
        }
    }
}

/// Stores the session again unless it has expired. A failure loses the
/// call's state, not the verification's answer: it is logged.
async fn put_back(access: &dyn AccessStore, session: &ChallengeSession) {
    if session.expires_at <= now_ms() {
        return;
    }
    if let Err(e) = access.put_session(session).await {
        tracing::warn!(error = %e, "call session not put back");
    }
}

/// The response body, and the speaker it scored (none for an error).
async fn on_demand(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    form: &AudioForm,
    presented: &[(String, String)],
    call: &CallState,
) -> Result<(Value, Option<(String, bool)>), Early> {
    let tenant = caller.tenant.as_str();
    let mut found = Vec::new();
    for (key, digest) in presented {
        if let Some((user, set)) = state
            .inner
            .store
            .find_by_biokey(tenant, key, digest)
            .await?
        {
            let priority = set.iter().find(|k| k.key == *key).map_or(0, |k| k.priority);
            found.push((user, priority));
        }
    }
    let Some(user_id) = biokeys::best_match(found) else {
        // Counted like a decision, so lookups that find no one show in usage.
        record_usage(state, caller, vec![("reason:user_not_found".into(), 1)]).await;
        let body = json!({
            "bio_result": BioResult::Error,
            "bio_score": null,
            "bio_user_id": null,
            "bio_plain_user_id": null,
            "error_type": "user_not_found",
            "user_changed": false,
            "speech_millis": 0,
            "greylist_hit": false,
        });
        return Ok((body, None));
    };
    let mut job = VerificationRequested::new(
        request_id(headers)?,
        tenant,
        user_id.clone(),
        now_ms(),
        form.audio.clone(),
    );
    job.channel = form.optional("channel").map(str::to_string);
    // The call session is held while the job runs: wait as long as the
    // request may, so a 202 is the exception.
    let wait = state.session_wait_timeout();
    let d = match jobs::submit(state, caller, Request::Verification(job), wait).await? {
        jobs::Outcome::Decided(d) => d,
        jobs::Outcome::Pending(id) => return Err(Early::Pending(id)),
    };
    let voice = d.bio_result.unwrap_or(BioResult::Error);
    let result = vendor_result(d.decision, voice);
    let error_type = match result {
        BioResult::Error => d.error_code.clone().or_else(|| d.reasons.first().cloned()),
        _ => None,
    };
    // The speaker is the voice's verdict, not the decision's: a greylisted
    // or replayed voice of the user is still the user's voice.
    let speaker = (result != BioResult::Error).then(|| (user_id.clone(), is_true(voice)));
    let expose = state.inner.policies.for_tenant(tenant).expose_score;
    let mut body = json!({
        "bio_result": result,
        "bio_score": d.score.filter(|_| expose),
        "bio_user_id": bio_user_id(state, tenant, &user_id),
        "bio_plain_user_id": user_id,
        "error_type": error_type,
        "user_changed": speaker_changed(call.last_speaker.as_ref(), speaker.as_ref()),
        "speech_millis": d.speech_millis,
        "greylist_hit": d.reasons.iter().any(|r| r == Code::WatchlistMatch.as_str()),
        "reasons": d.reasons,
        "request_id": d.request_id,
    });
    if let Some(ms) = d.retry_after_ms {
        body["retry_after_ms"] = json!(ms);
    }
    Ok((body, speaker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_speaker_changes_with_the_user_or_the_match() {
        let alice = ("alice".to_string(), true);
        let not_alice = ("alice".to_string(), false);
        let bob = ("bob".to_string(), true);
        assert!(!speaker_changed(None, Some(&alice)));
        assert!(!speaker_changed(Some(&alice), None));
        assert!(!speaker_changed(Some(&alice), Some(&alice)));
        assert!(speaker_changed(Some(&alice), Some(&not_alice)));
        assert!(speaker_changed(Some(&not_alice), Some(&alice)));
        assert!(speaker_changed(Some(&alice), Some(&bob)));
    }

    #[test]
    fn a_rejection_never_reads_true() {
        use BioResult as B;
        use DecisionKind as D;
        for (decision, voice, expected) in [
            (D::Accept, B::TrueHigh, B::TrueHigh),
            (D::Accept, B::TrueLow, B::TrueLow),
            (D::Reject, B::FalseHigh, B::FalseHigh),
            (D::Reject, B::FalseLow, B::FalseLow),
            (D::Reject, B::TrueHigh, B::FalseLow),
            (D::Reject, B::Error, B::FalseLow),
            (D::Retry, B::TrueHigh, B::Error),
            (D::Cooldown, B::FalseLow, B::Error),
            (D::Error, B::TrueHigh, B::Error),
        ] {
            assert_eq!(
                vendor_result(decision, voice),
                expected,
                "{decision:?} {voice:?}"
            );
        }
    }

    #[test]
    fn tokens_are_stored_as_digests() {
        let digest = token_digest("vbc_abc");
        assert_eq!(digest.len(), 64);
        assert!(!digest.contains("abc"));
        assert_ne!(digest, token_digest("vbc_abd"));
    }
}
