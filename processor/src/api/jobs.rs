//! The round trip of one job: validate, publish, wait for its decision.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use timbre_schemas::{Code, Decision, DecisionKind, Request};

use super::auth::{Caller, record_usage};
use super::views::decision_name;
use super::{ApiError, ApiState};

/// What became of a submitted job.
pub enum Outcome {
    /// Decided within the wait.
    Decided(Box<Decision>),
    /// Not decided within the wait; poll `GET /v1/decisions/{request_id}`.
    Pending(String),
}

/// The request id of a new job: the caller's `Idempotency-Key` (so a retried
/// HTTP call maps to the same job and the same decision), or a fresh UUID.
pub fn request_id(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1–128 visible ASCII characters",
                )
            }),
    }
}

/// [`request_id`] of a job `caller` submits: a client token's holder (an
/// end user's page) gets its ids in a namespace of its own, so it cannot
/// take an id the integrator will use and have the integrator's job refused
/// as a conflict. The user is named by a digest (fixed length, no
/// separators of its own). The job's answer names the id to poll.
pub fn request_id_of(caller: &Caller, headers: &HeaderMap) -> Result<String, ApiError> {
    use sha2::{Digest, Sha256};
    let id = request_id(headers)?;
    Ok(match &caller.user {
        Some(user) => {
            let user = hex::encode(&Sha256::digest(user.as_bytes())[..8]);
            format!("client:{}:{user}:{id}", caller.key_id)
        }
        None => id,
    })
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        Code::RequestIdConflict.as_str(),
        "this request id was already used by another job",
    )
}

/// Publishes `request` and waits up to `wait` for its decision; records usage.
/// A key that retains data marks its audio jobs for diagnostic retention.
pub async fn submit(
    state: &ApiState,
    caller: &Caller,
    mut request: Request,
    wait: Duration,
) -> Result<Outcome, ApiError> {
    let inner = &state.inner;
    if caller.retain_data {
        request.retain_diagnostics();
    }
    request
        .validate(&inner.limits)
        .map_err(|e| ApiError::bad_request(e.code().as_str(), e.to_string()))?;
    let identity = request.identity();
    // A retried call whose job was already decided gets the same answer,
    // but only if it is the same job: an id reused for another user, kind
    // or body is refused, as the processor would.
    if let Some(done) = inner
        .client
        .stored(&identity.tenant, &identity.request_id)
        .await?
    {
        if !identity.is_answered_by(&done) {
            return Err(conflict());
        }
        return Ok(Outcome::Decided(Box::new(done)));
    }
    let pending = inner.client.register(identity.clone());
    inner.client.publish(&request).await?;
    let outcome = match inner.client.wait(pending, wait).await? {
        // Read back from the store: another job may own the id.
        Some(d) if !identity.is_answered_by(&d) => {
            return Err(conflict());
        }
        Some(d) => Outcome::Decided(Box::new(d)),
        None => Outcome::Pending(identity.request_id),
    };
    let mut counts = Vec::new();
    if let Outcome::Decided(d) = &outcome {
        counts.push((format!("decision:{}", decision_name(d.decision)), 1));
        let reasons: std::collections::BTreeSet<&String> =
            d.reasons.iter().chain(d.error_code.iter()).collect();
        counts.extend(reasons.into_iter().map(|r| (format!("reason:{r}"), 1)));
    } else {
        counts.push(("pending".to_string(), 1));
    }
    record_usage(state, caller, counts).await;
    Ok(outcome)
}

/// The 202 answer of a job that is still being decided.
pub fn pending(request_id: &str) -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({
            "request_id": request_id,
            "status": "pending",
            "poll": format!("/v1/decisions/{}", path_segment(request_id)),
        })),
    )
}

/// `text` as one URL path segment: an Idempotency-Key may hold `/`, `?`
/// or `#`, which would otherwise end the segment or the path.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// How a job handler stops early: an error, or a job still being decided
/// (`202` with the id to poll).
pub enum Early {
    /// An error answer.
    Error(ApiError),
    /// Not decided within the wait.
    Pending(String),
}

impl<E: Into<ApiError>> From<E> for Early {
    fn from(e: E) -> Self {
        Early::Error(e.into())
    }
}

impl axum::response::IntoResponse for Early {
    fn into_response(self) -> axum::response::Response {
        match self {
            Early::Error(e) => e.into_response(),
            Early::Pending(id) => pending(&id).into_response(),
        }
    }
}

/// Submits a job and returns its decision; a refusal becomes an error
/// answer and a slow decision a `202`.
pub async fn decide(
    state: &ApiState,
    caller: &Caller,
    request: Request,
) -> Result<Box<Decision>, Early> {
    decide_waiting(state, caller, request, state.wait_timeout()).await
}

/// Like [`decide`], but waits until shortly before the request timeout: a
/// challenge session is spent when its job is submitted and only this
/// answer can carry its voice token, so an early `202` would strand a
/// genuine user.
pub async fn decide_within_request(
    state: &ApiState,
    caller: &Caller,
    request: Request,
) -> Result<Box<Decision>, Early> {
    decide_waiting(state, caller, request, state.session_wait_timeout()).await
}

async fn decide_waiting(
    state: &ApiState,
    caller: &Caller,
    request: Request,
    wait: Duration,
) -> Result<Box<Decision>, Early> {
    match submit(state, caller, request, wait).await? {
        Outcome::Decided(d) => Ok(ok_or_refused(d)?),
        Outcome::Pending(id) => Err(Early::Pending(id)),
    }
}

/// An ERROR decision as an HTTP error with the decision's stable code.
pub fn refused(d: &Decision) -> ApiError {
    let code = d.error_code.clone().unwrap_or_else(|| "error".into());
    let status = d
        .error()
        .and_then(|c| StatusCode::from_u16(c.http_status()).ok())
        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let message = d
        .error_message
        .clone()
        .unwrap_or_else(|| "the job was refused".into());
    ApiError::new(status, code, message).with("request_id", d.request_id.clone())
}

/// `Err(refused)` for ERROR decisions.
pub fn ok_or_refused(d: Box<Decision>) -> Result<Box<Decision>, ApiError> {
    if d.decision == DecisionKind::Error {
        Err(refused(&d))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_link_keeps_the_id_in_one_segment() {
        let (status, body) = pending("client:k1:ab12:a/b?c#d e%");
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(
            body.0["poll"],
            "/v1/decisions/client:k1:ab12:a%2Fb%3Fc%23d%20e%25"
        );
        assert_eq!(body.0["request_id"], "client:k1:ab12:a/b?c#d e%");
    }
}
