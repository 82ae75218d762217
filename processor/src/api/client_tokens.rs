//! Ephemeral client tokens: what a browser holds instead of an API key.
//! An integrator's backend mints one for one user and one scope (`verify`
//! or `enroll`) for at most ten minutes and hands it to its page; the token
//! acts only on that user's challenge, verify and enroll routes
//! ([`CLIENT_ROUTES`]) and only while the key that minted it is enabled
//! (every request reads the key). Tokens are HS256 JWTs under a key derived
//! from `api.token_signing_key` for this use alone, so neither a voice
//! token nor an OAuth2 token passes as one, nor the reverse.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::router::Body;
use super::{ApiError, ApiState};
use crate::domain::{Scope, now_ms, utc_rfc3339};

/// The routes a client token may call (matched route patterns). Everything
/// else refuses it: keys, users, usage and every dialect stay server-side.
pub const CLIENT_ROUTES: [&str; 4] = [
    "/start-auth",
    "/verify-voice",
    "/enroll",
    "/v1/decisions/{request_id}",
];

/// Longest lifetime of a client token.
pub const MAX_TTL_SECS: u64 = 600;
/// Lifetime of a client token when the request names none.
const DEFAULT_TTL_SECS: u64 = 300;

/// The minting route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/client-tokens", post(create))
}

/// Claims of a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientClaims {
    /// The API key that minted the token (its limits and usage apply).
    pub sub: String,
    /// The key's tenant.
    pub tenant: String,
    /// The one user the token acts for.
    pub user: String,
    /// `verify` or `enroll`.
    pub scope: String,
    /// Always `client`.
    pub typ: String,
    /// Token id.
    pub jti: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expiry (seconds).
    pub exp: i64,
}

/// Why a presented client token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a client token of this deployment (or tampered with).
    Invalid,
    /// Well signed but past its expiry: the page should fetch a new one.
    Expired,
    /// Presented on a route client tokens may not call.
    Route,
}

impl Refusal {
    /// The API error of the refusal.
    pub fn error(self) -> ApiError {
        match self {
            Refusal::Invalid => ApiError::unauthorized(),
            Refusal::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the client token has expired; ask the backend for a new one",
            ),
            Refusal::Route => ApiError::new(
                StatusCode::FORBIDDEN,
                "client_token_not_allowed",
                "a client token may only start, answer and enroll its own user's challenges",
            ),
        }
    }
}

/// Mints and checks client tokens.
pub struct ClientTokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl ClientTokenSigner {
    /// A signer under a key derived from the deployment's token signing key
    /// (a random one when empty: tokens then verify in this process only).
    pub fn new(signing_key: &[u8]) -> Self {
        let key = super::oauth::derived_key(signing_key, b"timbre client tokens");
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
        }
    }

    /// A token of `key_id` for `user` with `scope`, valid `ttl_secs` from
    /// `now` (seconds).
    pub fn mint(
        &self,
        key_id: &str,
        tenant: &str,
        user: &str,
        scope: Scope,
        ttl_secs: u64,
        now: i64,
    ) -> (String, ClientClaims) {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let claims = ClientClaims {
            sub: key_id.to_string(),
            tenant: tenant.to_string(),
            user: user.to_string(),
            scope: scope.as_str().to_string(),
            typ: "client".into(),
            jti: hex::encode(jti),
            iat: now,
            exp: now + ttl_secs as i64,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("hs256 signing cannot fail");
        (token, claims)
    }

    /// The claims of a well-signed, unexpired client token presented on
    /// `route` (the matched route pattern; `None` outside the router's
    /// extractor, where no client token is accepted).
    pub fn check(&self, token: &str, route: Option<&str>) -> Result<ClientClaims, Refusal> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = match jsonwebtoken::decode::<ClientClaims>(token, &self.decoding, &validation)
        {
            Ok(d) => d.claims,
            // Reported only after the signature checked out.
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                return Err(Refusal::Expired);
            }
            Err(_) => return Err(Refusal::Invalid),
        };
        if claims.typ != "client" || claims_scope(&claims).is_none() {
            return Err(Refusal::Invalid);
        }
        if !route.is_some_and(|r| CLIENT_ROUTES.contains(&r)) {
            return Err(Refusal::Route);
        }
        Ok(claims)
    }
}

/// The scope a client token grants (`None`: not one a token may carry).
pub fn claims_scope(claims: &ClientClaims) -> Option<Scope> {
    client_scope(&claims.scope)
}

/// `verify` or `enroll`, the scopes a client token may carry.
fn client_scope(name: &str) -> Option<Scope> {
    Scope::parse(name).filter(|s| matches!(s, Scope::Verify | Scope::Enroll))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClientToken {
    user_id: String,
    scope: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Body(body): Body<CreateClientToken>,
) -> Result<Response, ApiError> {
    let scope = client_scope(&body.scope).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_scope",
            "a client token's scope is verify or enroll",
        )
    })?;
    caller.require(scope)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_seconds must be between 1 and {MAX_TTL_SECS}"),
        ));
    }
    let user = &body.user_id;
    if user.is_empty()
        || user.len() > state.inner.limits.max_id_bytes
        || user.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            format!(
                "user_id must be 1 to {} bytes without control characters",
                state.inner.limits.max_id_bytes
            ),
        ));
    }
    let (token, claims) = state.inner.client_tokens.mint(
        &caller.key_id,
        &caller.tenant,
        &body.user_id,
        scope,
        ttl,
        now_ms() / 1000,
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "client_token": token,
            "user_id": claims.user,
            "scope": claims.scope,
            "expiresAt": utc_rfc3339(claims.exp * 1000),
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: Option<&str> = Some("/verify-voice");

    #[test]
    fn a_token_checks_only_under_its_key_on_its_routes_and_before_expiry() {
        let signer = ClientTokenSigner::new(b"k");
        let now = now_ms() / 1000;
        let (token, claims) = signer.mint("key1", "acme", "u1", Scope::Verify, 60, now);
        assert_eq!(signer.check(&token, ROUTE), Ok(claims.clone()));
        assert_eq!(claims_scope(&claims), Some(Scope::Verify));
        assert_eq!(
            ClientTokenSigner::new(b"other").check(&token, ROUTE),
            Err(Refusal::Invalid)
        );
        for route in [None, Some("/v1/keys"), Some("/v1/users/{user_id}")] {
            assert_eq!(
                signer.check(&token, route),
                Err(Refusal::Route),
                "{route:?}"
            );
        }
        let (old, _) = signer.mint("key1", "acme", "u1", Scope::Verify, 60, now - 120);
        assert_eq!(signer.check(&old, ROUTE), Err(Refusal::Expired));
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(signer.check(&tampered, ROUTE), Err(Refusal::Invalid));
    }

    #[test]
    fn other_tokens_of_the_deployment_do_not_pass_as_client_tokens() {
        let key = b"shared signing key";
        let signer = ClientTokenSigner::new(key);
        let now = now_ms() / 1000;
        let (voice, _) =
            super::super::tokens::TokenSigner::new(key, 60).mint("acme", "u1", "r", now);
        assert_eq!(signer.check(&voice, ROUTE), Err(Refusal::Invalid));
        let oauth = super::super::oauth::OAuthSigner::new(key, 60, 60);
        let (client, _) = signer.mint("key1", "acme", "u1", Scope::Enroll, 60, now);
        assert_eq!(oauth.check(&client, "access"), None);
    }
}
