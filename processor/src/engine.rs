//! Wiring: builds the ports from configuration, runs the processor, the
//! HTTP adapter and their operations endpoints (`ops`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiParts, ApiState};
use crate::backends::{connect_bus_as, connect_store};
use crate::config::Config;
use crate::domain::Policies;
use crate::liveness::{ReplayDetector, SyntheticSpeechCheck};
use crate::metrics::Metrics;
use crate::model::silero::SileroVad;
use crate::model::{SpeakerModel, default_model_dir};
use crate::ops::{self, OpsState};
use crate::phrase::{EncoderSpan, PhraseAnalyser, load_recogniser};
use crate::pipeline::{CohortSettings, Processor, ProcessorConfig, TailSettings};
use crate::ports::{AccessStore, Analyser, Bus, Embedder, SpeechDetector, Store};
use crate::scoring::ScoringPool;
use crate::topics::{TopicNames, catalogue};

/// Startup failures of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bus connection or topic setup failed.
    #[error(transparent)]
    Bus(#[from] crate::ports::BusError),
    /// Store connection or migration failed.
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The phrase recogniser could not be loaded.
    #[error(transparent)]
    Phrase(#[from] crate::phrase::PhraseError),
    /// A start-up task failed unexpectedly (a loader panicked).
    #[error("start-up failed: {0}")]
    Startup(String),
    /// The operations listener could not bind.
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
}

/// The connected ports of one engine.
pub struct Engine {
    /// Bus of the deployment.
    pub bus: Arc<dyn Bus>,
    /// Store of the deployment.
    pub store: Arc<dyn Store>,
    /// API access state (same store connection).
    pub access: Arc<dyn AccessStore>,
    /// Topic names.
    pub topics: TopicNames,
    /// Metrics shared by every component.
    pub metrics: Metrics,
    config: Config,
}

impl Engine {
    /// Connects the bus and the store named by `config`.
    pub async fn connect(config: Config) -> Result<Self, EngineError> {
        let bus = connect_bus_as(&config.bus, config.instance_id.as_deref())?;
        let stores = connect_store(&config.store).await?;
        Ok(Self {
            bus,
            store: stores.state,
            access: stores.access,
            topics: TopicNames::with_prefix(&config.topic_prefix),
            metrics: Metrics::new(),
            config,
        })
    }

    /// Creates missing topics (replication capped at `max_replication`);
    /// returns drift lines.
    pub async fn apply_topics(
        &self,
        max_replication: Option<i16>,
    ) -> Result<Vec<String>, EngineError> {
        Ok(self
            .bus
            .ensure_topics(&catalogue(&self.config.topic_prefix, max_replication))
            .await?)
    }

    /// The HTTP adapter (`timbre serve`): the API on `api.listen` and the
    /// operations endpoints on `listen`, until `shutdown`.
    pub async fn serve_adapter(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        let api = bind(self.config.api.listen).await?;
        self.serve_adapter_on(api, bind(self.config.listen).await?, shutdown)
            .await
    }

    /// [`Engine::serve_adapter`] on bound listeners; either server failing
    /// stops both.
    pub async fn serve_adapter_on(
        &self,
        api: tokio::net::TcpListener,
        ops: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        let state = OpsState::new(
            self.bus.clone(),
            self.store.clone(),
            self.metrics.clone(),
            None,
        );
        let ops_addr = self.config.listen;
        let ops = ops::serve(state, ops, shutdown.clone());
        both(
            &shutdown,
            async { ops.await.map_err(|e| EngineError::Listen(ops_addr, e)) },
            self.serve_api_on(api, shutdown.clone()),
        )
        .await
    }

    /// Serves the HTTP API on `api.listen` until `shutdown`.
    pub async fn serve_api(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        self.serve_api_on(bind(self.config.api.listen).await?, shutdown)
            .await
    }

    /// Serves the HTTP API on a bound listener until `shutdown`.
    pub async fn serve_api_on(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "api listening");
        }
        let state = ApiState::new(
            ApiParts {
                bus: self.bus.clone(),
                store: self.store.clone(),
                access: self.access.clone(),
                topics: self.topics.clone(),
                metrics: self.metrics.clone(),
            },
            &self.config,
        );
        Ok(crate::api::serve(state, listener, shutdown).await?)
    }

    /// Runs the processor and the API together until `shutdown`; either one
    /// failing stops both.
    pub async fn run_with_api(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        both(
            &shutdown,
            self.run(shutdown.clone()),
            self.serve_api(shutdown.clone()),
        )
        .await
    }

    /// Runs the processor and the operations endpoints on `listen` until
    /// `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        self.run_on(bind(self.config.listen).await?, shutdown).await
    }

    /// [`Engine::run`] with the operations endpoints on a bound listener.
    pub async fn run_on(
        &self,
        ops_listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        let config = self.config.clone();
        let models = tokio::task::spawn_blocking(move || load_models(&config))
            .await
            .map_err(|e| EngineError::Startup(e.to_string()))??;
        let LoadedModels {
            model,
            extra,
            analysers,
            speech,
        } = models;
        let mut pool = ScoringPool::new(
            model,
            self.config.workers,
            self.config.scoring_queue,
            self.config.audio,
        )
        .with_models(extra)
        .with_analysers(analysers);
        if let Some(detector) = speech {
            pool = pool.with_speech_detector(detector);
        }
        let pool = Arc::new(pool);
        let score_norm = self
            .config
            .calibration
            .enabled
            .then(|| crate::scoring::bundled_score_norm(&pool.model_id()))
            .flatten()
            .map(Arc::new);
        tracing::info!(calibrated = score_norm.is_some(), "voice scores");
        if let Some(norm) = &score_norm {
            check_policies(norm, &self.config);
        }
        let processor = Processor::new(
            self.bus.clone(),
            self.store.clone(),
            pool.clone(),
            ProcessorConfig {
                group: self.config.group.clone(),
                topics: self.topics.clone(),
                lanes: self.config.lanes,
                retry_budget: std::time::Duration::from_secs(self.config.retry_budget_secs),
                max_in_flight_bytes: self.config.max_in_flight_bytes,
                score_norm: score_norm.clone(),
                cohorts: CohortSettings {
                    size: self.config.calibration.tenant_cohort,
                    refresh: std::time::Duration::from_secs(
                        self.config.calibration.tenant_cohort_refresh_secs,
                    ),
                },
                tails: TailSettings {
                    per_verification: self.config.calibration.tenant_impostor_samples,
                    ..TailSettings::default()
                },
                policies: Policies {
                    default: self.config.policy.clone(),
                    tenants: self.config.tenants.clone(),
                },
                ..ProcessorConfig::default()
            },
            self.metrics.clone(),
        );
        let state = OpsState::new(
            self.bus.clone(),
            self.store.clone(),
            self.metrics.clone(),
            Some(pool),
        );
        let server = tokio::spawn(ops::serve(state, ops_listener, shutdown.clone()));
        let result = processor.run(shutdown.clone()).await;
        shutdown.cancel();
        let _ = server.await;
        Ok(result?)
    }
}

