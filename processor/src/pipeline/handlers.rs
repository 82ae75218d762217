//! Job semantics: what each request does to state and which decision it gets.
//! Handlers read state, score audio on the worker pool and return the
//! decision plus the state changes; the caller commits both together.

use timbre_schemas::{
    BioResult, ConsentChanged, Decision, DecisionKind, EnrollmentRequested, JobKind,
    ProfileCommand, ProfileCommandKind, ProfileStatus as WireStatus, Request, RescoreRequested,
    Signals, Thresholds, VerificationRequested,
};

use super::Processor;
use super::scoring_pool::{Priority, ScoreError, Scored};
use crate::domain::policy::{self, Verdict};
use crate::domain::{
    Consent, JobCommit, Policy, Profile, ProfileStatus, RescoreResult, Voiceprint, WatchlistEntry,
    now_ms,
};
use crate::model::cosine;
use crate::ports::StoreError;

/// The purpose consent is recorded under.
pub const BIOMETRIC_PURPOSE: &str = "voice_biometrics";

/// What a handler decided.
pub struct Handled {
    /// The decision event (encoded by the caller).
    pub decision: Decision,
    /// State changes to commit with it (its `decision` bytes are filled in later).
    pub commit: JobCommit,
    /// `(code, message)` when the job's content was invalid and must also go
    /// to the dead-letter topic.
    pub dead_letter: Option<(String, String)>,
}

fn wire_status(s: ProfileStatus) -> WireStatus {
    match s {
        ProfileStatus::NotEnrolled => WireStatus::NotEnrolled,
        ProfileStatus::Enrolled => WireStatus::Enrolled,
        ProfileStatus::ReEnroll => WireStatus::ReEnroll,
        ProfileStatus::OptedOut => WireStatus::OptedOut,
    }
}

fn new_profile(tenant: &str, user_id: &str, now: i64) -> Profile {
    Profile {
        tenant: tenant.into(),
        user_id: user_id.into(),
        status: ProfileStatus::NotEnrolled,
        samples: 0,
        net_speech_millis: 0,
        learning_progress: 0.0,
        sessions: 0,
        failures: 0,
        cooldown_until: 0,
        created_at: now,
        updated_at: now,
    }
}

fn base(request: &Request, decision: DecisionKind) -> Decision {
    let mut d = Decision::new(
        request.request_id(),
        request.tenant(),
        request.user_id(),
        request.job(),
        decision,
        request.occurred_at(),
        now_ms(),
    );
    d.trace = request.trace().cloned();
    d
}

/// An error decision; `dead_letter` marks content errors (bad audio) that
/// also go to the dead-letter topic.
pub fn error_decision(request: &Request, code: &str, message: &str, dead_letter: bool) -> Handled {
    let mut decision = base(request, DecisionKind::Error);
    decision.error_code = Some(code.into());
    decision.error_message = Some(message.into());
    decision.reasons = vec![code.into()];
    decision.bio_result =
        matches!(request.job(), JobKind::Verification).then_some(BioResult::Error);
    Handled {
        decision,
        commit: commit_for(request),
        dead_letter: dead_letter.then(|| (code.to_string(), message.to_string())),
    }
}

fn commit_for(request: &Request) -> JobCommit {
    JobCommit {
        tenant: request.tenant().into(),
        request_id: request.request_id().into(),
        ..JobCommit::default()
    }
}

fn with_progress(d: &mut Decision, profile: &Profile, policy: &Policy) {
    d.profile_status = Some(wire_status(profile.status));
    d.enrollment_progress = policy::enrollment_progress(profile, policy);
    d.learning_progress = policy::learning_progress(profile, policy);
}

fn score_failure(request: &Request, err: &ScoreError) -> Handled {
    let content_error = matches!(err, ScoreError::Audio(_));
    error_decision(request, err.code(), &err.to_string(), content_error)
}

