//! The prompted digit dialogue (seed 002): enrollment and verification as a
//! server-side dialogue. The first request starts it and prompts a code;
//! each answer is a WAV of the code, scored as an enrollment sample or a
//! verification attempt by the pipeline (the phrase signal decides
//! `Misspeak`), until the dialogue succeeds or fails. The cookie
//! `biometrid.sid` names the dialogue's current prompt: a challenge session
//! that carries the dialogue's state, taken by the answer (so two answers
//! racing on one prompt never both count) and followed by a new session,
//! under a new id, with the next prompt; every reply sets the cookie anew.
//!
//! Clients sign in with `x-biometrid-key` (a Timbre key's id) and
//! `x-biometrid-secret` (its secret). English prompts are checked by the
//! phrase signal; Portuguese prompts are not (the recogniser is English
//! only), and every answer then says `"phraseChecked": false`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{FromRequestParts, Multipart, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use timbre_schemas::{
    Code, Decision, DecisionKind, EnrollmentRequested, Request, VerificationRequested,
};

use crate::api::auth::{self, Caller};
use crate::api::brief::ready_to_verify;
use crate::api::jobs::{Early, decide_within_request};
use crate::api::{ApiError, ApiState, form};
use crate::config::DialogueConfig;
use crate::domain::{ChallengeSession, DialogueKind, DialogueState, Scope, now_ms};
use crate::phrase::challenge_code;

/// The dialogue's cookie.
const COOKIE: &str = "biometrid.sid";

/// MIME types an answer may declare.
const WAV_TYPES: &[&str] = &["audio/wav", "audio/x-wav", "audio/wave"];

/// The dialogue routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/api/1.0/users/{user_id}/dialogue/{operation}/voice",
        post(dialogue),
    )
}

/// A prompt language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    English,
    Portuguese,
}

impl Language {
    fn parse(code: Option<&str>) -> Option<Self> {
        match code.unwrap_or("en") {
            "en" => Some(Language::English),
            "pt" => Some(Language::Portuguese),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Portuguese => "pt",
        }
    }

    /// The digits as words, `"zero six five three"`.
    fn words(self, code: &str) -> String {
        const EN: [&str; 10] = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        ];
        const PT: [&str; 10] = [
            "zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove",
        ];
        let words = match self {
            Language::English => &EN,
            Language::Portuguese => &PT,
        };
        code.bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| words[usize::from(b - b'0')])
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether the phrase signal can check a code said in this language.
    fn checked(self) -> bool {
        self == Language::English
    }
}

/// A refusal in the dialect's shape: `{"status": false, "data": {message,
/// reason, detail}}` with the native code as `reason`.
struct DialogueError(ApiError);

impl<E: Into<ApiError>> From<E> for DialogueError {
    fn from(e: E) -> Self {
        DialogueError(e.into())
    }
}

impl IntoResponse for DialogueError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut data = json!({
            "message": e.code.to_ascii_uppercase(),
            "reason": e.code,
            "detail": e.message,
        });
        for extra in ["retryAfterMs", "request_id"] {
            if let Some(v) = e.extra.get(extra) {
                data[extra] = v.clone();
            }
        }
        (e.status, Json(json!({"status": false, "data": data}))).into_response()
    }
}

impl DialogueError {
    fn of(e: Early) -> Self {
        match e {
            Early::Error(e) => DialogueError(e),
            // The answer's prompt is spent and this reply was its only way
            // back: the caller starts again.
            Early::Pending(request_id) => DialogueError(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "decision_pending",
                    "the answer was not decided in time; start a new dialogue",
                )
                .with("request_id", request_id),
            ),
        }
    }
}

/// Where an answer leaves the dialogue.
#[derive(Debug, Clone, PartialEq)]
enum Turn {
    /// Enrolled, or verified.
    Succeeded,
    /// Another answer is needed; `misspoke` when this one did not say its
    /// code (or said too little).
    Again { misspoke: bool },
    /// The dialogue is over without success.
    Failed {
        message: &'static str,
        reason: String,
        misspoke: bool,
    },
}

