//! Who is calling: API key → tenant, per-key rate limits, usage counters.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::{ApiError, ApiState, client_tokens, keys};
use crate::domain::{Scope, now_ms, utc_day};
use crate::ports::AccessStore;

/// An authenticated caller: every handler that takes one is tenant-scoped.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant the key acts for; every read and write is scoped to it.
    pub tenant: String,
    /// Public id of the key (usage is counted per key).
    pub key_id: String,
    /// The key's scopes (`None`: a key from before scopes, every scope).
    scopes: Option<BTreeSet<Scope>>,
    /// The key's jobs keep their audio and decision for diagnosis.
    pub retain_data: bool,
    /// The one user a client token acts for (`None`: an API key or access
    /// token, which act for any user of the tenant).
    pub user: Option<String>,
}

impl Caller {
    /// `403 insufficient_scope`, naming the scope, unless the key has it.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.as_ref().is_none_or(|s| s.contains(&scope)) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this api key lacks the {} scope", scope.as_str()),
        )
        .with("scope", scope.as_str()))
    }

    /// The user a request acts for: the one it names, which a client
    /// token's holder may leave out and may not name differently;
    /// `missing` when a key's request names no one.
    pub fn acting_for(
        &self,
        named: Option<&str>,
        missing: impl FnOnce() -> ApiError,
    ) -> Result<String, ApiError> {
        match (&self.user, named) {
            (Some(bound), None) => Ok(bound.clone()),
            (Some(bound), Some(n)) if n == bound => Ok(bound.clone()),
            (Some(_), Some(_)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "user_not_allowed",
                "this client token acts for another user",
            )),
            (None, Some(n)) => Ok(n.to_string()),
            (None, None) => Err(missing()),
        }
    }
}

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return v.to_str().ok();
    }
    let auth = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    auth.to_str().ok()?.strip_prefix("Bearer ")
}

/// The client's address: the trusted proxy's header when configured, else
/// the connection's peer. Of a list (`x-forwarded-for`, over all its lines:
/// a proxy may add a line rather than append) the entry `hops` from the
/// end, the one the outermost trusted proxy appended: the entries before it
/// are whatever the client sent, and a client could rotate them to escape
/// its limit. A list shorter than `hops` names no trusted address.
fn client_address(parts: &Parts, header: Option<&str>, hops: usize) -> String {
    let entries: Vec<&str> = header
        .map(|h| parts.headers.get_all(h))
        .into_iter()
        .flatten()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let forwarded = entries
        .len()
        .checked_sub(hops.max(1))
        .map(|i| entries[i])
        .filter(|a| !a.is_empty());
    match forwarded {
        Some(a) => a.to_string(),
        None => parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string()),
    }
}

fn rate_limited(retry_after_ms: i64, scope: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        what.to_string(),
    )
    .with("retryAfterMs", retry_after_ms)
    .with("scope", scope)
}

/// Counts a request against its client address's limit; run before any
/// key lookup, so guessing keys costs the guesser, not the store.
pub fn admit_address(state: &ApiState, parts: &Parts) -> Result<(), ApiError> {
    let config = &state.inner.config;
    let address = client_address(
        parts,
        config.client_address_header.as_deref(),
        config.client_address_hops,
    );
    state
        .inner
        .address_limiter
        .admit(&address, now_ms())
        .map_err(|ms| rate_limited(ms, "address", "too many requests from this address"))
}

