//! Enrollment: consent gates, then each sample with enough speech is merged
//! into the voiceprint until the net speech reaches the tenant's target.

use timbre_schemas::{Code, DecisionKind, EnrollmentRequested};

use super::{Analysis, Context, new_profile};
use crate::domain::policy;
use crate::domain::{Consent, Mutation, Outcome, Profile, ProfileStatus, SignalKind, Voiceprint};

/// What enrollment reads before it scores.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The profile, if allocated.
    pub profile: Option<Profile>,
    /// Voice-biometrics consent, if recorded.
    pub consent: Option<Consent>,
    /// The voiceprint under the tenant's active model.
    pub voiceprint: Option<Voiceprint>,
    /// The tenant's active model.
    pub model_id: String,
}

/// Refuses before scoring: an explicit withdrawal always wins, whatever the
/// tenant's policy; a tenant may require granted consent; a locked profile
/// takes no samples until it is unlocked.
pub fn admit(loaded: &Loaded, ctx: Context<'_>) -> Result<(), Box<Outcome>> {
    if loaded
        .profile
        .as_ref()
        .is_some_and(|p| p.status == ProfileStatus::Locked)
    {
        return Err(Box::new(super::locked()));
    }
    match &loaded.consent {
        Some(c) if !c.granted => Err(Box::new(Outcome::error(
            Code::ConsentWithdrawn,
            "the user withdrew consent to voice biometrics",
        ))),
        None if ctx.policy.consent_required => Err(Box::new(Outcome::error(
            Code::ConsentRequired,
            "the tenant requires granted consent before enrollment",
        ))),
        _ => Ok(()),
    }
}

/// Takes a scored sample.
pub fn decide(
    job: &EnrollmentRequested,
    loaded: Loaded,
    sample: &Analysis,
    ctx: Context<'_>,
) -> Outcome {
    let (policy, now) = (ctx.policy, ctx.now);
    let fresh = || new_profile(&job.tenant, &job.user_id, now);
    let mut profile = loaded.profile.unwrap_or_else(fresh);
    let scored = |mut o: Outcome| {
        o.speech_millis = sample.speech_millis;
        o.model_id = Some(loaded.model_id.clone());
        o
    };
    if sample.speech_millis < policy.min_speech_millis {
        // A new profile is still allocated, so progress is visible.
        return scored(Outcome::new(
            DecisionKind::Retry,
            vec![Code::NotEnoughSpeech],
        ))
        .with_progress(&profile, policy)
        .with(Mutation::PutProfile(profile));
    }
    // A prompted sample that does not say its code is not the live speaker
    // answering the prompt: it is not merged.
    let phrase = sample.signals.iter().find(|s| s.kind == SignalKind::Phrase);
    if let Some(failed) = phrase.filter(|s| !s.pass) {
        return scored(Outcome::new(
            DecisionKind::Retry,
            vec![failed.reason.unwrap_or(Code::PhraseMismatch)],
        ))
        .with_progress(&profile, policy)
        .with(Mutation::PutProfile(profile));
    }
    let phrase_unchecked = job.expected_phrase.is_some() && phrase.is_none();
    let current = match profile.status {
        // A fresh start after a model change or an opt-out.
        ProfileStatus::ReEnroll | ProfileStatus::OptedOut => {
            profile = Profile {
                created_at: profile.created_at,
                ..fresh()
            };
            None
        }
        ProfileStatus::Enrolled if loaded.voiceprint.is_some() => {
            // A further sample must be the enrolled voice: merging any voice
            // at full weight would let a few samples of another speaker take
            // over the voiceprint.
            let score = policy::cosine(
                &sample.embedding,
                &loaded.voiceprint.as_ref().expect("guarded").embedding,
            );
            if score < policy.accept_threshold {
                return scored(Outcome::error(
                    Code::SampleMismatch,
                    "the sample does not match the enrolled voice",
                ))
                .with_progress(&profile, policy);
            }
            loaded.voiceprint
        }
        _ => {
            if loaded.voiceprint.is_none() && profile.samples > 0 {
                // Samples taken under another model do not count toward a
                // voiceprint of this one.
                profile = Profile {
                    created_at: profile.created_at,
                    ..fresh()
                };
            }
            loaded.voiceprint
        }
    };
    let (embedding, weight) = policy::merge_embedding(current.as_ref(), &sample.embedding, 1.0);
    profile.samples += 1;
    profile.net_speech_millis += sample.speech_millis;
    profile.updated_at = now;
    if policy::enrollment_progress(&profile, policy) >= 1.0 {
        profile.status = ProfileStatus::Enrolled;
    }
    profile.learning_progress = policy::learning_progress(&profile, policy);
    let reason = if profile.status == ProfileStatus::Enrolled {
        Code::Enrolled
    } else {
        Code::SampleAccepted
    };
    let mut reasons = vec![reason];
    if phrase_unchecked {
        reasons.push(Code::PhraseNotChecked);
    }
    let mut outcome = scored(Outcome::new(DecisionKind::Applied, reasons))
        .with_progress(&profile, policy)
        .with(Mutation::PutVoiceprint(Voiceprint {
            tenant: job.tenant.clone(),
            user_id: job.user_id.clone(),
            model_id: loaded.model_id.clone(),
            embedding,
            weight,
            updated_at: now,
        }));
    // Audio is kept only with consent to retain it: it is what lets a model
    // update rebuild the voiceprint without asking the user again.
    if loaded
        .consent
        .as_ref()
        .is_some_and(|c| c.granted && c.retain_audio)
    {
        outcome = outcome.with(Mutation::RetainAudio {
            user_id: job.user_id.clone(),
            wav: job.audio.clone(),
            at: now,
            keep_newest: policy.max_retained_recordings,
        });
    }
    // The fingerprint a replay of this sample will be recognised by.
    if loaded.consent.as_ref().is_some_and(|c| c.granted)
        && let Some(keep) = super::keep_fingerprint(&job.user_id, sample, ctx)
    {
        outcome = outcome.with(keep);
    }
    outcome.with(Mutation::PutProfile(profile))
}

/// The outcome plus the job's identifiers, written with the profile: an
/// enrollment that allocated or updated a profile records them, so they
/// go wherever the profile goes (a deletion erases both). A job without
/// identifiers keeps the stored set.
pub fn with_biokeys(outcome: Outcome, job: &EnrollmentRequested) -> Outcome {
    let writes_profile = outcome
        .mutations
        .iter()
        .any(|m| matches!(m, Mutation::PutProfile(_)));
    if job.biokeys.is_empty() || !writes_profile {
        return outcome;
    }
    outcome.with(Mutation::PutBiokeys {
        user_id: job.user_id.clone(),
        biokeys: job.biokeys.clone(),
    })
}