/// Whether an answer did not say its code, or said too little to tell: a
/// `Misspeak`, counted toward the dialogue's limit.
fn misspoke(decision: &Decision) -> bool {
    decision.has_reason(Code::PhraseMismatch) || decision.has_reason(Code::NotEnoughSpeech)
}

/// The next turn after `decision` answered a prompt of `state` (already
/// counting this answer). Errors never reach here: they end the dialogue
/// as refusals.
fn next_turn(state: &DialogueState, decision: &Decision, config: &DialogueConfig) -> Turn {
    let misspoke = misspoke(decision);
    let too_many_misspeaks = || Turn::Failed {
        message: "AUDIO_RECOGNITION_FAILED",
        reason: "MaxTotalSqmFailuresExceeded".into(),
        misspoke: true,
    };
    let max_attempts = |message| Turn::Failed {
        message,
        reason: "MaxAttemptsExceeded".into(),
        misspoke: false,
    };
    match (state.kind, decision.decision) {
        (_, DecisionKind::Retry) if misspoke => {
            if state.misspeaks >= config.max_misspeaks {
                too_many_misspeaks()
            } else {
                Turn::Again { misspoke: true }
            }
        }
        (DialogueKind::Verify, DecisionKind::Accept) => Turn::Succeeded,
        (DialogueKind::Verify, DecisionKind::Retry) => {
            if state.answers - state.misspeaks >= config.max_verify_attempts {
                max_attempts("AUDIO_VERIFICATION_FAILED")
            } else {
                Turn::Again { misspoke: false }
            }
        }
        (DialogueKind::Enroll, DecisionKind::Applied) if decision.has_reason(Code::Enrolled) => {
            Turn::Succeeded
        }
        (DialogueKind::Enroll, DecisionKind::Applied | DecisionKind::Retry) => {
            if state.answers - state.misspeaks >= config.max_enroll_samples {
                max_attempts("AUDIO_ENROLLMENT_FAILED")
            } else {
                Turn::Again { misspoke: false }
            }
        }
        (DialogueKind::Verify, _) => Turn::Failed {
            message: "AUDIO_VERIFICATION_FAILED",
            reason: decision.main_code().unwrap_or("rejected").to_string(),
            misspoke: false,
        },
        (DialogueKind::Enroll, _) => Turn::Failed {
            message: "AUDIO_ENROLLMENT_FAILED",
            reason: decision.main_code().unwrap_or("rejected").to_string(),
            misspoke: false,
        },
    }
}

/// The dialogue id in the request's cookies.
fn dialogue_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for the dialogue; `None` clears it. The path is fixed: a
/// user id in it could carry attributes of its own.
fn set_cookie(response: &mut Response, id: Option<&str>) {
    const ATTRIBUTES: &str = "Path=/api/1.0/users; HttpOnly; SameSite=Strict";
    let value = match id {
        Some(id) => format!("{COOKIE}={id}; {ATTRIBUTES}"),
        None => format!("{COOKIE}=; {ATTRIBUTES}; Max-Age=0"),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The caller behind `x-biometrid-key` and `x-biometrid-secret`, after the
/// client address's limit (so guessing keys costs the guesser).
struct DialogueCaller(Caller);

impl FromRequestParts<ApiState> for DialogueCaller {
    type Rejection = DialogueError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, DialogueError> {
        auth::admit_address(state, parts)?;
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(key), Some(secret)) = (header("x-biometrid-key"), header("x-biometrid-secret"))
        else {
            return Err(ApiError::unauthorized().into());
        };
        Ok(DialogueCaller(
            auth::admit(state, &format!("tmb_{key}_{secret}")).await?,
        ))
    }
}

/// Checks the route's scope and the user id (like any user id of a job).
fn check_user(caller: &Caller, kind: DialogueKind, user_id: &str) -> Result<(), ApiError> {
    caller.require(match kind {
        DialogueKind::Enroll => Scope::Enroll,
        DialogueKind::Verify => Scope::Verify,
    })?;
    if user_id.is_empty() || user_id.len() > 256 || user_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "userId: 1–256 characters, no control characters",
        ));
    }
    Ok(())
}

