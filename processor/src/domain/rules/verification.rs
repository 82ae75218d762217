//! Verification: who may be scored (enrolled, not opted out, not locked,
//! not cooling down), then the voice verdict fused with the other signals,
//! the watchlist, the cooldown ladder, the lockout and voiceprint refinement.

use timbre_schemas::{Code, DecisionKind, Signals, Thresholds, VerificationRequested};

use super::{Analysis, Context};
use crate::domain::calibration::{Band, VoiceScore};
use crate::domain::outcome::Scores;
use crate::domain::policy::{self, Verdict, VoiceThresholds, cosine};
use crate::domain::signals::{SignalKind, Tier, fuse, liveness_reported_only};
use crate::domain::{Mutation, Outcome, Profile, ProfileStatus, Voiceprint, WatchlistEntry};

/// What verification reads before it scores.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The profile, if any.
    pub profile: Option<Profile>,
    /// The voiceprint under the tenant's active model.
    pub voiceprint: Option<Voiceprint>,
    /// The tenant's active model.
    pub model_id: String,
}

/// A verification that may be scored.
#[derive(Debug, Clone)]
pub struct Admitted {
    profile: Profile,
    voiceprint: Voiceprint,
    model_id: String,
}

impl Admitted {
    /// The voiceprint the job is scored against.
    pub fn voiceprint(&self) -> &Voiceprint {
        &self.voiceprint
    }
}

/// The thresholds a verification is judged against: the policy's
/// false-accept rates as LLRs when the model is calibrated, else its cosine
/// thresholds.
fn voice_thresholds(ctx: Context<'_>, band: Band) -> VoiceThresholds {
    match ctx.norm {
        Some(n) => n
            .score_norm
            .voice_thresholds(ctx.policy, band, n.tails.map(|t| t.band(band))),
        None => VoiceThresholds::cosine(ctx.policy),
    }
}

fn thresholds(t: &VoiceThresholds, band: Option<Band>) -> Thresholds {
    Thresholds {
        accept: t.accept,
        reject: t.reject,
        scale: t.scale.as_str().into(),
        band: band.map(|b| b.as_str().into()),
    }
}

/// A verification's voice score: raw cosine, and with a calibration the
/// normalised score and LLR. The claimed user's own voiceprint never joins
/// the cohort (it would normalise the true speaker away).
fn voice_score(
    job: &VerificationRequested,
    voiceprint: &Voiceprint,
    enrolled_speech_millis: u64,
    sample: &Analysis,
    band: Band,
    ctx: Context<'_>,
) -> (f32, Option<VoiceScore>) {
    match ctx.norm {
        Some(n) => {
            let tenant: Vec<&[f32]> = n
                .tenant
                .iter()
                .filter(|(user, _)| *user != job.user_id)
                .map(|(_, e)| e.as_slice())
                .collect();
            let s = n.score_norm.score(
                band,
                &voiceprint.embedding,
                enrolled_speech_millis,
                &sample.embedding,
                sample.speech_millis,
                &tenant,
            );
            (s.llr, Some(s))
        }
        None => (cosine(&sample.embedding, &voiceprint.embedding), None),
    }
}

/// Refuses before scoring, or admits the job to scoring.
pub fn admit(
    job: &VerificationRequested,
    loaded: Loaded,
    ctx: Context<'_>,
) -> Result<Admitted, Box<Outcome>> {
    let (policy, now) = (ctx.policy, ctx.now);
    let Some(mut profile) = loaded.profile else {
        return Err(Box::new(Outcome::error(
            Code::ProfileNotFound,
            "no profile for this user",
        )));
    };
    match profile.status {
        ProfileStatus::Enrolled => {}
        ProfileStatus::NotEnrolled => {
            return Err(Box::new(
                Outcome::error(Code::NotEnrolled, "enrollment is not complete")
                    .with_progress(&profile, policy),
            ));
        }
        // RE_ENROLL is set only when the active model had no voiceprint;
        // after a rollback (or a late rebuild) it has one again, and the
        // user is enrolled as before.
        ProfileStatus::ReEnroll => {
            if loaded.voiceprint.is_none() {
                return Err(Box::new(Outcome::error(
                    Code::ReEnrollRequired,
                    "the voiceprint must be rebuilt",
                )));
            }
            profile.status = ProfileStatus::Enrolled;
        }
        ProfileStatus::OptedOut => {
            return Err(Box::new(Outcome::error(
                Code::OptedOut,
                "the user opted out of voice biometrics",
            )));
        }
        ProfileStatus::Locked => {
            return Err(Box::new(super::locked().with_progress(&profile, policy)));
        }
    }
    if profile.cooldown_until > now {
        let mut cooldown = Outcome::new(DecisionKind::Cooldown, vec![Code::Cooldown])
            .with_progress(&profile, policy);
        cooldown.retry_after_ms = Some(profile.cooldown_until - now);
        // No audio read yet: the band is the one the channel names.
        let band = Band::of(crate::audio::MODEL_SAMPLE_RATE, job.channel.as_deref());
        let judged_by = voice_thresholds(ctx, band);
        cooldown.thresholds = Some(thresholds(&judged_by, ctx.norm.map(|_| band)));
        cooldown.session_id = job.session_id.clone();
        return Err(Box::new(cooldown));
    }
    let Some(voiceprint) = loaded.voiceprint else {
        // The active model changed and this user's voiceprint was not
        // rebuilt: the profile must enroll again under the new model.
        profile.status = ProfileStatus::ReEnroll;
        profile.updated_at = now;
        return Err(Box::new(
            Outcome::error(
                Code::ReEnrollRequired,
                "no voiceprint under the active model",
            )
            .with_progress(&profile, policy)
            .with(Mutation::PutProfile(profile)),
        ));
    };
    Ok(Admitted {
        profile,
        voiceprint,
        model_id: loaded.model_id,
    })
}

