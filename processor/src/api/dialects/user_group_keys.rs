//! The user-group access-key dialect (seed 003): an account administrator
//! lists, creates, enables, disables and deletes the keys a user group's
//! applications call the voice API with. A user group is a tenant; its keys
//! are the tenant's API keys that cannot administer keys. The administrator
//! signs in with HTTP Basic, `cloudID/username` and a `keys:admin` key of the
//! same tenant as password; parameters come in the query or a form body.
//!
//! Keys are hashed at rest, so a listing names each key by its public
//! handle (`tmb_<id>`, the start of the whole key); the whole key is shown
//! once, by `create`. `modify` and `delete` take either.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::auth::{self, Caller};
use crate::api::keys::{self, named_key_id, public_handle};
use crate::api::{ApiError, ApiState};
use crate::domain::{ApiKey, Scope, now_ms, utc_rfc3339};

/// Where the routes live.
const BASE: &str = "/voice_biometrics/v1/user_group/key";

/// Label of the keys this dialect creates.
const KEY_NAME: &str = "user_group";

/// What a user-group key may do: register and verify users, and the
/// consent and profile reads that go with them; never administer keys.
const KEY_SCOPES: [Scope; 5] = [
    Scope::Enroll,
    Scope::Verify,
    Scope::ConsentRead,
    Scope::ConsentWrite,
    Scope::ProfilesRead,
];

/// The key routes; each answers GET and POST alike.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(&format!("{BASE}/list"), get(list).post(list))
        .route(&format!("{BASE}/create"), get(create).post(create))
        .route(&format!("{BASE}/modify"), get(modify).post(modify))
        .route(&format!("{BASE}/delete"), get(delete).post(delete))
}

/// `YYYY-MM-DD_hh:mm:ss` (UTC), the dialect's date format.
fn vendor_datetime(ms: i64) -> String {
    let rfc3339 = utc_rfc3339(ms);
    format!("{}_{}", &rfc3339[..10], &rfc3339[11..19])
}

/// An error in the dialect's shape: `{"error": {code, text, link,
/// datetime}, "request": {url, datetime}}`.
#[derive(Debug)]
struct VendorError {
    status: StatusCode,
    text: String,
    url: String,
    retry_after_secs: Option<i64>,
}

impl VendorError {
    fn new(status: StatusCode, text: impl Into<String>, url: &str) -> Self {
        Self {
            status,
            text: text.into(),
            url: url.to_string(),
            retry_after_secs: None,
        }
    }

    fn bad_parameter(text: impl std::fmt::Display, url: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Bad parameter: {text}"),
            url,
        )
    }

    fn not_found(text: impl std::fmt::Display, url: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("Not found: {text}"), url)
    }

    /// A native error (auth, scope, limits, store) in the dialect's shape.
    fn from_api(e: ApiError, url: &str) -> Self {
        let retry_after_secs = e
            .extra
            .get("retryAfterMs")
            .and_then(Value::as_i64)
            .map(|ms| ((ms + 999) / 1000).max(1));
        Self {
            retry_after_secs,
            ..Self::new(e.status, e.message, url)
        }
    }
}

impl IntoResponse for VendorError {
    fn into_response(self) -> Response {
        let now = vendor_datetime(now_ms());
        // The action's entry in the served OpenAPI document.
        let action = self.url.rsplit('/').next().unwrap_or_default();
        let link =
            format!("/openapi.json#/paths/~1voice_biometrics~1v1~1user_group~1key~1{action}");
        let body = json!({
            "error": {
                "code": self.status.as_u16(),
                "text": self.text,
                "link": link,
                "datetime": now,
            },
            "request": {"url": self.url, "datetime": now},
        });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"timbre\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The signed-in administrator: a `keys:admin` key presented as the Basic
/// password under a `cloudID/username` user name.
struct Admin {
    caller: Caller,
    url: String,
}

impl FromRequestParts<ApiState> for Admin {
    type Rejection = VendorError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, VendorError> {
        let url = parts.uri.path().to_string();
        let fail = |e: ApiError| VendorError::from_api(e, &url);
        auth::admit_address(state, parts).map_err(fail)?;
        let unauthorized = || {
            VendorError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: HTTP Basic credentials cloudID/username:api_access_key are required",
                &url,
            )
        };
        let (user, password) = auth::basic_credentials(parts).ok_or_else(unauthorized)?;
        let well_formed_user = user
            .split_once('/')
            .is_some_and(|(cloud, name)| !cloud.is_empty() && !name.is_empty());
        // Only an API key signs in here, never an OAuth2 token.
        if !well_formed_user || keys::parse(&password).is_none() {
            return Err(unauthorized());
        }
        let caller = auth::admit(state, &password).await.map_err(fail)?;
        caller.require(Scope::KeysAdmin).map_err(fail)?;
        Ok(Admin { caller, url })
    }
}

/// Largest form body read (the parameters are a few short strings).
const FORM_LIMIT: usize = 16 * 1024;

/// A signed-in administrator and the parameters of the call.
struct Call {
    admin: Admin,
    params: Params,
}

impl FromRequest<ApiState> for Call {
    type Rejection = VendorError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, VendorError> {
        let (mut parts, body) = request.into_parts();
        let admin = Admin::from_request_parts(&mut parts, state).await?;
        let body = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            VendorError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload too large: the form body exceeds {FORM_LIMIT} bytes"),
                &admin.url,
            )
        })?;
        let params = Params::read(&parts.uri, &parts.headers, &body, &admin.url)?;
        Ok(Call { admin, params })
    }
}