/// `operation` is `enroll` or `verify`.
async fn dialogue(
    State(state): State<ApiState>,
    DialogueCaller(caller): DialogueCaller,
    headers: HeaderMap,
    Path((user_id, operation)): Path<(String, String)>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, DialogueError> {
    let kind = DialogueKind::parse(&operation)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))?;
    check_user(&caller, kind, &user_id)?;
    let (fields, audio) = match multipart {
        Ok(m) => form::read_parts(Ok(m), WAV_TYPES).await?,
        // No body at all: the start of a dialogue.
        Err(_) if !headers.contains_key(header::CONTENT_TYPE) => Default::default(),
        Err(e) => form::read_parts(Err(e), WAV_TYPES).await?,
    };
    let language =
        Language::parse(fields.get("language").map(String::as_str)).ok_or_else(|| {
            ApiError::bad_request("invalid_field", "language must be `en` or `pt`")
                .with("field", "language")
        })?;
    match (audio, dialogue_cookie(&headers)) {
        (None, _) => start(&state, &caller, kind, &user_id, language).await,
        (Some(_), None) => Err(ApiError::bad_request(
            "dialogue_required",
            format!("answers need the {COOKIE} cookie of a started dialogue"),
        )
        .into()),
        (Some(audio), Some(id)) => answer(&state, &caller, kind, &user_id, &id, audio).await,
    }
}

/// A new prompt of `digits` digits, as `"065321"`.
fn prompt(config: &DialogueConfig) -> String {
    challenge_code(&mut rand::rng(), config.code_digits.clamp(4, 10)).replace(' ', "")
}

/// The session holding the dialogue at its next prompt, under a new id.
fn step(
    state: &ApiState,
    caller: &Caller,
    user_id: &str,
    dialogue: DialogueState,
) -> ChallengeSession {
    let now = now_ms();
    ChallengeSession {
        tenant: caller.tenant.clone(),
        session_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        challenge: prompt(&state.inner.config.dialogue),
        created_at: now,
        expires_at: now + state.inner.config.session_ttl_secs as i64 * 1000,
        dialogue: Some(dialogue),
        call: None,
    }
}

async fn start(
    state: &ApiState,
    caller: &Caller,
    kind: DialogueKind,
    user_id: &str,
    language: Language,
) -> Result<Response, DialogueError> {
    if kind == DialogueKind::Verify {
        ready_to_verify(state, &caller.tenant, user_id).await?;
    }
    let session = step(
        state,
        caller,
        user_id,
        DialogueState {
            kind,
            language: language.code().into(),
            answers: 0,
            misspeaks: 0,
        },
    );
    state.inner.access.put_session(&session).await?;
    let mut data = json!({
        "message": "DIALOGUE_STARTED_WITH_SUCCESS",
        "dialogueId": session.session_id,
        "promptCode": session.challenge,
        "promptCodeText": language.words(&session.challenge),
    });
    note_unchecked(&mut data, language);
    let mut response = Json(json!({"status": true, "data": data})).into_response();
    set_cookie(&mut response, Some(&session.session_id));
    Ok(response)
}

/// Says so when the language's codes are not checked.
fn note_unchecked(data: &mut Value, language: Language) {
    if !language.checked() {
        data["phraseChecked"] = json!(false);
    }
}

