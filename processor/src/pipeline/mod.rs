//! The stream processor: consume → decode → score → persist → emit → commit.
//!
//! ```text
//! bus ──► reader task ──(bounded lane queues, by tenant/user)──► lane tasks ──► scoring pool (OS threads)
//!            ▲  pause/resume partitions when a lane is full          │
//!            └──── finished offsets ◄── store.commit ◄── decision ───┘──► decisions topic (+ dead-letter)
//! ```
//!
//! A job's offset is committed only after its state and decision are
//! persisted and the decision is published (at-least-once). Redelivery is
//! harmless: a job whose decision is already stored republishes that same
//! decision and applies nothing again.

mod handlers;
mod offsets;
pub mod scoring_pool;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timbre_schemas::{
    Contract, DeadLetter, Decision, DecisionKind, JobKind, Limits, Registry, Request, SchemaError,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use handlers::BIOMETRIC_PURPOSE;
use handlers::Handled;
use offsets::OffsetTracker;
use scoring_pool::ScoringPool;

use crate::domain::{Policy, key_slot, now_ms};
use crate::metrics::Metrics;
use crate::ports::{Bus, BusError, Message, Store};
use crate::topics::TopicNames;

/// Decision policy per tenant, with a default.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Applies to tenants without their own entry.
    pub default: Policy,
    /// Per-tenant overrides.
    pub tenants: HashMap<String, Policy>,
}

impl Policies {
    /// The policy of `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> &Policy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

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
}

