//! A user's state and the administrative jobs on it: delete (erasure),
//! opt-out, greylist and unlock. Each change is a `ProfileCommand` on the
//! bus, answered from its decision like every job; the adapter decides
//! nothing itself.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use timbre_schemas::{Contract, ProfileCommand, ProfileCommandKind, Request};

use super::auth::Caller;
use super::jobs::{Early, decide, request_id};
use super::{ApiError, ApiState, views};
use crate::domain::{BIOMETRIC_PURPOSE, Consent, Profile, Scope, now_ms, policy, utc_rfc3339};

/// The user routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/users/{user_id}",
            get(user).delete(on(ProfileCommandKind::Delete, native)),
        )
        .route("/v1/users/{user_id}/decisions", get(decisions))
        .route(
            "/v1/users/{user_id}/opt-out",
            post(on(ProfileCommandKind::OptOut, native)),
        )
        .route(
            "/v1/users/{user_id}/unlock",
            post(on(ProfileCommandKind::Unlock, native)),
        )
        .route(
            "/v1/users/{user_id}/greylist",
            put(on(ProfileCommandKind::GreylistAdd, native))
                .delete(on(ProfileCommandKind::GreylistRemove, native)),
        )
}

#[derive(Deserialize)]
struct DecisionsQuery {
    limit: Option<u32>,
}

/// Most decisions one listing returns.
const MAX_DECISIONS: u32 = 100;
/// Decisions of one listing read from the store at once.
const DECISION_READS_IN_FLIGHT: usize = 16;

/// The user's newest decisions, newest first, each as
/// `GET /v1/decisions/{id}` shows it.
async fn decisions(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
    Query(query): Query<DecisionsQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ProfilesRead)?;
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_DECISIONS {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_DECISIONS}"),
        ));
    }
    let ids = state
        .inner
        .store
        .recent_decision_ids(&caller.tenant, &user_id, limit)
        .await?;
    let expose = state.inner.policies.for_tenant(&caller.tenant).expose_score;
    // Read side by side (a store round trip each), newest first as listed.
    let (client, tenant) = (&state.inner.client, &caller.tenant);
    let found: Vec<_> = futures::stream::iter(ids)
        .map(|id| async move { client.stored(tenant, &id).await })
        .buffered(DECISION_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    // An entry whose decision has expired is skipped.
    let listed: Vec<Value> = found
        .into_iter()
        .flatten()
        .filter(|d| d.user_id == user_id)
        .map(|d| views::decision(&d, expose))
        .collect();
    Ok(Json(json!({"user_id": user_id, "decisions": listed})))
}

/// What the API shows of a user: profile, biometric consent and whether
/// the user's voice is on the watchlist (greylist).
pub(super) struct UserState {
    pub(super) profile: Option<Profile>,
    pub(super) consent: Option<Consent>,
    pub(super) listed: bool,
}

impl UserState {
    /// The user's state; `404 profile_not_found` when the tenant knows
    /// nothing of the user.
    pub(super) async fn load(
        state: &ApiState,
        tenant: &str,
        user_id: &str,
    ) -> Result<Self, ApiError> {
        let store = &state.inner.store;
        let profile = store.profile(tenant, user_id).await?;
        let consent = store.consent(tenant, user_id, BIOMETRIC_PURPOSE).await?;
        let listed = store
            .watchlist(tenant)
            .await?
            .iter()
            .any(|e| e.user_id == user_id);
        if profile.is_none() && consent.is_none() && !listed {
            return Err(ApiError::profile_not_found(user_id));
        }
        Ok(Self {
            profile,
            consent,
            listed,
        })
    }

    /// When consent was last granted, if it stands.
    pub(super) fn opted_in_at(&self) -> Option<i64> {
        self.consent
            .as_ref()
            .filter(|c| c.granted)
            .map(|c| c.updated_at)
    }

    /// When consent was last withdrawn, if it stands withdrawn.
    pub(super) fn opted_out_at(&self) -> Option<i64> {
        self.consent
            .as_ref()
            .filter(|c| !c.granted)
            .map(|c| c.updated_at)
    }
}

/// Status, progress, consent times and watchlist membership of a user.
async fn user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::ProfilesRead)?;
    let tenant = caller.tenant.as_str();
    let UserState {
        profile,
        consent,
        listed,
    } = UserState::load(&state, tenant, &user_id).await?;
    let policy = state.inner.policies.for_tenant(tenant);
    let granted = consent.as_ref().filter(|c| c.granted);
    let withdrawn = consent.as_ref().filter(|c| !c.granted);
    Ok(Json(json!({
        "user_id": user_id,
        "status": profile.as_ref().map_or("NOT_ENROLLED", |p| p.status.as_str()),
        "updated_at": profile.as_ref().map(|p| utc_rfc3339(p.updated_at)),
        "opted_in_at": granted.map(|c| utc_rfc3339(c.updated_at)),
        "opted_out_at": withdrawn.map(|c| utc_rfc3339(c.updated_at)),
        "is_greylisted": listed,
        "enrollment_progress": profile.as_ref().map_or(0.0, |p| policy::enrollment_progress(p, policy)),
        "learning_progress": profile.as_ref().map_or(0.0, |p| p.learning_progress),
    })))
}

/// The job of a profile command by `caller` (request id from the headers).
pub(super) fn profile_command(
    caller: &Caller,
    headers: &HeaderMap,
    user_id: String,
    command: ProfileCommandKind,
) -> Result<Request, ApiError> {
    Ok(Request::Profile(ProfileCommand {
        request_id: request_id(headers)?,
        tenant: caller.tenant.clone(),
        user_id,
        occurred_at: now_ms(),
        schema_version: ProfileCommand::CURRENT_VERSION,
        trace: None,
        command,
        reason: None,
    }))
}

/// Submits a profile command and answers with its decision.
async fn command(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    user_id: String,
    command: ProfileCommandKind,
) -> Result<Response, Early> {
    caller.require(Scope::ProfilesAdmin)?;
    let job = profile_command(caller, headers, user_id, command)?;
    let d = decide(state, caller, job).await?;
    Ok(Json(json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "decision": views::decision_name(d.decision),
        "status": views::status_name(d.profile_status),
        "reasons": d.reasons,
    }))
    .into_response())
}

/// The future of a profile command's answer.
pub(super) type CommandFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response, Early>> + Send>>;

/// How a route answers a profile command: the native view, or a dialect's.
pub(super) type Answer =
    fn(ApiState, Caller, HeaderMap, String, ProfileCommandKind) -> CommandFuture;

/// The handler of one profile command on the path's user, answered by
/// `answer`.
pub(super) fn on(
    kind: ProfileCommandKind,
    answer: Answer,
) -> impl Fn(State<ApiState>, Caller, HeaderMap, Path<String>) -> CommandFuture
+ Clone
+ Send
+ Sync
+ 'static {
    move |State(state), caller, headers, Path(user_id)| {
        answer(state, caller, headers, user_id, kind)
    }
}

/// The native answer: the command's decision.
fn native(
    state: ApiState,
    caller: Caller,
    headers: HeaderMap,
    user_id: String,
    kind: ProfileCommandKind,
) -> CommandFuture {
    Box::pin(async move { command(&state, &caller, &headers, user_id, kind).await })
}