/// The networks a processor scores with.
struct LoadedModels {
    model: Arc<SpeakerModel>,
    extra: Vec<Arc<dyn Embedder>>,
    analysers: Vec<Arc<dyn Analyser>>,
    speech: Option<Arc<dyn SpeechDetector>>,
}

/// Loads every configured network, each on its own thread: a restarted
/// processor reads again only once they are in memory, so its outage lasts
/// the slowest load, not their sum.
fn load_models(config: &Config) -> Result<LoadedModels, EngineError> {
    let dir = config.model_dir.clone().unwrap_or_else(default_model_dir);
    let started = std::time::Instant::now();
    let (speakers, phrase, synthetic) = std::thread::scope(|scope| {
        let speakers = scope.spawn(|| {
            let mut model = SpeakerModel::load(&dir)?;
            model.set_matmul(config.matmul)?;
            let model = Arc::new(model);
            tracing::info!(
                model = %model.id(),
                matmul = ?model.matmul(),
                workers = config.workers,
                millis = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            let mut extra: Vec<Arc<dyn Embedder>> = Vec::new();
            for m in &config.extra_models {
                let mut loaded =
                    SpeakerModel::load_named(m.dir.as_deref().unwrap_or(&dir), &m.name)?;
                loaded.set_matmul(config.matmul)?;
                tracing::info!(model = %loaded.id(), "extra model loaded");
                extra.push(Arc::new(loaded));
            }
            Ok::<_, EngineError>((model, extra))
        });
        let phrase = scope.spawn(|| {
            let recogniser = config
                .phrase
                .enabled
                .then(|| load_recogniser(&dir, EncoderSpan::OwnLength))
                .transpose()?;
            if recogniser.is_some() {
                tracing::info!(
                    model = crate::phrase::MODEL_FOLDER,
                    millis = started.elapsed().as_millis() as u64,
                    "phrase recogniser loaded"
                );
            }
            Ok::<_, EngineError>(recogniser)
        });
        let synthetic = scope.spawn(|| {
            let check = config
                .synthetic
                .enabled
                .then(|| SyntheticSpeechCheck::load(&dir, config.synthetic.thresholds))
                .transpose()?;
            if check.is_some() {
                tracing::info!(
                    threshold = config.synthetic.thresholds.threshold,
                    millis = started.elapsed().as_millis() as u64,
                    "synthetic-speech check loaded"
                );
            }
            Ok::<_, EngineError>(check)
        });
        let joined = |e: Box<dyn std::any::Any + Send>| {
            EngineError::Startup(format!("a model loader panicked: {e:?}"))
        };
        Ok::<_, EngineError>((
            speakers.join().map_err(joined)?,
            phrase.join().map_err(joined)?,
            synthetic.join().map_err(joined)?,
        ))
    })?;
    let (model, extra) = speakers?;
    let mut analysers: Vec<Arc<dyn Analyser>> = Vec::new();
    if let Some(recogniser) = phrase? {
        analysers.push(Arc::new(PhraseAnalyser::new(
            recogniser,
            config.phrase.thresholds,
        )));
    }
    // Cheap (under a millisecond per second of audio); it runs where a
    // tenant keeps fingerprints (`policy.replay_memory_days`).
    analysers.push(Arc::new(ReplayDetector::default()));
    if let Some(check) = synthetic? {
        analysers.push(Arc::new(check));
    }
    // A few milliseconds to load: no thread of its own.
    let speech = if config.vad.enabled {
        let vad = SileroVad::load_from_dir(&dir)?;
        tracing::info!("speech detector loaded");
        Some(Arc::new(vad) as Arc<dyn SpeechDetector>)
    } else {
        None
    };
    tracing::info!(
        millis = started.elapsed().as_millis() as u64,
        "models ready"
    );
    Ok(LoadedModels {
        model,
        extra,
        analysers,
        speech,
    })
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, EngineError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| EngineError::Listen(addr, e))
}