/// The profile after an opt-out: biometrics and progress gone, history kept.
fn opted_out(profile: Profile, now: i64) -> Profile {
    Profile {
        status: ProfileStatus::OptedOut,
        samples: 0,
        net_speech_millis: 0,
        sessions: 0,
        learning_progress: 0.0,
        updated_at: now,
        ..profile
    }
}

impl Processor {
    /// Scores inline audio on the worker pool; a refusal comes back as the
    /// finished error decision (plus dead letter for bad audio).
    async fn score_audio(
        &self,
        request: &Request,
        audio: &[u8],
        model_id: &str,
        priority: Priority,
    ) -> Result<Scored, Handled> {
        if audio.is_empty() {
            return Err(error_decision(
                request,
                "audio_uri_unsupported",
                "audio must be inline",
                true,
            ));
        }
        let scored = self
            .scoring
            .score_with(audio.to_vec(), model_id, priority)
            .await
            .map_err(|e| score_failure(request, &e))?;
        self.metrics.scoring_seconds.observe(scored.worker_seconds);
        Ok(scored)
    }

    pub(super) async fn handle_request(&self, request: &Request) -> Result<Handled, StoreError> {
        match request {
            Request::Enrollment(job) => self.enroll(request, job).await,
            Request::Verification(job) => self.verify(request, job).await,
            Request::Consent(job) => self.change_consent(request, job).await,
            Request::Profile(job) => self.profile_command(request, job).await,
            Request::Rescore(job) => self.rescore(request, job).await,
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

    /// Rebuilds one user's voiceprint under the run's target model from the
    /// retained enrollment audio, as a shadow: live traffic keeps using the
    /// active model until the tenant cuts over.
    async fn rescore(
        &self,
        request: &Request,
        job: &RescoreRequested,
    ) -> Result<Handled, StoreError> {
        let now = now_ms();
        let failed = |code: &str, message: &str| {
            let mut h = error_decision(request, code, message, false);
            h.commit.rescore_result = Some(RescoreResult {
                tenant: job.tenant.clone(),
                target_model: job.to_model.clone(),
                user_id: job.user_id.clone(),
                ok: false,
                detail: code.to_string(),
                updated_at: now,
            });
            h
        };
        let enrolled = self
            .store
            .profile(&job.tenant, &job.user_id)
            .await?
            .is_some_and(|p| p.status == ProfileStatus::Enrolled);
        if !enrolled {
            return Ok(failed("not_enrolled", "only enrolled users are re-scored"));
        }
        let audio = self
            .store
            .enrollment_audio(&job.tenant, &job.user_id)
            .await?;
        if audio.is_empty() {
            return Ok(failed(
                "no_retained_audio",
                "no enrollment audio was retained (consent without retain_audio)",
            ));
        }
        let mut shadow: Option<Voiceprint> = None;
        for (_, wav) in &audio {
            let scored = match self
                .score_audio(request, wav, &job.to_model, Priority::Background)
                .await
            {
                Ok(s) => s,
                Err(refused) => {
                    let code = refused.decision.error_code.unwrap_or_default();
                    if matches!(code.as_str(), "model_unavailable" | "scoring_stopped") {
                        // This processor cannot score it now (a replica without
                        // the target model, a shutdown): retry, never record a failure.
                        return Err(StoreError::Unavailable(format!(
                            "re-scoring to {}: {code}",
                            job.to_model
                        )));
                    }
                    return Ok(failed(&code, "retained audio could not be scored"));
                }
            };
            let (embedding, weight) =
                policy::merge_embedding(shadow.as_ref(), &scored.embedding, 1.0);
            shadow = Some(Voiceprint {
                tenant: job.tenant.clone(),
                user_id: job.user_id.clone(),
                model_id: job.to_model.clone(),
                embedding,
                weight,
                updated_at: now,
            });
        }
        let mut d = base(request, DecisionKind::Applied);
        d.model_id = Some(job.to_model.clone());
        d.reasons = vec!["voiceprint_rebuilt".into()];
        let mut commit = commit_for(request);
        // A listed voice stays listed under the new model.
        let listed = self
            .store
            .watchlist(&job.tenant)
            .await?
            .into_iter()
            .find(|w| w.user_id == job.user_id);
        if let (Some(entry), Some(v)) = (listed, &shadow) {
            commit.watchlist_add = Some(WatchlistEntry {
                model_id: job.to_model.clone(),
                embedding: v.embedding.clone(),
                added_at: now,
                ..entry
            });
        }
        commit.voiceprint = shadow;
        commit.rescore_result = Some(RescoreResult {
            tenant: job.tenant.clone(),
            target_model: job.to_model.clone(),
            user_id: job.user_id.clone(),
            ok: true,
            detail: String::new(),
            updated_at: now,
        });
        Ok(Handled {
            decision: d,
            commit,
            dead_letter: None,
        })
    }

    async fn enroll(
        &self,
        request: &Request,
        job: &EnrollmentRequested,
    ) -> Result<Handled, StoreError> {
        let policy = self.policies.for_tenant(&job.tenant);
        let now = now_ms();
        let mut profile = self
            .store
            .profile(&job.tenant, &job.user_id)
            .await?
            .unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now));
        let consent = self
            .store
            .consent(&job.tenant, &job.user_id, BIOMETRIC_PURPOSE)
            .await?;
        let consented = consent.as_ref().is_some_and(|c| c.granted);
        // An explicit withdrawal always wins, whatever the tenant's policy.
        if consent.as_ref().is_some_and(|c| !c.granted) {
            return Ok(error_decision(
                request,
                "consent_withdrawn",
                "the user withdrew consent to voice biometrics",
                false,
            ));
        }
        if policy.consent_required && !consented {
            return Ok(error_decision(
                request,
                "consent_required",
                "the tenant requires granted consent before enrollment",
                false,
            ));
        }
        let model_id = self.model_for(&job.tenant).await?;
        let scored = match self
            .score_audio(request, &job.audio, &model_id, Priority::Live)
            .await
        {
            Ok(s) => s,
            Err(refused) => return Ok(refused),
        };
        let mut decision = base(request, DecisionKind::Applied);
        decision.speech_millis = scored.speech_millis as i64;
        decision.model_id = Some(model_id.clone());
        if scored.speech_millis < policy.min_speech_millis {
            decision.decision = DecisionKind::Retry;
            decision.reasons = vec!["NOT_ENOUGH_SPEECH".into()];
            with_progress(&mut decision, &profile, policy);
            let mut commit = commit_for(request);
            // A new profile is still allocated, so progress is visible.
            commit.profile = Some(profile);
            return Ok(Handled {
                decision,
                commit,
                dead_letter: None,
            });
        }
        let current = match profile.status {
            // A fresh start after a model change or an opt-out.
            ProfileStatus::ReEnroll | ProfileStatus::OptedOut => {
                profile = Profile {
                    created_at: profile.created_at,
                    ..new_profile(&job.tenant, &job.user_id, now)
                };
                None
            }
            _ => {
                let current = self
                    .store
                    .voiceprint(&job.tenant, &job.user_id, &model_id)
                    .await?;
                if current.is_none() && profile.samples > 0 {
                    // Samples taken under another model do not count toward
                    // a voiceprint of this one.
                    profile = Profile {
                        created_at: profile.created_at,
                        ..new_profile(&job.tenant, &job.user_id, now)
                    };
                }
                current
            }
        };
        let (embedding, weight) = policy::merge_embedding(current.as_ref(), &scored.embedding, 1.0);
        profile.samples += 1;
        profile.net_speech_millis += scored.speech_millis;
        profile.updated_at = now;
        if policy::enrollment_progress(&profile, policy) >= 1.0 {
            profile.status = ProfileStatus::Enrolled;
        }
        profile.learning_progress = policy::learning_progress(&profile, policy);
        decision.reasons = vec![if profile.status == ProfileStatus::Enrolled {
            "ENROLLED".into()
        } else {
            "SAMPLE_ACCEPTED".into()
        }];
        with_progress(&mut decision, &profile, policy);
        let mut commit = commit_for(request);
        commit.voiceprint = Some(Voiceprint {
            tenant: job.tenant.clone(),
            user_id: job.user_id.clone(),
            model_id,
            embedding,
            weight,
            updated_at: now,
        });
        // Audio is kept only with consent to retain it: it is what lets a
        // model update rebuild the voiceprint without asking the user again.
        if consent
            .as_ref()
            .is_some_and(|c| c.granted && c.retain_audio)
        {
            commit.enrollment_audio = Some((job.user_id.clone(), job.audio.clone()));
        }
        commit.profile = Some(profile);
        Ok(Handled {
            decision,
            commit,
            dead_letter: None,
        })
    }

