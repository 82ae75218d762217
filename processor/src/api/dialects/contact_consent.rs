//! The contact-centre consent opt-in dialect (seed 001): an IVR flow reads
//! and sets a caller's consent at `/voicebiometrics/contacts/{id}/consent`
//! with an OAuth2 client-credentials token. A contact is a user of the
//! token's tenant; each status maps onto the native consent and profile
//! jobs, so erasure follows the same rules as the native API.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde_json::json;
use timbre_schemas::{Code, ConsentChanged, ProfileCommandKind, Request};

use crate::api::auth::Caller;
use crate::api::jobs::{Early, decide, request_id};
use crate::api::users::profile_command;
use crate::api::{ApiError, ApiState};
use crate::domain::{BIOMETRIC_PURPOSE, Scope, now_ms};

/// The dialect's OAuth2 scope names and the native scopes they grant.
pub const SCOPES: [(&str, Scope); 2] = [
    ("voicebiometrics-consent:read", Scope::ConsentRead),
    ("voicebiometrics-consent:write", Scope::ConsentWrite),
];

/// The consent routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/voicebiometrics/contacts/{contact_id}/consent",
        put(set_status).get(status),
    )
}

/// A contact's consent as the dialect names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContactConsent {
    /// Never asked, or the answer was forgotten.
    NoConsent,
    Consented,
    Refused,
    /// The contact's data was deleted.
    Deleted,
}

impl ContactConsent {
    const ALL: [ContactConsent; 4] = [
        ContactConsent::NoConsent,
        ContactConsent::Consented,
        ContactConsent::Refused,
        ContactConsent::Deleted,
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn as_str(self) -> &'static str {
        match self {
            ContactConsent::NoConsent => "NO_CONSENT",
            ContactConsent::Consented => "CONSENTED",
            ContactConsent::Refused => "REFUSED",
            ContactConsent::Deleted => "DELETED",
        }
    }
}

/// The body `{"status": …}` and nothing else; a refusal names the field
/// in its message and in `field`.
fn parse_status(body: &[u8]) -> Result<ContactConsent, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::bad_request("invalid_request", message).with("field", field)
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            "status",
            format!("the body is not JSON ({e}); expected {{\"status\": …}}"),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(bad(
            "status",
            "the body must be a JSON object {\"status\": …}".into(),
        ));
    };
    if let Some(other) = object.keys().find(|k| *k != "status") {
        return Err(bad(
            other,
            format!("unknown field `{other}`: the body has `status` only"),
        ));
    }
    let Some(status) = object.get("status") else {
        return Err(bad("status", "missing field `status`".into()));
    };
    status
        .as_str()
        .and_then(ContactConsent::parse)
        .ok_or_else(|| {
            bad(
                "status",
                "`status` must be one of NO_CONSENT, CONSENTED, REFUSED, DELETED".into(),
            )
        })
}

/// `{"status": …}`: `NO_CONSENT` when nothing is recorded.
async fn status(
    State(state): State<ApiState>,
    caller: Caller,
    Path(contact_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Scope::ConsentRead)?;
    let consent = state
        .inner
        .store
        .consent(&caller.tenant, &contact_id, BIOMETRIC_PURPOSE)
        .await?;
    let status = match consent {
        None => ContactConsent::NoConsent,
        Some(c) if c.granted => ContactConsent::Consented,
        Some(_) => ContactConsent::Refused,
    };
    Ok(Json(json!({ "status": status.as_str() })))
}

/// Sets a contact's consent: `CONSENTED` grants it (audio retention by the
/// tenant's policy), `REFUSED` withdraws it and erases the voiceprint, and
/// `NO_CONSENT` or `DELETED` erase the contact altogether, consent included,
/// so a later read says `NO_CONSENT`. Erasing the contact also ends a
/// lockout and a watchlist entry, which only `profiles:admin` may do (as
/// `DELETE /v1/users/{id}`): consent scopes alone only grant or refuse.
async fn set_status(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(contact_id): Path<String>,
    body: Bytes,
) -> Result<Response, Early> {
    caller.require(Scope::ConsentWrite)?;
    let status = parse_status(&body)?;
    let job = match status {
        ContactConsent::Consented | ContactConsent::Refused => {
            let granted = status == ContactConsent::Consented;
            let retain_audio = state
                .inner
                .policies
                .for_tenant(&caller.tenant)
                .retain_audio_by_default;
            Request::Consent(ConsentChanged::new(
                request_id(&headers)?,
                caller.tenant.clone(),
                contact_id,
                now_ms(),
                granted,
                BIOMETRIC_PURPOSE,
                retain_audio,
            ))
        }
        ContactConsent::NoConsent | ContactConsent::Deleted => {
            caller.require(Scope::ProfilesAdmin)?;
            profile_command(&caller, &headers, contact_id, ProfileCommandKind::Delete)?
        }
    };
    match decide(&state, &caller, job).await {
        Ok(_) => {}
        // Erasing a contact that has nothing stored leaves it as asked.
        Err(Early::Error(e)) if e.code == Code::ProfileNotFound.as_str() => {}
        Err(e) => return Err(e),
    }
    Ok(Json(json!({ "status": status.as_str() })).into_response())
}