/// The caller behind an API key, an OAuth2 access token or (on `route`,
/// when it is one of [`client_tokens::CLIENT_ROUTES`]) a client token. The
/// key is read from the store on every request (a token's too): a disabled
/// or revoked key is refused at once by every replica, with its tokens.
async fn authenticate(
    state: &ApiState,
    presented: &str,
    route: Option<&str>,
) -> Result<Caller, ApiError> {
    let now = now_ms();
    let (key_id, secret, token_scopes, user) = match keys::parse(presented) {
        Some((id, secret)) => (id.to_string(), Some(secret), None, None),
        None => match state.inner.oauth.check(presented, "access") {
            Some(claims) => {
                let scopes = claims.scopes();
                (claims.sub, None, Some((claims.tenant, scopes)), None)
            }
            None => {
                let claims = state
                    .inner
                    .client_tokens
                    .check(presented, route)
                    .map_err(client_tokens::Refusal::error)?;
                let scopes = client_tokens::claims_scope(&claims).into_iter().collect();
                (
                    claims.sub,
                    None,
                    Some((claims.tenant, scopes)),
                    Some(claims.user),
                )
            }
        },
    };
    let stored = state
        .inner
        .access
        .api_key(&key_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let secret_ok = secret.is_none_or(|s| state.inner.keys.verify(s, &stored));
    if !stored.enabled || stored.expired(now) || !secret_ok {
        return Err(ApiError::unauthorized());
    }
    let scopes = match token_scopes {
        None => stored.scopes,
        Some((tenant, _)) if tenant != stored.tenant => return Err(ApiError::unauthorized()),
        // A token never exceeds what its key may do now.
        Some((_, granted)) => Some(granted.into_iter().filter(|s| stored.allows(*s)).collect()),
    };
    Ok(Caller {
        tenant: stored.tenant,
        key_id: stored.key_id,
        scopes,
        retain_data: stored.retain_data,
        user,
    })
}

/// `(user, password)` of an HTTP Basic `Authorization` header.
pub fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        admit_address(state, parts)?;
        let presented = presented_key(parts).ok_or_else(ApiError::unauthorized)?;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        admit_on(state, presented, route).await
    }
}

/// The caller behind `presented` (an API key or an access token), counted
/// against its key's rate limit and usage; run after [`admit_address`].
pub async fn admit(state: &ApiState, presented: &str) -> Result<Caller, ApiError> {
    admit_on(state, presented, None).await
}

/// [`admit`] on a matched route, where a client token may be accepted.
async fn admit_on(
    state: &ApiState,
    presented: &str,
    route: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = authenticate(state, presented, route).await?;
    // A client token's holder is an end user: it spends a budget of its
    // own (per key and user), so one page cannot use up the key's.
    let bucket = match &caller.user {
        Some(user) => format!("{}\u{1f}client\u{1f}{user}", caller.key_id),
        None => caller.key_id.clone(),
    };
    let admitted = state
        .inner
        .limiter
        .admit_shared(&*state.inner.access, &bucket, now_ms())
        .await;
    if let Err(retry_after_ms) = admitted {
        record_usage(state, &caller, vec![("throttled".into(), 1)]).await;
        let what = match caller.user {
            Some(_) => "too many requests for this user's client tokens",
            None => "too many requests for this api key",
        };
        return Err(rate_limited(retry_after_ms, "minute", what));
    }
    record_usage(state, &caller, vec![("requests".into(), 1)]).await;
    Ok(caller)
}

/// Fixed one-minute windows per key. [`RateLimiter::admit_shared`] counts
/// across replicas through the store; [`RateLimiter::admit`] counts in this
/// process only (demo-key minting).
pub struct RateLimiter {
    per_minute: u32,
    /// This process among the API replicas (random per start).
    replica: String,
    windows: Mutex<HashMap<String, (i64, u32)>>,
    /// Per key: minute, requests this replica admitted, the other
    /// replicas' count as last read.
    shared: Mutex<HashMap<String, SharedWindow>>,
}

#[derive(Clone, Copy)]
struct SharedWindow {
    minute: i64,
    own: i64,
    others: i64,
}