    async fn verify(
        &self,
        request: &Request,
        job: &VerificationRequested,
    ) -> Result<Handled, StoreError> {
        let policy = self.policies.for_tenant(&job.tenant);
        let now = now_ms();
        let Some(mut profile) = self.store.profile(&job.tenant, &job.user_id).await? else {
            return Ok(error_decision(
                request,
                "profile_not_found",
                "no profile for this user",
                false,
            ));
        };
        match profile.status {
            ProfileStatus::Enrolled => {}
            ProfileStatus::NotEnrolled => {
                let mut h =
                    error_decision(request, "not_enrolled", "enrollment is not complete", false);
                with_progress(&mut h.decision, &profile, policy);
                return Ok(h);
            }
            // RE_ENROLL is set only when the active model had no voiceprint;
            // after a rollback (or a late rebuild) it has one again, and the
            // user is enrolled as before. This runs in the user's lane, so it
            // is ordered with the user's other jobs.
            ProfileStatus::ReEnroll => {
                let model_id = self.model_for(&job.tenant).await?;
                if self
                    .store
                    .voiceprint(&job.tenant, &job.user_id, &model_id)
                    .await?
                    .is_none()
                {
                    return Ok(error_decision(
                        request,
                        "re_enroll_required",
                        "the voiceprint must be rebuilt",
                        false,
                    ));
                }
                profile.status = ProfileStatus::Enrolled;
            }
            ProfileStatus::OptedOut => {
                return Ok(error_decision(
                    request,
                    "opted_out",
                    "the user opted out of voice biometrics",
                    false,
                ));
            }
        }
        let thresholds = Some(Thresholds {
            accept: policy.accept_threshold,
            reject: policy.reject_threshold,
        });
        if profile.cooldown_until > now {
            let mut d = base(request, DecisionKind::Cooldown);
            d.reasons = vec!["cooldown".into()];
            d.retry_after_ms = Some(profile.cooldown_until - now);
            d.thresholds = thresholds;
            d.session_id = job.session_id.clone();
            with_progress(&mut d, &profile, policy);
            return Ok(Handled {
                decision: d,
                commit: commit_for(request),
                dead_letter: None,
            });
        }
        let model_id = self.model_for(&job.tenant).await?;
        let Some(voiceprint) = self
            .store
            .voiceprint(&job.tenant, &job.user_id, &model_id)
            .await?
        else {
            // The active model changed and this user's voiceprint was not
            // rebuilt: the profile must enroll again under the new model.
            let mut h = error_decision(
                request,
                "re_enroll_required",
                "no voiceprint under the active model",
                false,
            );
            profile.status = ProfileStatus::ReEnroll;
            profile.updated_at = now;
            with_progress(&mut h.decision, &profile, policy);
            h.commit.profile = Some(profile);
            return Ok(h);
        };
        let watchlist = self.store.watchlist(&job.tenant).await?;
        let scored = match self
            .score_audio(request, &job.audio, &model_id, Priority::Live)
            .await
        {
            Ok(s) => s,
            Err(refused) => return Ok(refused),
        };
        // A listed user, or a voice matching any listed voice, is refused
        // whoever it claims to be.
        let watchlisted = watchlist.iter().any(|w| {
            w.user_id == job.user_id
                || (w.model_id == model_id
                    && cosine(&scored.embedding, &w.embedding) >= policy.accept_threshold)
        });
        let mut d = base(request, DecisionKind::Retry);
        d.speech_millis = scored.speech_millis as i64;
        d.model_id = Some(model_id);
        d.thresholds = thresholds;
        d.session_id = job.session_id.clone();
        let mut commit = commit_for(request);
        if scored.speech_millis < policy.min_speech_millis {
            d.reasons = vec!["NOT_ENOUGH_SPEECH".into()];
            with_progress(&mut d, &profile, policy);
            return Ok(Handled {
                decision: d,
                commit,
                dead_letter: None,
            });
        }
        let score = cosine(&scored.embedding, &voiceprint.embedding);
        let verdict = if watchlisted {
            Verdict::Reject
        } else {
            policy::verdict(score, policy)
        };
        d.score = Some(score);
        d.confidence = Some(policy::confidence(score, policy));
        d.bio_result = Some(match policy::bio_result(score, policy) {
            "TRUE_HIGH" => BioResult::TrueHigh,
            "TRUE_LOW" => BioResult::TrueLow,
            "FALSE_LOW" => BioResult::FalseLow,
            _ => BioResult::FalseHigh,
        });
        // Phrase and liveness checks are not implemented yet: they say so
        // instead of reporting a made-up tier, and they never block.
        d.signals = Some(Signals {
            voice: policy::tier(score, policy).into(),
            phrase: "not_checked".into(),
            liveness: "not_checked".into(),
        });
        let mut reasons = Vec::new();
        match verdict {
            Verdict::Accept => {
                d.decision = DecisionKind::Accept;
                reasons.push("voice_match".to_string());
                profile.failures = 0;
                profile.cooldown_until = 0;
                if score >= policy.accept_threshold + policy.refine_margin
                    && voiceprint.weight < policy.max_voiceprint_weight
                {
                    let (embedding, weight) = policy::merge_embedding(
                        Some(&voiceprint),
                        &scored.embedding,
                        policy.refine_weight,
                    );
                    commit.voiceprint = Some(Voiceprint {
                        embedding,
                        weight,
                        updated_at: now,
                        ..voiceprint
                    });
                    profile.sessions += 1;
                    reasons.push("voiceprint_refined".into());
                }
            }
            Verdict::Retry | Verdict::Reject => {
                d.decision = if verdict == Verdict::Retry {
                    DecisionKind::Retry
                } else {
                    DecisionKind::Reject
                };
                reasons.push(
                    if watchlisted {
                        "watchlist_match"
                    } else if verdict == Verdict::Retry {
                        "voice_uncertain"
                    } else {
                        "voice_mismatch"
                    }
                    .into(),
                );
                profile.failures += 1;
                let cooldown = policy::cooldown_millis(profile.failures, policy);
                if cooldown > 0 {
                    profile.cooldown_until = now + cooldown as i64;
                    d.retry_after_ms = Some(cooldown as i64);
                }
            }
        }
        if job.expected_phrase.is_some() {
            reasons.push("phrase_not_checked".into());
        }
        d.reasons = reasons;
        profile.updated_at = now;
        profile.learning_progress = policy::learning_progress(&profile, policy);
        with_progress(&mut d, &profile, policy);
        commit.profile = Some(profile);
        Ok(Handled {
            decision: d,
            commit,
            dead_letter: None,
        })
    }

