//! The stream processor: consume → decode → load → score → decide → commit
//! → emit → ack.
//!
//! ```text
//! bus ──► reader ──(bounded lane queues, by tenant/user)──► lanes: job ──► scoring pool (OS threads)
//!           ▲  pause/resume partitions when a lane is full    │   rules (domain, pure)
//!           └──── finished offsets ◄── emit: store.commit + decision (+ dead letter)
//! ```
//!
//! - [`reader`](self): subscription, lanes, park/unpark, revokes, offsets.
//! - `job`: decode and validate, idempotency, load state, score, call the
//!   domain rule, retry transient failures.
//! - `emit`: the one path out: dead letter, commit, decision, metrics.
//!
//! A job's offset is committed only after its state and decision are
//! persisted and the decision is published (at-least-once). Redelivery is
//! harmless: a job whose decision is already stored republishes that same
//! decision and applies nothing again.

mod cohorts;
mod emit;
mod job;
mod offsets;
mod reader;
mod tails;
mod user_locks;

use std::sync::Arc;
use std::time::Duration;

use timbre_schemas::{Limits, Registry};

pub use cohorts::CohortSettings;
pub use tails::TailSettings;

use crate::domain::Policies;
use crate::domain::calibration::ScoreNorm;
use crate::metrics::Metrics;
use crate::ports::{Bus, Store};
use crate::scoring::ScoringPool;
use crate::topics::TopicNames;

/// Processor settings.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Consumer group of the processors.
    pub group: String,
    /// Topic names.
    pub topics: TopicNames,
    /// Concurrent jobs; jobs of one user always share a lane, so they run in order.
    pub lanes: usize,
    /// Jobs queued per lane before the reader pauses the partition.
    pub lane_queue: usize,
    /// Field limits of incoming events.
    pub limits: Limits,
    /// Decision policies.
    pub policies: Policies,
    /// How long a job retries transient failures before it ends as an error
    /// decision (bus failures excepted).
    pub retry_budget: Duration,
    /// Message bytes in flight (queued, parked, being scored) at which the
    /// reader stops reading until jobs finish.
    pub max_in_flight_bytes: usize,
    /// Score normalisation of the default model (none: raw cosine scores).
    pub score_norm: Option<Arc<ScoreNorm>>,
    /// The tenants' voiceprints that join the normalisation cohort.
    pub cohorts: CohortSettings,
    /// The tenants' own impostor tails, which tighten the bundled lines.
    pub tails: TailSettings,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group: "timbre-processor".into(),
            topics: TopicNames::with_prefix(""),
            lanes: 32,
            lane_queue: 4,
            limits: Limits::default(),
            policies: Policies::default(),
            retry_budget: Duration::from_secs(300),
            max_in_flight_bytes: 128 << 20,
            score_norm: None,
            cohorts: CohortSettings::default(),
            tails: TailSettings::default(),
        }
    }
}

/// The processor: one per process, shared by its tasks.
pub struct Processor {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    scoring: Arc<ScoringPool>,
    registry: Registry,
    topics: TopicNames,
    policies: Policies,
    limits: Limits,
    metrics: Metrics,
    group: String,
    lanes: usize,
    lane_queue: usize,
    retry_budget: Duration,
    max_in_flight_bytes: usize,
    user_locks: user_locks::UserLocks,
    score_norm: Option<Arc<ScoreNorm>>,
    cohorts: cohorts::TenantCohorts,
    tails: Arc<tails::ImpostorTails>,
}

impl Processor {
    /// Wires a processor from its ports.
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        scoring: Arc<ScoringPool>,
        config: ProcessorConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            store,
            scoring,
            registry: Registry::new(),
            topics: config.topics,
            policies: config.policies,
            limits: config.limits,
            metrics,
            group: config.group,
            lanes: config.lanes.max(1),
            lane_queue: config.lane_queue.max(1),
            retry_budget: config.retry_budget,
            max_in_flight_bytes: config.max_in_flight_bytes.max(1),
            user_locks: user_locks::UserLocks::default(),
            score_norm: config.score_norm,
            cohorts: cohorts::TenantCohorts::new(config.cohorts),
            tails: Arc::new(tails::ImpostorTails::new(config.tails)),
        })
    }
}