impl RateLimiter {
    /// A limiter admitting `per_minute` requests per key and minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            replica: uuid::Uuid::new_v4().to_string(),
            windows: Mutex::default(),
            shared: Mutex::default(),
        }
    }

    /// Counts a request of `key` at `now` against the limit of all
    /// replicas together: this replica's count is written to the store,
    /// the sum of every replica's read back. A key already over the limit
    /// in this replica's last view is refused without a store round trip.
    /// Replicas racing in the same instant can overshoot by one request
    /// each; a store failure falls back to this replica's own count.
    pub async fn admit_shared(
        &self,
        access: &dyn AccessStore,
        key: &str,
        now: i64,
    ) -> Result<(), i64> {
        let minute = now.div_euclid(60_000);
        let retry_after = (minute + 1) * 60_000 - now;
        let limit = i64::from(self.per_minute);
        let own = {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if shared.len() > 100_000 {
                shared.retain(|_, w| w.minute == minute);
            }
            let w = shared.entry(key.to_string()).or_insert(SharedWindow {
                minute,
                own: 0,
                others: 0,
            });
            if w.minute != minute {
                *w = SharedWindow {
                    minute,
                    own: 0,
                    others: 0,
                };
            }
            if w.own + w.others >= limit {
                return Err(retry_after);
            }
            w.own += 1;
            w.own
        };
        let total = match access.count_requests(key, minute, &self.replica, own).await {
            Ok(total) => total,
            Err(e) => {
                tracing::warn!(error = %e, "shared rate count unavailable, counting locally");
                return if own > limit {
                    Err(retry_after)
                } else {
                    Ok(())
                };
            }
        };
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = shared.get_mut(key).filter(|w| w.minute == minute) {
            w.others = w.others.max(total - own);
        }
        if total > limit {
            Err(retry_after)
        } else {
            Ok(())
        }
    }

    /// Counts a request of `key` at `now`; `Err(ms until the next window)`
    /// when over the limit.
    pub fn admit(&self, key: &str, now: i64) -> Result<(), i64> {
        let minute = now.div_euclid(60_000);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(key.to_string()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return Err((minute + 1) * 60_000 - now);
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Adds to the caller's usage counters of today. A failed write is logged,
/// not surfaced: usage is reporting, not a gate.
pub async fn record_usage(state: &ApiState, caller: &Caller, counts: Vec<(String, i64)>) {
    let day = utc_day(now_ms());
    if let Err(e) = state
        .inner
        .access
        .add_usage(&caller.tenant, &caller.key_id, &day, &counts)
        .await
    {
        tracing::warn!(error = %e, "usage not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: Option<&str>) -> Caller {
        Caller {
            tenant: "acme".into(),
            key_id: "k".into(),
            scopes: None,
            retain_data: false,
            user: user.map(str::to_string),
        }
    }

    #[test]
    fn the_client_address_is_counted_from_the_trusted_end() {
        let parts = |lines: &[&str]| {
            let mut request = axum::http::Request::builder();
            for line in lines {
                request = request.header("x-forwarded-for", *line);
            }
            request.body(()).unwrap().into_parts().0
        };
        let from =
            |lines: &[&str], hops| client_address(&parts(lines), Some("x-forwarded-for"), hops);
        assert_eq!(from(&["6.6.6.6, 1.2.3.4"], 1), "1.2.3.4");
        assert_eq!(
            from(&["6.6.6.6", "1.2.3.4"], 1),
            "1.2.3.4",
            "a proxy's own line"
        );
        assert_eq!(from(&["6.6.6.6, 1.2.3.4, 10.0.0.2"], 2), "1.2.3.4");
        // Fewer entries than trusted hops, or no header: the peer (none
        // here).
        assert_eq!(from(&["1.2.3.4"], 2), "unknown");
        assert_eq!(from(&[], 1), "unknown");
        assert_eq!(client_address(&parts(&["1.2.3.4"]), None, 1), "unknown");
    }

    #[test]
    fn a_client_token_acts_for_its_own_user_only() {
        let missing = || ApiError::bad_request("missing_field", "user_id");
        let bound = caller(Some("u1"));
        assert_eq!(bound.acting_for(None, missing).unwrap(), "u1");
        assert_eq!(bound.acting_for(Some("u1"), missing).unwrap(), "u1");
        let other = bound.acting_for(Some("u2"), missing).unwrap_err();
        assert_eq!(
            (other.status, other.code.as_str()),
            (StatusCode::FORBIDDEN, "user_not_allowed")
        );
        let key = caller(None);
        assert_eq!(key.acting_for(Some("u2"), missing).unwrap(), "u2");
        assert_eq!(
            key.acting_for(None, missing).unwrap_err().code,
            "missing_field"
        );
    }

    #[test]
    fn limits_per_key_and_minute() {
        let limiter = RateLimiter::new(2);
        // 10 s into a minute.
        let t = 1_800_000_010_000;
        assert_eq!(limiter.admit("a", t), Ok(()));
        assert_eq!(limiter.admit("a", t + 1), Ok(()));
        assert_eq!(limiter.admit("a", t + 2), Err(50_000 - 2));
        assert_eq!(limiter.admit("b", t + 3), Ok(()), "keys are independent");
        assert_eq!(limiter.admit("a", t + 50_000), Ok(()), "next minute");
    }
}