    async fn change_consent(
        &self,
        request: &Request,
        job: &ConsentChanged,
    ) -> Result<Handled, StoreError> {
        let policy = self.policies.for_tenant(&job.tenant);
        let now = now_ms();
        let mut commit = commit_for(request);
        let mut profile = self.store.profile(&job.tenant, &job.user_id).await?;
        if job.purpose == BIOMETRIC_PURPOSE {
            if !job.granted {
                commit.erase_biometrics_of = Some(job.user_id.clone());
                profile = profile.map(|p| opted_out(p, now));
            } else if let Some(p) = profile
                .as_mut()
                .filter(|p| p.status == ProfileStatus::OptedOut)
            {
                p.status = ProfileStatus::NotEnrolled;
                p.updated_at = now;
            }
        }
        commit.consent = Some(Consent {
            tenant: job.tenant.clone(),
            user_id: job.user_id.clone(),
            purpose: job.purpose.clone(),
            granted: job.granted,
            retain_audio: job.retain_audio,
            updated_at: now,
        });
        let mut d = base(request, DecisionKind::Applied);
        d.reasons = vec![
            if job.granted {
                "consent_granted"
            } else {
                "consent_withdrawn"
            }
            .into(),
        ];
        if let Some(p) = &profile {
            with_progress(&mut d, p, policy);
        }
        commit.profile = profile;
        Ok(Handled {
            decision: d,
            commit,
            dead_letter: None,
        })
    }

