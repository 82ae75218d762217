//! The operations listener (`listen`): `/healthz`, `/readyz`, `/metrics`.
//! Both the processor and the HTTP adapter serve it on its own port, apart
//! from the API: probes and scrapers need no key, and the public port
//! answers neither.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::ports::{Bus, Store};
use crate::scoring::ScoringPool;

/// How long a readiness answer is reused: a probe storm must not turn into
/// a storm of broker metadata requests and store queries.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was taken.
type Readiness = Option<(Instant, Result<(), String>)>;

/// What the operations routes look at.
#[derive(Clone)]
pub struct OpsState {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    pool: Option<Arc<ScoringPool>>,
    readiness: Arc<Mutex<Readiness>>,
}

impl OpsState {
    /// Operations state of a component; `pool` reports the scoring queue.
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        pool: Option<Arc<ScoringPool>>,
    ) -> Self {
        Self {
            bus,
            store,
            metrics,
            pool,
            readiness: Arc::default(),
        }
    }

    fn cached(&self) -> Option<Result<(), String>> {
        let cache = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < READINESS_TTL)
            .map(|(_, r)| r.clone())
    }

    /// Whether the bus and the store answer, at most once per TTL.
    async fn readiness(&self) -> Result<(), String> {
        if let Some(r) = self.cached() {
            return r;
        }
        let (bus, store) = tokio::join!(self.bus.ping(), self.store.ping());
        let why: Vec<String> = [
            bus.err().map(|e| e.to_string()),
            store.err().map(|e| e.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let result = if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        };
        *self.readiness.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), result.clone()));
        result
    }
}

/// The operations routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the operations routes on `listener` until `shutdown`.
pub async fn serve(
    state: OpsState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operations endpoints listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(s): State<OpsState>) -> (StatusCode, String) {
    match s.readiness().await {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(s): State<OpsState>) -> String {
    if let Some(pool) = &s.pool {
        s.metrics.scoring_queue_depth.set(pool.depth() as i64);
    }
    s.metrics.render()
}
