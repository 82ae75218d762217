//! OAuth2 client credentials (RFC 6749 §4.4) with refresh tokens (§6).
//! A client is an API key: `client_id` is its public id, `client_secret`
//! the secret part, checked like any key. Access tokens carry a subset of
//! the key's scopes; refresh tokens are single use (spent in the store on
//! rotation). Tokens are HS256 JWTs under a key derived from
//! `api.token_signing_key`, so a voice token never passes as an access
//! token, nor the reverse.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::{ApiError, ApiState, auth, dialects};
use crate::domain::{ApiKey, Scope, now_ms};

/// The token route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/oauth/token", post(token))
}

/// Claims of an access or refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClaims {
    /// The client (API key id).
    pub sub: String,
    /// The client's tenant.
    pub tenant: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// `access` or `refresh`.
    pub typ: String,
    /// Token id (a refresh token's is spent when it is used).
    pub jti: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expiry (seconds).
    pub exp: i64,
}

impl OAuthClaims {
    /// The granted scopes (names this version does not know are dropped).
    pub fn scopes(&self) -> BTreeSet<Scope> {
        self.scope.split(' ').filter_map(Scope::parse).collect()
    }
}

/// Mints and checks OAuth2 tokens.
pub struct OAuthSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl_secs: i64,
    refresh_ttl_secs: i64,
}

impl OAuthSigner {
    /// A signer under a key derived from the deployment's token signing key
    /// (a random one when empty: tokens then verify in this process only).
    pub fn new(signing_key: &[u8], access_ttl_secs: u64, refresh_ttl_secs: u64) -> Self {
        let key = derived_key(signing_key, b"timbre oauth2 tokens");
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            access_ttl_secs: access_ttl_secs as i64,
            refresh_ttl_secs: refresh_ttl_secs as i64,
        }
    }

    fn mint(&self, typ: &str, key: &ApiKey, scopes: &BTreeSet<Scope>, now: i64) -> String {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let ttl = if typ == "access" {
            self.access_ttl_secs
        } else {
            self.refresh_ttl_secs
        };
        let claims = OAuthClaims {
            sub: key.key_id.clone(),
            tenant: key.tenant.clone(),
            scope: scope_string(scopes),
            typ: typ.to_string(),
            jti: hex::encode(jti),
            iat: now,
            exp: now + ttl,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("hs256 signing cannot fail")
    }

    /// The claims of a well-signed, unexpired token of kind `typ`.
    pub fn check(&self, token: &str, typ: &str) -> Option<OAuthClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<OAuthClaims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
            .filter(|c| c.typ == typ)
    }
}

/// A key for one kind of token, derived from the deployment's token signing
/// key (from a random one when that is empty: tokens then verify in this
/// process only), so no kind of token passes as another.
pub(super) fn derived_key(signing_key: &[u8], purpose: &[u8]) -> Vec<u8> {
    let mut base = signing_key.to_vec();
    if base.is_empty() {
        base = vec![0u8; 32];
        rand::rng().fill_bytes(&mut base);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&base).expect("hmac takes any key");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

fn scope_string(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error as RFC 6749 §5.2 words it.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": error, "error_description": description, "message": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn invalid_client(basic: bool) -> Response {
    let mut r = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"timbre\""),
        );
    }
    r
}

fn bad(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// `client_id`/`client_secret` from HTTP Basic or the form; whether Basic was used.
fn client_credentials(
    parts: &Parts,
    form: &HashMap<String, String>,
) -> Option<(String, String, bool)> {
    let has_basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Basic "));
    if has_basic {
        let (id, secret) = super::auth::basic_credentials(parts)?;
        return Some((id, secret, true));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
        false,
    ))
}

/// The requested scopes: all of `allowed` when absent; `None` when any is
/// unknown or not allowed.
fn requested_scopes(
    form: &HashMap<String, String>,
    allowed: impl Fn(Scope) -> bool,
    all: BTreeSet<Scope>,
) -> Option<BTreeSet<Scope>> {
    let Some(requested) = form.get("scope") else {
        return Some(all);
    };
    let mut scopes = BTreeSet::new();
    for name in requested.split(' ').filter(|n| !n.is_empty()) {
        let scope = Scope::parse(name)
            .or_else(|| dialects::scope(name))
            .filter(|s| allowed(*s))?;
        scopes.insert(scope);
    }
    (!scopes.is_empty()).then_some(scopes)
}