    async fn profile_command(
        &self,
        request: &Request,
        job: &ProfileCommand,
    ) -> Result<Handled, StoreError> {
        let policy = self.policies.for_tenant(&job.tenant);
        let now = now_ms();
        let existing = self.store.profile(&job.tenant, &job.user_id).await?;
        let mut commit = commit_for(request);
        let mut d = base(request, DecisionKind::Applied);
        let profile = match job.command {
            ProfileCommandKind::Create => {
                d.reasons = vec![
                    if existing.is_some() {
                        "profile_exists"
                    } else {
                        "profile_created"
                    }
                    .into(),
                ];
                existing.unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now))
            }
            ProfileCommandKind::OptOut => {
                commit.erase_biometrics_of = Some(job.user_id.clone());
                d.reasons = vec!["opted_out".into()];
                opted_out(
                    existing.unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now)),
                    now,
                )
            }
            ProfileCommandKind::Delete => {
                // Everything about the user goes; the decision stays as the audit record.
                commit.delete_profile_of = Some(job.user_id.clone());
                d.reasons = vec![
                    if existing.is_some() {
                        "profile_deleted"
                    } else {
                        "profile_absent"
                    }
                    .into(),
                ];
                return Ok(Handled {
                    decision: d,
                    commit,
                    dead_letter: None,
                });
            }
            ProfileCommandKind::GreylistAdd => {
                let model_id = self.model_for(&job.tenant).await?;
                let Some(voiceprint) = self
                    .store
                    .voiceprint(&job.tenant, &job.user_id, &model_id)
                    .await?
                else {
                    return Ok(error_decision(
                        request,
                        "not_enrolled",
                        "only an enrolled voice can be put on the watchlist",
                        false,
                    ));
                };
                commit.watchlist_add = Some(WatchlistEntry {
                    tenant: job.tenant.clone(),
                    user_id: job.user_id.clone(),
                    model_id,
                    embedding: voiceprint.embedding,
                    reason: job.reason.clone().unwrap_or_default(),
                    added_at: now,
                });
                d.reasons = vec!["watchlisted".into()];
                match existing {
                    Some(p) => p,
                    None => new_profile(&job.tenant, &job.user_id, now),
                }
            }
            ProfileCommandKind::GreylistRemove => {
                commit.watchlist_remove_of = Some(job.user_id.clone());
                d.reasons = vec!["unwatchlisted".into()];
                let Some(p) = existing else {
                    // Nothing to allocate for a user who never existed.
                    return Ok(Handled {
                        decision: d,
                        commit,
                        dead_letter: None,
                    });
                };
                p
            }
        };
        with_progress(&mut d, &profile, policy);
        commit.profile = Some(profile);
        Ok(Handled {
            decision: d,
            commit,
            dead_letter: None,
        })
    }
}