/// Runs two servers until `shutdown`; either one ending (failing, say)
/// stops the other too.
async fn both(
    shutdown: &CancellationToken,
    first: impl std::future::Future<Output = Result<(), EngineError>>,
    second: impl std::future::Future<Output = Result<(), EngineError>>,
) -> Result<(), EngineError> {
    let stop_both = |r: Result<(), EngineError>| {
        shutdown.cancel();
        r
    };
    let (first, second) = tokio::join!(async { stop_both(first.await) }, async {
        stop_both(second.await)
    });
    first.and(second)
}

/// Warns about policy settings a calibrated model ignores or cannot honour.
fn check_policies(norm: &crate::domain::calibration::ScoreNorm, config: &Config) {
    let default = crate::domain::Policy::default();
    let policies = std::iter::once(("(default)", &config.policy))
        .chain(config.tenants.iter().map(|(t, p)| (t.as_str(), p)));
    for (tenant, policy) in policies {
        if policy.accept_far < norm.lowest_far() {
            tracing::warn!(
                tenant,
                accept_far = policy.accept_far,
                lowest = norm.lowest_far(),
                "accept_far is below the calibration's curve: the lowest rate's threshold applies"
            );
        }
        if policy.accept_threshold != default.accept_threshold
            || policy.reject_threshold != default.reject_threshold
        {
            tracing::warn!(
                tenant,
                "cosine thresholds apply only to models without a calibration: set accept_far and reject_far"
            );
        }
    }
}