async fn token(State(state): State<ApiState>, parts: Parts, body: Bytes) -> Response {
    if let Err(e) = auth::admit_address(&state, &parts) {
        return e.into_response();
    }
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return bad(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return bad("invalid_request", "the body is not a valid form");
    };
    let mut form = HashMap::new();
    for (k, v) in pairs {
        // RFC 6749 §3.2: parameters must not be repeated.
        if form.insert(k.clone(), v).is_some() {
            return bad("invalid_request", &format!("{k} is repeated"));
        }
    }
    let grant = form.get("grant_type").map(String::as_str);
    if !matches!(grant, Some("client_credentials" | "refresh_token")) {
        return match grant {
            None => bad("invalid_request", "grant_type is required"),
            Some(_) => bad(
                "unsupported_grant_type",
                "grant_type must be client_credentials or refresh_token",
            ),
        };
    }
    let Some((client_id, secret, basic)) = client_credentials(&parts, &form) else {
        return invalid_client(parts.headers.contains_key(header::AUTHORIZATION));
    };
    let key = match state.inner.access.api_key(&client_id).await {
        Ok(Some(k)) => k,
        Ok(None) => return invalid_client(basic),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = now_ms();
    if !key.enabled || key.expired(now) || !state.inner.keys.verify(&secret, &key) {
        return invalid_client(basic);
    }
    let signer = &state.inner.oauth;
    let scopes = if grant == Some("refresh_token") {
        let presented = form.get("refresh_token").map(String::as_str).unwrap_or("");
        let Some(claims) = signer
            .check(presented, "refresh")
            .filter(|c| c.sub == key.key_id)
        else {
            return bad("invalid_grant", "the refresh token is invalid or expired");
        };
        // Rotation: each refresh token is good once.
        match state
            .inner
            .access
            .spend_token(&claims.jti, (claims.exp + 1) * 1000)
            .await
        {
            Ok(true) => {}
            Ok(false) => return bad("invalid_grant", "the refresh token was already used"),
            Err(e) => return ApiError::from(e).into_response(),
        }
        let granted = claims.scopes();
        let narrowed = requested_scopes(
            &form,
            |s| granted.contains(&s) && key.allows(s),
            granted.iter().copied().filter(|s| key.allows(*s)).collect(),
        );
        match narrowed {
            Some(s) if !s.is_empty() => s,
            _ => return bad("invalid_scope", "the scope exceeds the original grant"),
        }
    } else {
        let all = Scope::ALL.into_iter().filter(|s| key.allows(*s)).collect();
        match requested_scopes(&form, |s| key.allows(s), all) {
            Some(s) => s,
            None => {
                return bad(
                    "invalid_scope",
                    "a requested scope is unknown or not allowed",
                );
            }
        }
    };
    let secs = now / 1000;
    let mut r = Json(json!({
        "access_token": signer.mint("access", &key, &scopes, secs),
        "token_type": "Bearer",
        "expires_in": signer.access_ttl_secs,
        "refresh_token": signer.mint("refresh", &key, &scopes, secs),
        "scope": scope_string(&scopes),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    tracing::info!(client = %key.key_id, grant = grant.unwrap_or(""), "oauth token issued");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_only_as_their_kind_and_under_their_key() {
        let signer = OAuthSigner::new(b"k", 60, 600);
        let key = ApiKey {
            key_id: "id".into(),
            tenant: "acme".into(),
            name: "n".into(),
            secret_hash: String::new(),
            created_at: 0,
            expires_at: 0,
            scopes: None,
            enabled: true,
            retain_data: false,
        };
        let scopes: BTreeSet<Scope> = [Scope::ConsentRead, Scope::Verify].into();
        let now = now_ms() / 1000;
        let access = signer.mint("access", &key, &scopes, now);
        let claims = signer.check(&access, "access").expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.scopes()),
            ("id", scopes.clone())
        );
        assert!(signer.check(&access, "refresh").is_none(), "kinds differ");
        assert!(
            OAuthSigner::new(b"other", 60, 600)
                .check(&access, "access")
                .is_none()
        );
        // A voice token under the same deployment key is no access token.
        let (voice, _) =
            super::super::tokens::TokenSigner::new(b"k", 60).mint("acme", "u", "r", now);
        assert!(signer.check(&voice, "access").is_none());
        let expired = signer.mint("access", &key, &scopes, now - 120);
        assert!(signer.check(&expired, "access").is_none());
    }
}