/// The parameters of a call: the query string, then a form body.
#[derive(Debug)]
struct Params(Vec<(String, String)>);

impl Params {
    fn read(uri: &Uri, headers: &HeaderMap, body: &[u8], url: &str) -> Result<Self, VendorError> {
        let bad = |what: &str| VendorError::bad_parameter(what, url);
        let mut pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(uri.query().unwrap_or_default())
                .map_err(|_| bad("the query string is not URL-encoded"))?;
        if !body.is_empty() {
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err(bad(
                    "parameters go in the query or an application/x-www-form-urlencoded body",
                ));
            }
            let body: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| bad("the form body is not URL-encoded"))?;
            pairs.extend(body);
        }
        Ok(Self(pairs))
    }

    /// A required, non-empty parameter (the first if repeated).
    fn required(&self, name: &str, url: &str) -> Result<&str, VendorError> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| VendorError::bad_parameter(format!("{name} is required"), url))
    }

    /// A required `"true"` or `"false"`.
    fn flag(&self, name: &str, url: &str) -> Result<bool, VendorError> {
        match self.required(name, url)? {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(VendorError::bad_parameter(
                format!("{name} must be \"true\" or \"false\""),
                url,
            )),
        }
    }
}

/// The caller's own user group; any other name is not found (another
/// tenant's groups are never confirmed to exist).
fn own_group<'a>(admin: &'a Admin, params: &Params) -> Result<&'a str, VendorError> {
    let name = params.required("user_group_name", &admin.url)?;
    if name != admin.caller.tenant {
        return Err(VendorError::not_found(
            format!("user group {name} was not found"),
            &admin.url,
        ));
    }
    Ok(&admin.caller.tenant)
}

/// A store failure as the native API answers it (`503`), in the dialect's shape.
fn store_failed(e: crate::ports::StoreError, url: &str) -> VendorError {
    VendorError::from_api(e.into(), url)
}

/// A user-group key: a key of the tenant that cannot administer keys.
fn is_user_group_key(key: &ApiKey) -> bool {
    !key.allows(Scope::KeysAdmin)
}

/// The user-group key named by `user_group_key`, in the caller's group.
async fn named_key(
    state: &ApiState,
    admin: &Admin,
    params: &Params,
) -> Result<ApiKey, VendorError> {
    let url = &admin.url;
    let named = params.required("user_group_key", url)?;
    let key_id = named_key_id(named)
        .ok_or_else(|| VendorError::bad_parameter("user_group_key is not a key", url))?;
    let key = state
        .inner
        .access
        .api_key(key_id)
        .await
        .map_err(|e| store_failed(e, url))?;
    key.filter(|k| k.tenant == admin.caller.tenant && is_user_group_key(k))
        .ok_or_else(|| key_not_found(key_id, url))
}

/// `404` naming the key by its handle (never echoing a secret).
fn key_not_found(key_id: &str, url: &str) -> VendorError {
    VendorError::not_found(
        format!("user group key {} was not found", public_handle(key_id)),
        url,
    )
}

/// A key as the dialect shows it; `whole` only right after creation.
fn key_object(key: &ApiKey, whole: Option<&str>) -> Value {
    json!({
        "user_group_key": whole.map_or_else(|| public_handle(&key.key_id), str::to_string),
        "created": vendor_datetime(key.created_at),
        "enabled": key.enabled,
        "retain_data": key.retain_data,
    })
}

async fn list(
    State(state): State<ApiState>,
    Call { admin, params }: Call,
) -> Result<Json<Value>, VendorError> {
    let tenant = own_group(&admin, &params)?;
    let keys = state
        .inner
        .access
        .api_keys(tenant)
        .await
        .map_err(|e| store_failed(e, &admin.url))?;
    let keys: Vec<Value> = keys
        .iter()
        .filter(|k| is_user_group_key(k))
        .map(|k| key_object(k, None))
        .collect();
    Ok(Json(json!({ "user_group_keys": keys })))
}

