//! The decision rules, one file per job kind: pure functions from what the
//! pipeline loaded (and, for audio jobs, what the scoring pool measured) to
//! an [`Outcome`](super::Outcome). No IO, no model, no clock: `now` is given.
//!
//! Audio jobs have two steps: `admit` refuses before any audio is scored
//! (no consent, not enrolled, cooldown…), `decide` rules on the scores.

pub mod consent;
pub mod enrollment;
pub mod profile;
pub mod rescore;
pub mod verification;

#[cfg(test)]
mod tests;

use timbre_schemas::Code;

use super::calibration::ScoreNorm;
use super::impostor_tail::TenantTails;
use super::signals::Signal;
use super::{Consent, Mutation, Outcome, Policy, Profile, ProfileStatus};
use crate::liveness::Fingerprint;

/// What every rule knows besides its inputs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The tenant's policy.
    pub policy: &'a Policy,
    /// The time of the decision (ms since the epoch).
    pub now: i64,
    /// Score normalisation of the job's model, when it has one.
    pub norm: Option<NormContext<'a>>,
}

/// What turns a raw voice score into a calibrated LLR: the model's bundled
/// normalisation, and the tenant's voiceprints that join its cohort.
#[derive(Debug, Clone, Copy)]
pub struct NormContext<'a> {
    /// Cohorts and calibration of the model.
    pub score_norm: &'a ScoreNorm,
    /// Voiceprints of the tenant under the model, by user id (a sample, up
    /// to the configured size).
    pub tenant: &'a [(String, Vec<f32>)],
    /// The impostor LLRs the tenant's earlier verifications produced, which
    /// raise the accept and reject lines where they reach higher than the
    /// calibration's (none: the bundled lines).
    pub tails: Option<&'a TenantTails>,
}

/// What the scoring pool measured in one job's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Raw speaker embedding.
    pub embedding: Vec<f32>,
    /// Net speech found by the VAD.
    pub speech_millis: u64,
    /// Sample rate of the submitted audio (8 kHz and below: narrowband).
    pub source_rate: u32,
    /// Signals of the analysers that ran (phrase, liveness).
    pub signals: Vec<Signal>,
    /// Landmark fingerprint of the audio, when the job keeps one for
    /// replay detection.
    pub fingerprint: Option<Fingerprint>,
}

impl Analysis {
    /// The band the sample is scored in: its source rate, or the telephone
    /// channel the request names.
    pub fn band(&self, channel: Option<&str>) -> super::calibration::Band {
        super::calibration::Band::of(self.source_rate, channel)
    }
}

/// The mutation that keeps a job's fingerprint for replay detection, when
/// the tenant keeps them and the job made one.
pub fn keep_fingerprint(user_id: &str, sample: &Analysis, ctx: Context<'_>) -> Option<Mutation> {
    let fingerprint = sample.fingerprint.as_ref()?;
    (ctx.policy.replay_memory_days > 0 && !fingerprint.is_empty()).then(|| {
        Mutation::KeepFingerprint {
            user_id: user_id.into(),
            landmarks: fingerprint.to_bytes(),
            at: ctx.now,
            ttl_secs: ctx.policy.replay_memory_days.saturating_mul(86_400),
            keep_newest: ctx.policy.replay_memory_recordings,
        }
    })
}

/// The outcome of an admitted audio job, plus the mutation that keeps its
/// recording and decision for diagnosis when the job asks for it (its API
/// key retains data), the tenant keeps diagnostics and the user's `consent`
/// lets audio be kept (granted, with `retain_audio`): a withdrawal of
/// retention erases the records, and no later job brings them back.
/// Refusals before admission keep nothing.
pub fn with_diagnostics(
    outcome: Outcome,
    user_id: &str,
    job: &str,
    wav: &[u8],
    retain: bool,
    consent: Option<&Consent>,
    ctx: Context<'_>,
) -> Outcome {
    let days = ctx
        .policy
        .diagnostics_days
        .min(super::policy::MAX_DIAGNOSTICS_DAYS);
    let consented = consent.is_some_and(|c| c.granted && c.retain_audio);
    if !retain || !consented || days == 0 || wav.is_empty() {
        return outcome;
    }
    outcome.with(Mutation::KeepDiagnostics {
        user_id: user_id.into(),
        job: job.into(),
        wav: wav.to_vec(),
        at: ctx.now,
        ttl_secs: days * 86_400,
    })
}

/// A fresh profile.
pub fn new_profile(tenant: &str, user_id: &str, now: i64) -> Profile {
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

/// The profile after an opt-out: biometrics and progress gone, history
/// kept. A locked profile stays locked: withdrawing consent and enrolling
/// another voice must not lift a lockout that only an admin unlock ends.
pub fn opted_out(profile: Profile, now: i64) -> Profile {
    let status = match profile.status {
        ProfileStatus::Locked => ProfileStatus::Locked,
        _ => ProfileStatus::OptedOut,
    };
    Profile {
        status,
        samples: 0,
        net_speech_millis: 0,
        sessions: 0,
        learning_progress: 0.0,
        updated_at: now,
        ..profile
    }
}

/// The refusal of any audio job of a locked profile.
pub fn locked() -> Outcome {
    Outcome::error(
        Code::ProfileLocked,
        "the profile is locked after repeated failed verifications; an admin must unlock it",
    )
}
