//! One job, start to end: decode and validate, check idempotency, load the
//! state its rule needs, score its audio, call the domain rule, emit.
//! Transient failures are retried within the retry budget, then end in an
//! error decision that is stored nowhere (the caller may resubmit); bus
//! failures are retried for ever; permanent ones end in an error decision
//! and a dead letter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timbre_schemas::{
    Code, ConsentChanged, Decision, EnrollmentRequested, JobIdentity, JobKind, ProfileCommand,
    ProfileCommandKind, Request, RescoreRequested, SchemaError, VerificationRequested,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Processor;
use super::emit::Emission;
use crate::domain::rules::{self, Context};
use crate::domain::{Analysis, BIOMETRIC_PURPOSE, Outcome, now_ms};
use crate::ports::{BusError, Message, StoreError};
use crate::scoring::{Priority, ScoreRequest};

/// Backoff between retries of transient failures.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Messages this large are decoded and hashed on a blocking thread: a
/// 10 MiB audio job costs milliseconds of Avro and SHA-256, which would
/// hold up every task on an async thread.
const BLOCKING_PREPARE_BYTES: usize = 64 * 1024;

/// A message decoded, validated and given its identity (once per message,
/// not per retry).
type Prepared = Result<(Request, JobIdentity), SchemaError>;

/// Failures while handling a job: transient ones are retried (the job is not
/// lost), permanent ones end in an error decision and a dead letter.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProcessError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The scoring pool could not score the job now (e.g. a replica without
    /// the tenant's model during a rollout, or a shutdown).
    #[error("scoring unavailable: {1}")]
    Scoring(Code, String),
}

impl ProcessError {
    /// Retrying cannot help. Bus failures are always retried: dead-lettering
    /// needs the bus too.
    fn is_permanent(&self) -> bool {
        !matches!(self, ProcessError::Bus(_)) && !self.code().is_transient()
    }

    fn code(&self) -> Code {
        match self {
            ProcessError::Bus(e) => e.code(),
            ProcessError::Store(e) => e.code(),
            ProcessError::Schema(e) => e.code(),
            ProcessError::Scoring(code, _) => *code,
        }
    }
}