/// Rules on a scored verification, against the tenant's watchlist (every
/// model), which is read only for admitted jobs.
pub fn decide(
    job: &VerificationRequested,
    admitted: Admitted,
    watchlist: &[WatchlistEntry],
    sample: &Analysis,
    ctx: Context<'_>,
) -> Outcome {
    let (policy, now) = (ctx.policy, ctx.now);
    let Admitted {
        mut profile,
        voiceprint,
        model_id,
    } = admitted;
    let mut outcome = Outcome::new(DecisionKind::Retry, Vec::new());
    outcome.speech_millis = sample.speech_millis;
    outcome.model_id = Some(model_id.clone());
    let band = sample.band(job.channel.as_deref());
    let judged_by = voice_thresholds(ctx, band);
    outcome.thresholds = Some(thresholds(&judged_by, ctx.norm.map(|_| band)));
    outcome.session_id = job.session_id.clone();
    if sample.speech_millis < policy.min_speech_millis {
        outcome.reasons = vec![Code::NotEnoughSpeech];
        return outcome.with_progress(&profile, policy);
    }
    // A listed user, or a voice matching any listed voice of this model, is
    // refused whoever it claims to be.
    let watchlisted = watchlist.iter().any(|w| {
        w.user_id == job.user_id
            || (w.model_id == model_id
                && cosine(&sample.embedding, &w.embedding) >= policy.accept_threshold)
    });
    let enrolled_speech = profile.net_speech_millis;
    let (score, calibrated) = voice_score(job, &voiceprint, enrolled_speech, sample, band, ctx);
    let raw = calibrated.map_or(score, |s| s.raw);
    let (voice, voice_reason) = match policy::verdict(score, &judged_by) {
        _ if watchlisted => (Verdict::Reject, Code::WatchlistMatch),
        Verdict::Accept => (Verdict::Accept, Code::VoiceMatch),
        Verdict::Retry => (Verdict::Retry, Code::VoiceUncertain),
        Verdict::Reject => (Verdict::Reject, Code::VoiceMismatch),
    };
    let reported;
    let signals = if policy.liveness_enforced {
        &sample.signals
    } else {
        reported = liveness_reported_only(&sample.signals);
        &reported
    };
    let fused = fuse(voice, voice_reason, signals, job.expected_phrase.is_some());
    let phrase_check = sample.signals.iter().find(|s| s.kind == SignalKind::Phrase);
    let check = |kind| sample.signals.iter().find(|s| s.kind == kind);
    let replay_check = check(SignalKind::Replay);
    let synthetic_check = check(SignalKind::Synthetic);
    outcome.scores = Some(Scores {
        score,
        raw,
        calibrated: calibrated.map(|s| (s.norm, s.llr)),
        confidence: policy::confidence(score, &judged_by),
        bio_result: policy::bio_result(score, &judged_by),
        signals: Signals {
            voice: policy::tier(score, &judged_by).as_str().into(),
            phrase: fused.phrase.as_str().into(),
            liveness: fused.liveness.as_str().into(),
            phrase_score: phrase_check.and_then(|s| s.score),
            phrase_threshold: phrase_check.and_then(|s| s.threshold),
            liveness_score: replay_check.and_then(|s| s.score),
            liveness_threshold: replay_check.and_then(|s| s.threshold),
            synthetic_score: synthetic_check.and_then(|s| s.score),
            synthetic_threshold: synthetic_check.and_then(|s| s.threshold),
        },
    });
    outcome.reasons = fused.reasons;
    // The caller's own live voice: a replay of it later is recognised. An
    // impostor's audio, or a replay, is not kept under this user.
    if voice != Verdict::Reject
        && fused.liveness != Tier::Low
        && let Some(keep) = super::keep_fingerprint(&job.user_id, sample, ctx)
    {
        outcome = outcome.with(keep);
    }
    match fused.verdict {
        Verdict::Accept => {
            outcome.kind = DecisionKind::Accept;
            profile.failures = 0;
            profile.cooldown_until = 0;
            // Learning stays on the raw cosine, whatever the decision scale:
            // only a sample clearly close to the voiceprint itself moves it.
            if raw >= policy.accept_threshold + policy.refine_margin
                && voiceprint.weight < policy.max_voiceprint_weight
            {
                let (embedding, weight) = policy::merge_embedding(
                    Some(&voiceprint),
                    &sample.embedding,
                    policy.refine_weight,
                );
                outcome = outcome.with(Mutation::PutVoiceprint(Voiceprint {
                    embedding,
                    weight,
                    updated_at: now,
                    ..voiceprint
                }));
                profile.sessions += 1;
                // Right after the deciding reason, before notes such as
                // `phrase_not_checked`.
                outcome.reasons.insert(1, Code::VoiceprintRefined);
            }
        }
        verdict @ (Verdict::Retry | Verdict::Reject) => {
            outcome.kind = if verdict == Verdict::Retry {
                DecisionKind::Retry
            } else {
                DecisionKind::Reject
            };
            profile.failures += 1;
            let cooldown = policy::cooldown_millis(profile.failures, policy);
            if policy::locks_out(profile.failures, policy) {
                // No cooldown to wait out: only an admin unlock helps.
                profile.status = ProfileStatus::Locked;
                outcome.reasons.push(Code::ProfileLocked);
            } else if cooldown > 0 {
                profile.cooldown_until = now + cooldown as i64;
                outcome.retry_after_ms = Some(cooldown as i64);
            }
        }
    }
    profile.updated_at = now;
    profile.learning_progress = policy::learning_progress(&profile, policy);
    outcome
        .with_progress(&profile, policy)
        .with(Mutation::PutProfile(profile))
}