async fn answer(
    state: &ApiState,
    caller: &Caller,
    kind: DialogueKind,
    user_id: &str,
    id: &str,
    audio: Vec<u8>,
) -> Result<Response, DialogueError> {
    let invalid = || {
        ApiError::bad_request(
            "dialogue_invalid",
            "unknown, expired or finished dialogue; start a new one",
        )
    };
    // Taken before scoring: a prompt is good for one answer.
    let session = state
        .inner
        .access
        .take_session(&caller.tenant, id, now_ms())
        .await?
        .ok_or_else(invalid)?;
    let Some(mut dialogue) = session.dialogue.clone() else {
        return Err(invalid().into());
    };
    if session.user_id != user_id || dialogue.kind != kind {
        return Err(ApiError::bad_request(
            "dialogue_mismatch",
            "the dialogue was started for another user or operation",
        )
        .into());
    }
    let language = Language::parse(Some(&dialogue.language)).unwrap_or(Language::English);
    let expected = language.checked().then(|| session.challenge.clone());
    // One job per prompt: each prompt has its own session id.
    let request_id = format!("dialogue-{id}");
    let job = match kind {
        DialogueKind::Enroll => {
            let mut job = EnrollmentRequested::new(
                request_id,
                caller.tenant.clone(),
                user_id,
                now_ms(),
                audio,
            );
            job.expected_phrase = expected;
            Request::Enrollment(job)
        }
        DialogueKind::Verify => {
            let mut job = VerificationRequested::new(
                request_id,
                caller.tenant.clone(),
                user_id,
                now_ms(),
                audio,
            );
            job.session_id = Some(id.to_string());
            job.expected_phrase = expected;
            Request::Verification(job)
        }
    };
    let decision = match decide_within_request(state, caller, job).await {
        Ok(d) => d,
        Err(e) => {
            let mut response = DialogueError::of(e).into_response();
            set_cookie(&mut response, None);
            return Ok(response);
        }
    };
    dialogue.answers += 1;
    if misspoke(&decision) {
        dialogue.misspeaks += 1;
    }
    let config = &state.inner.config.dialogue;
    let (body, next) = match next_turn(&dialogue, &decision, config) {
        Turn::Succeeded => {
            let data = match kind {
                DialogueKind::Enroll => json!({
                    "dialogueStatus": "Succeeded",
                    "message": "AUDIO_ENROLLED_WITH_SUCCESS",
                    "enrolled": true,
                }),
                DialogueKind::Verify => json!({
                    "dialogueStatus": "Succeeded",
                    "message": "AUDIO_VERIFIED_WITH_SUCCESS",
                    "verified": true,
                }),
            };
            (json!({"status": true, "data": data}), None)
        }
        Turn::Again { misspoke } => {
            let next = step(state, caller, user_id, dialogue.clone());
            let mut data = json!({
                "message": "AUDIO_SUBMITTED_WITH_SUCCESS",
                "promptCode": next.challenge,
                "promptCodeText": language.words(&next.challenge),
                "decision": if misspoke { "Misspeak" } else { "OK" },
            });
            if kind == DialogueKind::Enroll {
                data["enrollmentProgress"] = json!(decision.enrollment_progress);
            }
            (json!({"status": true, "data": data}), Some(next))
        }
        Turn::Failed {
            message,
            reason,
            misspoke,
        } => {
            let mut data = json!({
                "dialogueStatus": "Failed",
                "message": message,
                "reason": reason,
                "decision": if misspoke { "Misspeak" } else { "OK" },
            });
            if kind == DialogueKind::Verify {
                data["verified"] = json!(false);
            }
            if let Some(ms) = decision.retry_after_ms {
                data["retryAfterMs"] = json!(ms);
            }
            (json!({"status": false, "data": data}), None)
        }
    };
    let mut body = body;
    note_unchecked(&mut body["data"], language);
    if let Some(next) = &next {
        state.inner.access.put_session(next).await?;
    }
    let mut response = Json(body).into_response();
    set_cookie(&mut response, next.as_ref().map(|n| n.session_id.as_str()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_read_out_in_the_requested_language() {
        assert_eq!(Language::English.words("0653"), "zero six five three");
        assert_eq!(Language::Portuguese.words("0653"), "zero seis cinco três");
        assert_eq!(Language::parse(None), Some(Language::English));
        assert_eq!(Language::parse(Some("pt")), Some(Language::Portuguese));
        assert_eq!(Language::parse(Some("de")), None);
        let code = prompt(&DialogueConfig::default());
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; biometrid.sid=abc-1"),
        );
        assert_eq!(dialogue_cookie(&headers).as_deref(), Some("abc-1"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("biometrid.sid="));
        assert_eq!(dialogue_cookie(&empty), None);
        assert_eq!(dialogue_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn answers_move_the_dialogue_on() {
        let config = DialogueConfig::default();
        let decided = |kind: DecisionKind, reasons: &[Code]| {
            let mut d = Decision::new(
                "r",
                "t",
                "u",
                timbre_schemas::JobKind::Verification,
                kind,
                1,
                2,
            );
            d.reasons = reasons.iter().map(|c| c.as_str().to_string()).collect();
            d
        };
        let at = |kind, answers, misspeaks| DialogueState {
            kind,
            language: "en".into(),
            answers,
            misspeaks,
        };
        use DialogueKind::{Enroll, Verify};
        let again = |misspoke| Turn::Again { misspoke };
        let table = [
            (
                "verified",
                at(Verify, 1, 0),
                decided(DecisionKind::Accept, &[Code::VoiceMatch]),
                Turn::Succeeded,
            ),
            (
                "misspoken",
                at(Verify, 1, 1),
                decided(DecisionKind::Retry, &[Code::PhraseMismatch]),
                again(true),
            ),
            (
                "too short",
                at(Verify, 2, 2),
                decided(DecisionKind::Retry, &[Code::NotEnoughSpeech]),
                again(true),
            ),
            (
                "third misspeak",
                at(Verify, 3, 3),
                decided(DecisionKind::Retry, &[Code::PhraseMismatch]),
                Turn::Failed {
                    message: "AUDIO_RECOGNITION_FAILED",
                    reason: "MaxTotalSqmFailuresExceeded".into(),
                    misspoke: true,
                },
            ),
            (
                "inconclusive",
                at(Verify, 1, 0),
                decided(DecisionKind::Retry, &[Code::VoiceUncertain]),
                again(false),
            ),
            (
                "third inconclusive",
                at(Verify, 4, 1),
                decided(DecisionKind::Retry, &[Code::VoiceUncertain]),
                Turn::Failed {
                    message: "AUDIO_VERIFICATION_FAILED",
                    reason: "MaxAttemptsExceeded".into(),
                    misspoke: false,
                },
            ),
            (
                "another voice",
                at(Verify, 1, 0),
                decided(DecisionKind::Reject, &[Code::VoiceMismatch]),
                Turn::Failed {
                    message: "AUDIO_VERIFICATION_FAILED",
                    reason: "voice_mismatch".into(),
                    misspoke: false,
                },
            ),
            (
                "sample taken",
                at(Enroll, 1, 0),
                decided(DecisionKind::Applied, &[Code::SampleAccepted]),
                again(false),
            ),
            (
                "enrolled",
                at(Enroll, 3, 1),
                decided(DecisionKind::Applied, &[Code::Enrolled]),
                Turn::Succeeded,
            ),
            (
                "enrollment misspoken",
                at(Enroll, 2, 1),
                decided(DecisionKind::Retry, &[Code::PhraseMismatch]),
                again(true),
            ),
            (
                "enrollment never ends",
                at(Enroll, 21, 1),
                decided(DecisionKind::Applied, &[Code::SampleAccepted]),
                Turn::Failed {
                    message: "AUDIO_ENROLLMENT_FAILED",
                    reason: "MaxAttemptsExceeded".into(),
                    misspoke: false,
                },
            ),
        ];
        for (name, state, decision, expected) in table {
            assert_eq!(next_turn(&state, &decision, &config), expected, "{name}");
        }
    }
}