impl Processor {
    /// Handles one message to completion, retrying transient failures;
    /// returns false when shutdown interrupted the retries.
    pub(super) async fn process(
        self: &Arc<Self>,
        message: Message,
        shutdown: &CancellationToken,
    ) -> bool {
        let started = Instant::now();
        let message = Arc::new(message);
        let prepared = self.prepare(&message).await;
        let mut delay = RETRY_MIN;
        let mut retrying_since: Option<Instant> = None;
        loop {
            let span = tracing::info_span!(
                "job",
                topic = %message.topic,
                partition = message.partition,
                offset = message.offset,
                request_id = tracing::field::Empty
            );
            let result = match self
                .try_process(&message, &prepared)
                .instrument(span.clone())
                .await
            {
                Err(err) if err.is_permanent() => {
                    // A corrupt stored row, an unencodable event: answer with
                    // an error decision and dead-letter the job instead of
                    // stalling its lane.
                    tracing::error!(parent: &span, error = %err, "job failed permanently, dead-lettering");
                    self.reject_undecodable(&message, err.code(), &err.to_string())
                        .await
                }
                Err(err)
                    if !matches!(err, ProcessError::Bus(_))
                        && retrying_since.is_some_and(|t| t.elapsed() >= self.retry_budget) =>
                {
                    // No job holds its lane for ever: it ends as an error
                    // decision with the transient code, stored nowhere.
                    tracing::error!(parent: &span, error = %err, "job out of retries, giving up");
                    self.give_up(&message, &prepared, err.code(), &err.to_string())
                        .instrument(span.clone())
                        .await
                }
                other => other,
            };
            match result {
                Ok(()) => break,
                Err(err) => {
                    retrying_since.get_or_insert_with(Instant::now);
                    tracing::warn!(parent: &span, error = %err, retry_in_ms = delay.as_millis() as u64, "job failed, retrying");
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

    /// Decodes, validates and hashes `message`, on a blocking thread when
    /// it is large.
    async fn prepare(self: &Arc<Self>, message: &Arc<Message>) -> Prepared {
        if message.payload.len() < BLOCKING_PREPARE_BYTES {
            return self.prepare_now(&message.payload);
        }
        let (this, message) = (self.clone(), message.clone());
        tokio::task::spawn_blocking(move || this.prepare_now(&message.payload))
            .await
            .unwrap_or_else(|e| {
                Err(SchemaError::BadAvro {
                    record: "request",
                    detail: format!("decoding failed: {e}"),
                })
            })
    }

    fn prepare_now(&self, payload: &[u8]) -> Prepared {
        let request = self.registry.decode_request(payload)?;
        request.validate(&self.limits)?;
        let identity = request.identity();
        Ok((request, identity))
    }

    async fn try_process(
        &self,
        message: &Message,
        prepared: &Prepared,
    ) -> Result<(), ProcessError> {
        let (request, identity) = match prepared {
            Ok((request, identity)) => (request, identity),
            Err(e) => {
                return self
                    .reject_undecodable(message, e.code(), &e.to_string())
                    .await;
            }
        };
        tracing::Span::current().record("request_id", request.request_id());
        let emission =
            |outcome: Outcome| Emission::decided(message, request, &identity.digest, outcome);
        // Jobs of one user must share a partition and a lane, or they could
        // run concurrently and race on the profile (e.g. around a cooldown).
        if message.key.as_deref() != Some(request.message_key().as_bytes()) {
            let refused = Outcome::error(Code::WrongKey, "the message key must be tenant/user_id");
            // Stored nowhere: this runs before the claim and outside the
            // user's lock, and the id may be another job's.
            return self.emit(emission(refused).without_commit()).await;
        }
        // Re-scoring embeds the retained audio before it takes its user's
        // lock: scoring at background priority may wait behind live traffic.
        // A job already decided (republished while still queued) is
        // answered below from its stored decision, without scoring again.
        let retained = match request {
            Request::Rescore(job)
                if self
                    .store
                    .decision(&job.tenant, &job.request_id)
                    .await?
                    .is_none() =>
            {
                Some(self.embed_retained(job).await?)
            }
            _ => None,
        };
        // One job of a user at a time, live or re-scoring: what a job
        // decides on is read under the lock, and nothing else of the user
        // changes until it is committed.
        let _user = self.user_locks.lock(&request.message_key()).await;
        // Never answer one job with another's decision, and never overwrite
        // the stored one.
        let conflict = || {
            Outcome::error(
                Code::RequestIdConflict,
                "this request_id was already used by another job",
            )
        };
        if let Some(previous) = self
            .store
            .decision(request.tenant(), request.request_id())
            .await?
        {
            let earlier: Decision = self.registry.decode(&previous)?;
            if !identity.is_answered_by(&earlier) {
                return self.emit(emission(conflict()).without_commit()).await;
            }
            tracing::debug!("redelivered job, republishing its decision");
            return self.replay(request, &previous).await;
        }
        // Two jobs under one id can be in flight at once on different
        // partitions: the first to claim the id is applied, the other is
        // refused, whichever finishes first.
        if !self
            .store
            .claim_request(request.tenant(), request.request_id(), &identity.digest)
            .await?
        {
            return self.emit(emission(conflict()).without_commit()).await;
        }
        let outcome = self.decide(request, retained).await?;
        self.emit(emission(outcome)).await
    }

    /// Ends a job whose transient failure outlasted the retry budget: an
    /// error decision with that code, published but not stored, so a
    /// resubmission under the same id is decided afresh.
    async fn give_up(
        &self,
        message: &Message,
        prepared: &Prepared,
        code: Code,
        detail: &str,
    ) -> Result<(), ProcessError> {
        let Ok((request, identity)) = prepared else {
            return self.reject_undecodable(message, code, detail).await;
        };
        let outcome = Outcome::error(code, detail);
        self.emit(Emission::decided(message, request, &identity.digest, outcome).without_commit())
            .await
    }

    /// Load → score → rule, for each kind of job.
    async fn decide(
        &self,
        request: &Request,
        retained: Option<Retained>,
    ) -> Result<Outcome, ProcessError> {
        let ctx = Context {
            policy: self.policies.for_tenant(request.tenant()),
            now: now_ms(),
            norm: None,
        };
        match request {
            Request::Enrollment(job) => self.enroll(job, ctx).await,
            Request::Verification(job) => self.verify(job, ctx).await,
            Request::Consent(job) => Ok(self.change_consent(job, ctx).await?),
            Request::Profile(job) => Ok(self.profile_command(job, ctx).await?),
            Request::Rescore(job) => {
                let retained = match retained {
                    Some(r) => r,
                    None => self.embed_retained(job).await?,
                };
                self.rescore(job, retained, ctx).await
            }
        }
    }

    /// The model a tenant scores with: the recorded one, else the default.
    async fn model_for(&self, tenant: &str) -> Result<String, StoreError> {
        Ok(self
            .store
            .tenant_model(tenant)
            .await?
            .map_or_else(|| self.scoring.model_id(), |m| m.active_model))
    }

    /// Scores one job's audio on the worker pool. A refusal of the audio
    /// comes back as its code and detail; a failure this processor cannot
    /// score through now (a model it lacks, a shutdown) is a transient
    /// [`ProcessError::Scoring`], retried within the budget.
    async fn score(
        &self,
        request: ScoreRequest,
    ) -> Result<Result<Analysis, (Code, String)>, ProcessError> {
        if request.wav.is_empty() {
            return Ok(Err((
                Code::AudioUriUnsupported,
                "audio must be inline".into(),
            )));
        }
        let scored = match self.scoring.score(request).await {
            Ok(scored) => scored,
            Err(e) if e.code().is_transient() => {
                return Err(ProcessError::Scoring(e.code(), e.to_string()));
            }
            Err(e) => return Ok(Err((e.code(), e.to_string()))),
        };
        self.metrics.scoring_seconds.observe(scored.worker_seconds);
        Ok(Ok(scored.analysis))
    }

    async fn enroll(
        &self,
        job: &EnrollmentRequested,
        ctx: Context<'_>,
    ) -> Result<Outcome, ProcessError> {
        let (tenant, user) = (job.tenant.as_str(), job.user_id.as_str());
        let model_id = self.model_for(tenant).await?;
        let loaded = rules::enrollment::Loaded {
            profile: self.store.profile(tenant, user).await?,
            consent: self.store.consent(tenant, user, BIOMETRIC_PURPOSE).await?,
            voiceprint: self.store.voiceprint(tenant, user, &model_id).await?,
            model_id,
        };
        if let Err(refused) = rules::enrollment::admit(&loaded, ctx) {
            return Ok(*refused);
        }
        let consent = loaded.consent.clone();
        let diagnosed = |outcome| {
            rules::with_diagnostics(
                outcome,
                user,
                "enrollment",
                &job.audio,
                job.retain_diagnostics,
                consent.as_ref(),
                ctx,
            )
        };
        let sample = match self
            .score(ScoreRequest {
                wav: job.audio.clone(),
                model_id: loaded.model_id.clone(),
                priority: Priority::Live,
                job: JobKind::Enrollment,
                expected_phrase: job.expected_phrase.clone(),
                earlier: (ctx.policy.replay_memory_days > 0).then(|| Arc::from([])),
            })
            .await?
        {
            Ok(s) => s,
            Err((code, detail)) => return Ok(diagnosed(Outcome::error(code, detail))),
        };
        let decided = rules::enrollment::decide(job, loaded, &sample, ctx);
        Ok(diagnosed(rules::enrollment::with_biokeys(decided, job)))
    }

    async fn verify(
        &self,
        job: &VerificationRequested,
        ctx: Context<'_>,
    ) -> Result<Outcome, ProcessError> {
        let (tenant, user) = (job.tenant.as_str(), job.user_id.as_str());
        let model_id = self.model_for(tenant).await?;
        // A model without its own normalisation (a re-scoring target, say)
        // is judged on raw cosine.
        let score_norm = self
            .score_norm
            .as_deref()
            .filter(|n| n.model_id == model_id);
        let tails = match score_norm {
            Some(n) => {
                self.tails
                    .get(&*self.store, tenant, &model_id, n.scale_id())
                    .await?
            }
            None => None,
        };
        // Admission needs the thresholds only: no tenant cohort is read for a
        // refused job (a cooldown under a brute-force run above all).
        let ctx = Context {
            norm: score_norm.map(|score_norm| rules::NormContext {
                score_norm,
                tenant: &[],
                tails: tails.as_deref(),
            }),
            ..ctx
        };
        let loaded = rules::verification::Loaded {
            profile: self.store.profile(tenant, user).await?,
            voiceprint: self.store.voiceprint(tenant, user, &model_id).await?,
            model_id: model_id.clone(),
        };
        let admitted = match rules::verification::admit(job, loaded, ctx) {
            Ok(a) => a,
            Err(refused) => return Ok(*refused),
        };
        // Read only for admitted jobs, like the watchlist below.
        let earlier = if ctx.policy.replay_memory_days > 0 {
            let stored = self
                .store
                .fingerprints(tenant, user, ctx.policy.replay_memory_recordings)
                .await?;
            Some(stored.into())
        } else {
            None
        };
        // Whether the user lets audio be kept matters only to a job that
        // asks to keep it.
        let consent = if job.retain_diagnostics {
            self.store.consent(tenant, user, BIOMETRIC_PURPOSE).await?
        } else {
            None
        };
        let diagnosed = |outcome| {
            rules::with_diagnostics(
                outcome,
                user,
                "verification",
                &job.audio,
                job.retain_diagnostics,
                consent.as_ref(),
                ctx,
            )
        };
        let sample = match self
            .score(ScoreRequest {
                wav: job.audio.clone(),
                model_id: model_id.clone(),
                priority: Priority::Live,
                job: JobKind::Verification,
                expected_phrase: job.expected_phrase.clone(),
                earlier,
            })
            .await?
        {
            Ok(s) => s,
            Err((code, detail)) => return Ok(diagnosed(Outcome::error(code, detail))),
        };
        // Read only for admitted jobs: refusals (cooldowns under a brute-force
        // run above all) cost no scan of the tenant's watchlist.
        let watchlist = self.store.watchlist(tenant).await?;
        let cohort = match score_norm {
            Some(_) => Some(self.cohorts.get(&*self.store, tenant, &model_id).await?),
            None => None,
        };
        let ctx = Context {
            norm: score_norm
                .zip(cohort.as_deref())
                .map(|(score_norm, tenant)| rules::NormContext {
                    score_norm,
                    tenant,
                    tails: tails.as_deref(),
                }),
            ..ctx
        };
        let claimed = admitted.voiceprint().embedding.clone();
        let outcome = diagnosed(rules::verification::decide(
            job, admitted, &watchlist, &sample, ctx,
        ));
        // Only an accepted probe is known to be the claimed user's voice
        // (a rejected one may be anyone's, a tenant member's included), so
        // only its scores against the others are impostor trials.
        let accepted = outcome.kind == timbre_schemas::DecisionKind::Accept;
        // Tails and a cohort are read only for the model's own normalisation.
        if let (Some(snapshot), Some(cohort), Some(norm)) = (tails, cohort, self.score_norm.clone())
            && accepted
        {
            // Let go of the snapshot, so counting does not copy the tails.
            drop(snapshot);
            let trial = ImpostorTrial {
                tenant: job.tenant.clone(),
                model: model_id.clone(),
                user: job.user_id.clone(),
                band: sample.band(job.channel.as_deref()),
                claimed,
                probe: sample.embedding.clone(),
                speech_millis: sample.speech_millis,
                seed: crate::domain::fnv1a(job.request_id.as_bytes()),
            };
            self.record_impostors(norm, cohort, trial).await;
        }
        Ok(outcome)
    }

    /// Counts an accepted probe's LLRs against a few of the tenant's other
    /// voiceprints in its impostor tail (`pipeline::tails`), on a blocking
    /// thread (20 normalised scores), before the decision is emitted; the
    /// verification itself was judged by the tail as the ones before it
    /// left it.
    async fn record_impostors(
        &self,
        score_norm: Arc<crate::domain::calibration::ScoreNorm>,
        cohort: super::cohorts::TenantCohort,
        trial: ImpostorTrial,
    ) {
        let tails = self.tails.clone();
        let band = trial.band;
        let recorded = tokio::task::spawn_blocking(move || {
            let others: Vec<&[f32]> = cohort
                .iter()
                .filter(|(u, _)| *u != trial.user)
                .map(|(_, e)| e.as_slice())
                .collect();
            tails.record(
                &score_norm,
                (&trial.tenant, &trial.model),
                trial.band,
                &trial.claimed,
                &trial.probe,
                trial.speech_millis,
                &others,
                trial.seed,
            )
        })
        .await;
        match recorded {
            Ok((n, due)) => {
                self.metrics
                    .impostor_tail_trials
                    .with_label_values(&[band.as_str()])
                    .inc_by(n as u64);
                if let Some((tenant, model, tails)) = due
                    && let Err(e) = self.store.put_impostor_tails(&tenant, &model, &tails).await
                {
                    // Counted in memory still: the next save carries them.
                    self.tails.save_failed(&tenant, &model);
                    tracing::warn!(tenant, error = %e, "impostor tails not saved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "impostor tail not recorded"),
        }
    }

    async fn change_consent(
        &self,
        job: &ConsentChanged,
        ctx: Context<'_>,
    ) -> Result<Outcome, StoreError> {
        let profile = self.store.profile(&job.tenant, &job.user_id).await?;
        Ok(rules::consent::decide(job, profile, ctx))
    }

    async fn profile_command(
        &self,
        job: &ProfileCommand,
        ctx: Context<'_>,
    ) -> Result<Outcome, StoreError> {
        let (tenant, user) = (job.tenant.as_str(), job.user_id.as_str());
        let voiceprint = if job.command == ProfileCommandKind::GreylistAdd {
            let model_id = self.model_for(tenant).await?;
            self.store.voiceprint(tenant, user, &model_id).await?
        } else {
            None
        };
        let loaded = rules::profile::Loaded {
            profile: self.store.profile(tenant, user).await?,
            voiceprint,
        };
        Ok(rules::profile::decide(job, loaded, ctx))
    }

    /// Embeds a user's retained audio under the run's target model, once
    /// the rule admits it (the audio is read only then).
    async fn embed_retained(&self, job: &RescoreRequested) -> Result<Retained, ProcessError> {
        let ctx = Context {
            policy: self.policies.for_tenant(&job.tenant),
            now: now_ms(),
            norm: None,
        };
        if let Err(refused) = self.admit_rescore(job, ctx).await? {
            return Ok(Retained::Refused(refused));
        }
        // One recording in memory at a time (up to the upload limit each).
        let ids = self
            .store
            .retained_audio_ids(&job.tenant, &job.user_id)
            .await?;
        let mut embeddings = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(wav) = self
                .store
                .retained_audio(&job.tenant, &job.user_id, &id)
                .await?
            else {
                continue; // erased since the ids were read
            };
            match self
                .score(ScoreRequest {
                    wav,
                    model_id: job.to_model.clone(),
                    priority: Priority::Background,
                    job: JobKind::Rescore,
                    expected_phrase: None,
                    earlier: None,
                })
                .await?
            {
                Ok(sample) => embeddings.push(sample.embedding),
                Err((code, _)) => {
                    return Ok(Retained::Refused(Box::new(rules::rescore::failed(
                        job,
                        code,
                        "retained audio could not be scored",
                        ctx,
                    ))));
                }
            }
        }
        Ok(Retained::Embedded(embeddings))
    }

    async fn admit_rescore(
        &self,
        job: &RescoreRequested,
        ctx: Context<'_>,
    ) -> Result<Result<(), Box<Outcome>>, StoreError> {
        let (tenant, user) = (job.tenant.as_str(), job.user_id.as_str());
        let loaded = rules::rescore::Loaded {
            profile: self.store.profile(tenant, user).await?,
            consent: self.store.consent(tenant, user, BIOMETRIC_PURPOSE).await?,
        };
        Ok(rules::rescore::admit(job, &loaded, ctx))
    }

    /// Rules on embedded audio under the user's lock: profile and consent
    /// are read again, so a withdrawal, opt-out or delete handled while the
    /// audio was being scored wins.
    async fn rescore(
        &self,
        job: &RescoreRequested,
        retained: Retained,
        ctx: Context<'_>,
    ) -> Result<Outcome, ProcessError> {
        let embeddings = match retained {
            Retained::Refused(outcome) => return Ok(*outcome),
            Retained::Embedded(e) => e,
        };
        if let Err(refused) = self.admit_rescore(job, ctx).await? {
            return Ok(*refused);
        }
        let listed = self
            .store
            .watchlist(&job.tenant)
            .await?
            .into_iter()
            .find(|w| w.user_id == job.user_id);
        Ok(rules::rescore::decide(job, listed, &embeddings, ctx))
    }
}

/// A re-scoring job's audio, embedded before the job takes its user's lock.
pub(super) enum Retained {
    /// The rule refused the job (or its audio) before the lock.
    Refused(Box<Outcome>),
    /// One embedding per retained recording, under the target model.
    Embedded(Vec<Vec<f32>>),
}

/// Waits `delay` before a retry; false if shutdown came first.
async fn backoff(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// An accepted verification's probe, to be counted in its tenant's
/// impostor tail.
struct ImpostorTrial {
    tenant: String,
    model: String,
    /// The claimed user, whose voiceprints are not impostors.
    user: String,
    band: crate::domain::calibration::Band,
    /// The claimed user's voiceprint.
    claimed: Vec<f32>,
    probe: Vec<f32>,
    speech_millis: u64,
    /// Where the spread of voiceprints starts.
    seed: u64,
}