async fn create(
    State(state): State<ApiState>,
    Call { admin, params }: Call,
) -> Result<Json<Value>, VendorError> {
    let tenant = own_group(&admin, &params)?;
    // Like the vendor's keys, these do not expire: they are disabled or
    // deleted here.
    let minted = state.inner.keys.mint(
        tenant,
        KEY_NAME,
        now_ms(),
        0,
        Some(KEY_SCOPES.into_iter().collect()),
    );
    state
        .inner
        .access
        .put_api_key(&minted.record)
        .await
        .map_err(|e| store_failed(e, &admin.url))?;
    tracing::info!(key_id = %minted.record.key_id, by = %admin.caller.key_id, "user group key created");
    Ok(Json(key_object(&minted.record, Some(&minted.plaintext))))
}

async fn modify(
    State(state): State<ApiState>,
    Call { admin, params }: Call,
) -> Result<Json<Value>, VendorError> {
    let key = named_key(&state, &admin, &params).await?;
    let enabled = params.flag("enabled", &admin.url)?;
    let retain_data = params.flag("retain_data", &admin.url)?;
    let changed = state
        .inner
        .access
        .modify_api_key(&admin.caller.tenant, &key.key_id, enabled, retain_data)
        .await
        .map_err(|e| store_failed(e, &admin.url))?;
    if !changed {
        // Deleted between the read and the write.
        return Err(key_not_found(&key.key_id, &admin.url));
    }
    tracing::info!(key_id = %key.key_id, enabled, retain_data, by = %admin.caller.key_id, "user group key changed");
    Ok(Json(key_object(
        &ApiKey {
            enabled,
            retain_data,
            ..key
        },
        None,
    )))
}

async fn delete(
    State(state): State<ApiState>,
    Call { admin, params }: Call,
) -> Result<Json<Value>, VendorError> {
    let key = named_key(&state, &admin, &params).await?;
    let deleted = state
        .inner
        .access
        .delete_api_key(&admin.caller.tenant, &key.key_id)
        .await
        .map_err(|e| store_failed(e, &admin.url))?;
    if !deleted {
        return Err(key_not_found(&key.key_id, &admin.url));
    }
    tracing::info!(key_id = %key.key_id, by = %admin.caller.key_id, "user group key deleted");
    Ok(Json(json!({ "deleted": vendor_datetime(now_ms()) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_with_an_underscore() {
        assert_eq!(vendor_datetime(1_610_700_984_000), "2021-01-15_08:56:24");
        assert_eq!(vendor_datetime(0), "1970-01-01_00:00:00");
    }

    #[test]
    fn parameters_come_from_the_query_and_a_form_body() {
        let uri: Uri = "/x/modify?user_group_key=tmb_0123456789abcdef&enabled=true"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let params =
            Params::read(&uri, &headers, b"retain_data=false&enabled=maybe", "/x").unwrap();
        assert_eq!(
            params.required("user_group_key", "/x").unwrap(),
            "tmb_0123456789abcdef"
        );
        // The query wins over the body.
        assert!(params.flag("enabled", "/x").unwrap());
        assert!(!params.flag("retain_data", "/x").unwrap());
        let missing = params.required("user_group_name", "/x").unwrap_err();
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(missing.text, "Bad parameter: user_group_name is required");

        let bad_flag = Params::read(
            &"/x?enabled=yes".parse().unwrap(),
            &HeaderMap::new(),
            b"",
            "/x",
        )
        .unwrap()
        .flag("enabled", "/x")
        .unwrap_err();
        assert!(
            bad_flag.text.contains("\"true\" or \"false\""),
            "{}",
            bad_flag.text
        );

        // A JSON body is not a form.
        let err = Params::read(&uri, &HeaderMap::new(), b"{\"enabled\":true}", "/x").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn admin_keys_are_not_user_group_keys() {
        let hasher = crate::api::keys::KeyHasher::new(b"pepper");
        let user_group = hasher.mint("acme", KEY_NAME, 1, 0, Some(KEY_SCOPES.into()));
        assert!(is_user_group_key(&user_group.record));
        let admin = hasher.mint("acme", "admin", 1, 0, Some([Scope::KeysAdmin].into()));
        assert!(!is_user_group_key(&admin.record));
        let legacy = hasher.mint("acme", "legacy", 1, 0, None);
        assert!(
            !is_user_group_key(&legacy.record),
            "every scope: an admin key"
        );
    }
}