struct Finished {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Backoff for transient bus/store failures: the job is retried, never
/// skipped, because skipping would lose it.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often parked messages retry their lanes (lanes also wake the reader
/// whenever a job finishes).
const UNPARK_INTERVAL: Duration = Duration::from_millis(5);

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
        })
    }

    /// Runs until `shutdown` fires, then drains in-flight jobs, commits what
    /// finished and leaves the group.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), BusError> {
        let mut subscription = self
            .bus
            .subscribe(&self.group, &self.topics.requests())
            .await?;
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Finished>();
        // Live lanes, then lanes of re-scoring jobs sized to the background
        // workers, so bulk work never fills a lane a live job needs.
        let total = self.lanes + self.scoring.background_slots();
        let mut lanes = Vec::with_capacity(total);
        let mut lane_tasks = Vec::with_capacity(total);
        for _ in 0..total {
            let (tx, mut rx) = mpsc::channel::<Message>(self.lane_queue);
            let this = self.clone();
            let done = finished_tx.clone();
            let stop = shutdown.clone();
            lane_tasks.push(tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    let (topic, partition, offset) =
                        (message.topic.clone(), message.partition, message.offset);
                    if !this.process(message, &stop).await {
                        // Abandoned at shutdown: not finished, so its offset
                        // is not committed and the job is redelivered.
                        continue;
                    }
                    let _ = done.send(Finished {
                        topic,
                        partition,
                        offset,
                    });
                }
            }));
            lanes.push(tx);
        }
        drop(finished_tx);
        let mut tracker = OffsetTracker::default();
        // Messages waiting for a full lane, by partition. A parked partition
        // is paused and its later messages queue behind, which keeps every
        // key in order, while other partitions keep flowing.
        let mut parked: HashMap<(String, i32), VecDeque<Message>> = HashMap::new();
        let mut unpark = tokio::time::interval(UNPARK_INTERVAL);
        unpark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(group = %self.group, lanes = self.lanes, "processor running");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = finished_rx.recv() => {
                    self.finish(&mut tracker, &*subscription, done);
                    self.unpark(&mut parked, &lanes, &*subscription);
                }
                _ = unpark.tick(), if !parked.is_empty() => {
                    self.unpark(&mut parked, &lanes, &*subscription);
                }
                message = subscription.next() => {
                    for (topic, partition) in subscription.take_revoked() {
                        tracker.forget(&topic, partition);
                        if parked.remove(&(topic.clone(), partition)).is_some() {
                            // A pause outlives a revoke in librdkafka: undo it, or a
                            // partition assigned back to us would never be fetched.
                            let _ = subscription.resume(&topic, partition);
                            self.metrics.paused_partitions.dec();
                        }
                    }
                    if let Some(lag) = subscription.lag() {
                        self.metrics.consumer_lag.set(lag);
                    }
                    let message = match message {
                        Ok(m) => m,
                        Err(BusError::Closed) => break,
                        Err(err) => {
                            // Broker hiccups surface here; the client reconnects
                            // on its own, so wait a little and poll again.
                            tracing::warn!(error = %err, "consume failed, polling again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    self.metrics.jobs_consumed.with_label_values(&[message.topic.as_str()]).inc();
                    tracker.start(&message.topic, message.partition, message.offset);
                    self.metrics.jobs_in_flight.set(tracker.in_flight() as i64);
                    let slot = (message.topic.clone(), message.partition);
                    if let Some(queue) = parked.get_mut(&slot) {
                        // Fetched before the pause took effect.
                        queue.push_back(message);
                        continue;
                    }
                    match self.lane_for(&lanes, &message).try_send(message) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(message)) => {
                            if let Err(err) = subscription.pause(&slot.0, slot.1) {
                                // Parking alone keeps order; pausing only saves fetches.
                                tracing::warn!(error = %err, topic = %slot.0, partition = slot.1, "pause failed");
                            }
                            self.metrics.paused_partitions.inc();
                            parked.insert(slot, VecDeque::from([message]));
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
        }
        // Parked messages were never started: uncommitted, so redelivered.
        drop(parked);
        tracing::info!(in_flight = tracker.in_flight(), "draining");
        drop(lanes);
        for task in lane_tasks {
            let _ = task.await;
        }
        while let Ok(done) = finished_rx.try_recv() {
            self.finish(&mut tracker, &*subscription, done);
        }
        subscription.close().await?;
        tracing::info!("processor stopped");
        Ok(())
    }

    /// The lane of a message: by key among the live lanes, or among the
    /// background lanes for re-scoring jobs.
    fn lane_for<'a>(
        &self,
        lanes: &'a [mpsc::Sender<Message>],
        message: &Message,
    ) -> &'a mpsc::Sender<Message> {
        let key = message.key.as_deref().unwrap_or_default();
        if message.topic == self.topics.rescore {
            let background = lanes.len() - self.lanes;
            &lanes[self.lanes + key_slot(key, background)]
        } else {
            &lanes[key_slot(key, self.lanes)]
        }
    }

    /// Hands parked messages to their lanes in order; resumes a partition
    /// whose queue emptied.
    fn unpark(
        &self,
        parked: &mut HashMap<(String, i32), VecDeque<Message>>,
        lanes: &[mpsc::Sender<Message>],
        subscription: &dyn crate::ports::Subscription,
    ) {
        let mut resumed = Vec::new();
        for (slot, queue) in parked.iter_mut() {
            while let Some(message) = queue.pop_front() {
                match self.lane_for(lanes, &message).try_send(message) {
                    Ok(()) => {}
                    Err(
                        mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m),
                    ) => {
                        queue.push_front(m);
                        break;
                    }
                }
            }
            if queue.is_empty() {
                resumed.push(slot.clone());
            }
        }
        for slot in resumed {
            parked.remove(&slot);
            if let Err(err) = subscription.resume(&slot.0, slot.1) {
                tracing::warn!(error = %err, topic = %slot.0, partition = slot.1, "resume failed");
            }
            self.metrics.paused_partitions.dec();
        }
    }

    fn finish(
        &self,
        tracker: &mut OffsetTracker,
        subscription: &dyn crate::ports::Subscription,
        done: Finished,
    ) {
        if let Some(next) = tracker.finish(&done.topic, done.partition, done.offset)
            && let Err(err) = subscription.commit(&done.topic, done.partition, next)
        {
            // A later commit covers this offset too; until then a crash
            // only means redelivery, which is idempotent.
            tracing::warn!(error = %err, topic = %done.topic, partition = done.partition, "offset commit failed");
        }
        self.metrics.jobs_in_flight.set(tracker.in_flight() as i64);
    }

    /// Handles one message to completion, retrying transient failures;
    /// returns false when shutdown interrupted the retries.
    async fn process(&self, message: Message, shutdown: &CancellationToken) -> bool {
        let started = Instant::now();
        let mut delay = RETRY_MIN;
        loop {
            let span = tracing::info_span!(
                "job",
                topic = %message.topic,
                partition = message.partition,
                offset = message.offset,
                request_id = tracing::field::Empty
            );
            match self.try_process(&message).instrument(span.clone()).await {
                Ok(()) => break,
                Err(err) if err.is_permanent() => {
                    // Retrying cannot help (a corrupt stored row, an
                    // unencodable event): answer with an error decision and
                    // dead-letter the job instead of stalling its lane.
                    tracing::error!(parent: &span, error = %err, "job failed permanently, dead-lettering");
                    let code = err.code();
                    if self
                        .reject_undecodable(&message, code, &err.to_string())
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    if !backoff(delay, shutdown).await {
                        return false;
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "job failed, retrying");
                    if !backoff(delay, shutdown).await {
                        return false;
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        self.metrics
            .job_seconds
            .observe(started.elapsed().as_secs_f64());
        true
    }

    async fn try_process(&self, message: &Message) -> Result<(), ProcessError> {
        let request = match self.registry.decode_request(&message.payload) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .reject_undecodable(message, e.code(), &e.to_string())
                    .await;
            }
        };
        if let Err(e) = request.validate(&self.limits) {
            return self
                .reject_undecodable(message, e.code(), &e.to_string())
                .await;
        }
        tracing::Span::current().record("request_id", request.request_id());
        let key = request.message_key();
        // Jobs of one user must share a partition and a lane, or they could
        // run concurrently and race on the profile (e.g. around a cooldown).
        if message.key.as_deref() != Some(key.as_bytes()) {
            let refused = handlers::error_decision(
                &request,
                "wrong_key",
                "the message key must be tenant/user_id",
                true,
            );
            return self.conclude(message, &request, refused).await;
        }
        if let Some(previous) = self
            .store
            .decision(request.tenant(), request.request_id())
            .await?
        {
            let earlier: Decision = self.registry.decode(&previous)?;
            if earlier.user_id != request.user_id() || earlier.job != request.job() {
                // Never answer one user's job with another's decision.
                let mut conflict = handlers::error_decision(
                    &request,
                    "request_id_conflict",
                    "this request_id was already used by another job",
                    true,
                );
                let bytes = self.registry.encode(&conflict.decision)?;
                if let Some((code, reason)) = conflict.dead_letter.take() {
                    self.dead_letter(
                        message,
                        Some(request.request_id()),
                        Some(request.tenant()),
                        &code,
                        &reason,
                    )
                    .await?;
                }
                self.bus
                    .publish(&self.topics.decisions, key.as_bytes(), &bytes)
                    .await?;
                self.count(&conflict.decision);
                return Ok(());
            }
            tracing::debug!(
                request_id = request.request_id(),
                "redelivered job, republishing its decision"
            );
            self.bus
                .publish(&self.topics.decisions, key.as_bytes(), &previous)
                .await?;
            return Ok(());
        }
        let handled: Handled = self.handle_request(&request).await?;
        self.conclude(message, &request, handled).await
    }

    /// Stores a job's state and decision together, then publishes the decision
    /// (and the dead letter of a content error).
    async fn conclude(
        &self,
        message: &Message,
        request: &Request,
        handled: Handled,
    ) -> Result<(), ProcessError> {
        let key = request.message_key();
        let bytes = self.registry.encode(&handled.decision)?;
        if let Some((code, reason)) = &handled.dead_letter {
            self.dead_letter(
                message,
                Some(request.request_id()),
                Some(request.tenant()),
                code,
                reason,
            )
            .await?;
        }
        let mut commit = handled.commit;
        commit.decision = bytes.clone();
        self.store.commit(&commit).await?;
        self.bus
            .publish(&self.topics.decisions, key.as_bytes(), &bytes)
            .await?;
        self.count(&handled.decision);
        tracing::info!(
            request_id = %handled.decision.request_id,
            decision = ?handled.decision.decision,
            code = handled.decision.error_code.as_deref().unwrap_or(""),
            "job decided"
        );
        Ok(())
    }

    /// An event that does not decode or validate: an error decision addressed
    /// with whatever ids could be read, plus the original bytes in the
    /// dead-letter topic.
    async fn reject_undecodable(
        &self,
        message: &Message,
        code: &str,
        detail: &str,
    ) -> Result<(), ProcessError> {
        let envelope = self.registry.peek_envelope(&message.payload).ok();
        let request_id = envelope
            .as_ref()
            .and_then(|e| e.request_id.clone())
            .unwrap_or_else(|| {
                DeadLetter::position_id(&message.topic, message.partition, message.offset)
            });
        let tenant = envelope.as_ref().and_then(|e| e.tenant.clone());
        let user_id = envelope
            .as_ref()
            .and_then(|e| e.user_id.clone())
            .unwrap_or_default();
        let job = envelope
            .as_ref()
            .and_then(|e| JobKind::of(e.kind))
            .unwrap_or_else(|| self.job_of_topic(&message.topic));
        let now = now_ms();
        let mut decision = Decision::new(
            request_id.clone(),
            tenant.clone().unwrap_or_default(),
            user_id,
            job,
            DecisionKind::Error,
            now,
            now,
        );
        decision.error_code = Some(code.into());
        decision.error_message = Some(detail.into());
        decision.reasons = vec![code.into()];
        self.dead_letter(message, Some(&request_id), tenant.as_deref(), code, detail)
            .await?;
        let bytes = self.registry.encode(&decision)?;
        let key = message
            .key
            .clone()
            .unwrap_or_else(|| request_id.clone().into_bytes());
        self.bus
            .publish(&self.topics.decisions, &key, &bytes)
            .await?;
        self.count(&decision);
        tracing::info!(request_id = %request_id, code, "undecodable job dead-lettered");
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &Message,
        request_id: Option<&str>,
        tenant: Option<&str>,
        code: &str,
        reason: &str,
    ) -> Result<(), ProcessError> {
        let record = DeadLetter {
            request_id: request_id.map(str::to_string).unwrap_or_else(|| {
                DeadLetter::position_id(&message.topic, message.partition, message.offset)
            }),
            tenant: tenant.map(str::to_string),
            source_topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            key: message.key.clone(),
            payload: message.payload.clone(),
            error_code: code.into(),
            error_message: reason.chars().take(1000).collect(),
            occurred_at: now_ms(),
            schema_version: DeadLetter::CURRENT_VERSION,
        };
        let bytes = self.registry.encode(&record)?;
        let key = DeadLetter::position_id(&message.topic, message.partition, message.offset);
        self.bus
            .publish(&self.topics.dead_letter, key.as_bytes(), &bytes)
            .await?;
        self.metrics.dead_letters.with_label_values(&[code]).inc();
        Ok(())
    }

    fn job_of_topic(&self, topic: &str) -> JobKind {
        let t = &self.topics;
        if topic == t.enrollment {
            JobKind::Enrollment
        } else if topic == t.consent {
            JobKind::Consent
        } else if topic == t.profile {
            JobKind::Profile
        } else if topic == t.rescore {
            JobKind::Rescore
        } else {
            JobKind::Verification
        }
    }

    fn count(&self, d: &Decision) {
        let job = format!("{:?}", d.job).to_lowercase();
        let decision = format!("{:?}", d.decision).to_lowercase();
        self.metrics
            .decisions
            .with_label_values(&[job.as_str(), decision.as_str()])
            .inc();
    }
}

/// Waits `delay` before a retry; false if shutdown came first.
async fn backoff(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Failures while handling a job: transient ones are retried (the job is not
/// lost), permanent ones end in an error decision and a dead letter.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl ProcessError {
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            ProcessError::Schema(_)
                | ProcessError::Store(
                    crate::ports::StoreError::Corrupt(_) | crate::ports::StoreError::Config(_)
                )
        )
    }

    fn code(&self) -> &'static str {
        match self {
            ProcessError::Bus(e) => e.code(),
            ProcessError::Store(e) => e.code(),
            ProcessError::Schema(e) => e.code(),
        }
    }
}
