//! The HTTP adapter: every request becomes a job event on the bus and every
//! response is built from that job's decision event. It holds no biometric
//! logic; it authenticates, limits, publishes, waits and translates.
//!
//! - [`keys`]: API keys, hashed at rest.
//! - [`auth`]: the authenticated caller, per-key rate limits, usage counters.
//! - [`tokens`]: single-use voice tokens (JWT).
//! - `jobs`: the job round trip over the shared [`JobClient`].
//! - `router`: middleware and the route modules, each a room of its own:
//!   `v1` (native API), `brief` (the product brief's routes), `ops`
//!   (health, metrics, OpenAPI) and `dialects/` (vendor-compatible APIs).
//! - `views`, `error`: the JSON shapes of decisions and errors.

pub mod auth;
mod brief;
pub mod client_tokens;
mod cors;
pub mod dialects;
mod error;
mod form;
mod jobs;
mod key_admin;
pub mod oauth;

pub use key_admin::key_view;
pub mod keys;
mod ops;
mod router;
pub mod tokens;
mod users;
mod v1;
mod views;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use timbre_schemas::Limits;

pub use error::ApiError;

use crate::client::JobClient;
use crate::config::{ApiConfig, Config};
use crate::domain::Policies;
use crate::metrics::Metrics;
use crate::ports::{AccessStore, Bus, Store};
use crate::topics::TopicNames;

/// The OpenAPI 3.1 document of this API (tested against the router).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    access: Arc<dyn AccessStore>,
    client: JobClient,
    limits: Limits,
    policies: Policies,
    keys: keys::KeyHasher,
    tokens: tokens::TokenSigner,
    limiter: auth::RateLimiter,
    oauth: oauth::OAuthSigner,
    client_tokens: client_tokens::ClientTokenSigner,
    /// Requests per client address (local to the replica: it runs before
    /// any store access).
    address_limiter: auth::RateLimiter,
    /// Permits of request-body bytes in flight (`api.max_in_flight_bytes`).
    body_bytes: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    config: ApiConfig,
}

/// The ports and settings the adapter is built from.
pub struct ApiParts {
    /// Bus the jobs go to and decisions come from.
    pub bus: Arc<dyn Bus>,
    /// Biometric state (decisions, profiles) to read back.
    pub store: Arc<dyn Store>,
    /// Keys, sessions, spent tokens, usage.
    pub access: Arc<dyn AccessStore>,
    /// Topic names of the deployment.
    pub topics: TopicNames,
    /// Metrics the API records (served by the operations listener).
    pub metrics: Metrics,
}

impl ApiState {
    /// Builds the adapter state from the ports and the configuration.
    pub fn new(parts: ApiParts, config: &Config) -> Self {
        let mut api = config.api.clone();
        api.cors_origins.retain(|origin| {
            let ok = cors::listable(origin);
            if !ok {
                tracing::warn!(%origin, "api.cors_origins entry ignored: not scheme://host[:port]");
            }
            ok
        });
        if api.key_pepper.is_empty() {
            tracing::warn!("api.key_pepper is unset: api key hashes are not peppered");
        }
        if api.token_signing_key.is_empty() {
            tracing::warn!(
                "api.token_signing_key is unset: voice tokens verify on this replica only"
            );
        }
        Self {
            inner: Arc::new(Inner {
                client: JobClient::new(parts.bus.clone(), parts.topics, Some(parts.store.clone())),
                keys: keys::KeyHasher::new(api.key_pepper.expose().as_bytes()),
                tokens: tokens::TokenSigner::new(
                    api.token_signing_key.expose().as_bytes(),
                    api.token_ttl_secs,
                ),
                limiter: auth::RateLimiter::new(api.rate_limit_per_minute),
                oauth: oauth::OAuthSigner::new(
                    api.token_signing_key.expose().as_bytes(),
                    api.access_token_ttl_secs,
                    api.refresh_token_ttl_secs,
                ),
                client_tokens: client_tokens::ClientTokenSigner::new(
                    api.token_signing_key.expose().as_bytes(),
                ),
                address_limiter: auth::RateLimiter::new(api.address_rate_limit_per_minute),
                // Never below one largest upload, or that upload could never pass.
                body_bytes: Arc::new(tokio::sync::Semaphore::new(
                    api.max_in_flight_bytes.max(api.max_upload_bytes),
                )),
                store: parts.store,
                access: parts.access,
                limits: Limits::default(),
                policies: Policies {
                    default: config.policy.clone(),
                    tenants: config.tenants.clone(),
                },
                metrics: parts.metrics,
                config: api,
            }),
        }
    }

    /// The key hasher (for minting keys outside the server, e.g. the CLI).
    pub fn keys(&self) -> &keys::KeyHasher {
        &self.inner.keys
    }

    fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.wait_timeout_ms)
    }

    /// The wait of a challenge answer: a second short of the request
    /// timeout (so the answer beats the timeout layer), never below the
    /// usual wait.
    fn session_wait_timeout(&self) -> Duration {
        let config = &self.inner.config;
        Duration::from_millis(
            config
                .request_timeout_ms
                .saturating_sub(1_000)
                .max(config.wait_timeout_ms),
        )
    }
}

/// Serves the API on `listener` until `shutdown`, then drains in-flight
/// requests.
pub async fn serve(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::ports::BusError> {
    let tail = state.inner.client.start(shutdown.clone()).await?;
    let app: Router = router::router(state);
    let graceful = shutdown.clone();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "api server failed");
    }
    shutdown.cancel();
    let _ = tail.await;
    Ok(())
}
