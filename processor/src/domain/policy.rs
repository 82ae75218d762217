//! Tenant policy and the scoring arithmetic the rules use: voiceprint
//! updates, score tiers, cooldown after repeated failures, learning
//! progress. No IO, no model.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use timbre_schemas::BioResult;

use super::signals::Tier;
use super::{Profile, Voiceprint};

/// The purpose voice-biometrics consent is recorded under.
pub const BIOMETRIC_PURPOSE: &str = "voice_biometrics";

/// Per-tenant decision settings (config `tenants.<id>` overrides `policy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Enrollment is refused without granted consent.
    pub consent_required: bool,
    /// Net speech that completes enrollment.
    pub enrollment_target_millis: u64,
    /// A sample with less net speech is `NOT_ENOUGH_SPEECH`.
    pub min_speech_millis: u64,
    /// Cosine score at or above which the voice matches (`accept`).
    pub accept_threshold: f32,
    /// Cosine score below which the voice does not match (`reject`); between
    /// the two the caller is asked to `retry`.
    pub reject_threshold: f32,
    /// Share of impostors accepted, for models with a bundled calibration:
    /// the voice matches when its log-likelihood ratio reaches the LLR at
    /// which this share of the calibration corpus's impostors passed. The
    /// cosine thresholds apply to models without one.
    pub accept_far: f64,
    /// Share of impostors above the reject line (calibrated models): below
    /// it the voice does not match; between the two, `retry`.
    pub reject_far: f64,
    /// Failures allowed before a cooldown starts.
    pub free_failures: u32,
    /// First cooldown; doubles with each further failure.
    pub base_cooldown_millis: u64,
    /// Longest cooldown.
    pub max_cooldown_millis: u64,
    /// Consecutive cooldowns after which the next failure locks the profile
    /// until an admin unlocks it (0: never lock). Without a lockout a capped
    /// cooldown still grants an attacker ~100 tries per user per day.
    pub lockout_after_cooldowns: u32,
    /// An accept this far above the threshold refines the voiceprint.
    pub refine_margin: f32,
    /// Weight of a refining sample (an enrollment sample weighs 1).
    pub refine_weight: f32,
    /// Refinements stop adding weight past this total, so learning stays bounded.
    pub max_voiceprint_weight: f32,
    /// `retain_audio` of a consent given over the API without one: whether
    /// enrollment audio is kept (so a model update can rebuild voiceprints
    /// without asking users again) unless the user says otherwise.
    pub retain_audio_by_default: bool,
    /// Whether API responses carry the voice score (the LLR, or the raw
    /// cosine). Off by default: a score lets an attacker hill-climb towards a voiceprint; the
    /// confidence and the tiers stay. Decision events always carry it.
    pub expose_score: bool,
    /// Whether dead letters of this tenant's refused audio jobs keep the
    /// audio, for diagnosis, for the dead-letter topic's retention (30 days
    /// by default). Off: the digest and size of the original and the job
    /// without its audio.
    pub dead_letter_audio: bool,
    /// Days the landmark fingerprints of a user's enrollment and verified
    /// audio are kept for replay detection (0: none kept, no replay check).
    /// Fingerprints hold no audio and no voice features; they are erased
    /// with the voiceprint.
    pub replay_memory_days: u32,
    /// Days a job's audio and decision are kept for diagnosis when the API
    /// key that submitted it retains data (`retain_data`); at most
    /// [`MAX_DIAGNOSTICS_DAYS`], 0: never kept.
    pub diagnostics_days: u32,
    /// Most recent recordings per user a verification is compared with.
    pub replay_memory_recordings: u32,
    /// Enrollment recordings kept per user (with consent to retain audio):
    /// the newest; older ones are deleted as new ones come. Bounds the
    /// audio a re-scoring job reads for one user.
    pub max_retained_recordings: u32,
    /// Whether a failed liveness check rejects. Off: liveness is reported in
    /// decisions (to measure it on a tenant's traffic first) and the voice
    /// and phrase decide alone.
    pub liveness_enforced: bool,
}

impl Default for Policy {
    fn default() -> Self {
        // Cosine thresholds (models without a calibration): the EER
        // threshold of CAM++ cosine scores was 0.45 on librispeech-r and 0.50
        // on 4-digit codes. False-accept rates (calibrated models): 0.1% to
        // accept; on held-out corpora the measured rate was 0.1–1.2%
        // (README, "Calibrated scores").
        Self {
            consent_required: true,
            enrollment_target_millis: 20_000,
            min_speech_millis: 1_000,
            accept_threshold: 0.50,
            reject_threshold: 0.35,
            accept_far: 0.001,
            reject_far: 0.01,
            free_failures: 3,
            base_cooldown_millis: 30_000,
            max_cooldown_millis: 15 * 60_000,
            lockout_after_cooldowns: 5,
            refine_margin: 0.10,
            refine_weight: 0.25,
            max_voiceprint_weight: 20.0,
            retain_audio_by_default: true,
            expose_score: false,
            replay_memory_days: 90,
            replay_memory_recordings: 20,
            diagnostics_days: MAX_DIAGNOSTICS_DAYS,
            liveness_enforced: true,
            max_retained_recordings: 10,
            dead_letter_audio: false,
        }
    }
}

/// Longest time diagnostic data is kept, whatever a policy says.
pub const MAX_DIAGNOSTICS_DAYS: u32 = 30;

/// Decision policy per tenant, with a default.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Applies to tenants without their own entry.
    pub default: Policy,
    /// Per-tenant policies (already layered on top of the default by the
    /// configuration loader).
    pub tenants: HashMap<String, Policy>,
}

impl Policies {
    /// The policy of `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> &Policy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// Verdict on the voice signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same speaker.
    Accept,
    /// Undecided: ask for another attempt.
    Retry,
    /// Different speaker.
    Reject,
}

/// The scale a voice score is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreScale {
    /// Raw cosine of the embeddings (models without a calibration).
    Cosine,
    /// Calibrated log-likelihood ratio (AS-norm, then calibration).
    Llr,
}

impl ScoreScale {
    /// Lowercase name, as in decision events.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreScale::Cosine => "cosine",
            ScoreScale::Llr => "llr",
        }
    }
}

/// The thresholds a voice score is judged against, on its scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceThresholds {
    /// The scale of the score and of both thresholds.
    pub scale: ScoreScale,
    /// At or above: the voice matches.
    pub accept: f32,
    /// Below: the voice does not match; between the two, `retry`.
    pub reject: f32,
}

impl VoiceThresholds {
    /// The policy's cosine thresholds.
    pub fn cosine(policy: &Policy) -> Self {
        Self {
            scale: ScoreScale::Cosine,
            accept: policy.accept_threshold,
            reject: policy.reject_threshold,
        }
    }

    /// The policy's false-accept rates read as LLRs on a calibration's
    /// impostor curve (`llr_at_far`).
    pub fn calibrated(policy: &Policy, llr_at_far: impl Fn(f64) -> f32) -> Self {
        let accept = llr_at_far(policy.accept_far);
        Self {
            scale: ScoreScale::Llr,
            accept,
            // A policy with the two rates the wrong way round gets no
            // `retry` band, never a reject above the accept line.
            reject: llr_at_far(policy.reject_far).min(accept),
        }
    }

    /// How sharply confidence grows with the distance to a threshold: a
    /// cosine 0.1 past it, or an LLR 1 (e:1 odds) past it, is ~0.95.
    fn steepness(&self) -> f32 {
        match self.scale {
            ScoreScale::Cosine => 30.0,
            ScoreScale::Llr => 3.0,
        }
    }
}

/// Tier of a signal, as reported in decisions.
pub fn tier(score: f32, t: &VoiceThresholds) -> Tier {
    if score >= t.accept {
        Tier::High
    } else if score >= t.reject {
        Tier::Medium
    } else {
        Tier::Low
    }
}

/// The verdict for a voice score.
pub fn verdict(score: f32, t: &VoiceThresholds) -> Verdict {
    if score >= t.accept {
        Verdict::Accept
    } else if score >= t.reject {
        Verdict::Retry
    } else {
        Verdict::Reject
    }
}

/// Confidence in the verdict, in [0, 1]: a logistic of the distance to the
/// nearest decision threshold (0.5 on a threshold).
pub fn confidence(score: f32, t: &VoiceThresholds) -> f32 {
    let distance = match verdict(score, t) {
        Verdict::Accept => score - t.accept,
        Verdict::Reject => t.reject - score,
        Verdict::Retry => {
            let mid = (t.accept + t.reject) / 2.0;
            -(score - mid).abs()
        }
    };
    1.0 / (1.0 + (-t.steepness() * distance).exp())
}

/// `TRUE_HIGH`/`TRUE_LOW`/`FALSE_LOW`/`FALSE_HIGH`: whether the voice matched
/// and how clearly.
pub fn bio_result(score: f32, t: &VoiceThresholds) -> BioResult {
    let mid = (t.accept + t.reject) / 2.0;
    match verdict(score, t) {
        Verdict::Accept => BioResult::TrueHigh,
        Verdict::Retry if score >= mid => BioResult::TrueLow,
        Verdict::Retry => BioResult::FalseLow,
        Verdict::Reject => BioResult::FalseHigh,
    }
}

/// Cosine similarity of two vectors (accumulated in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    (dot / (na.sqrt() * nb.sqrt()).max(1e-12)) as f32
}

/// L2-normalised copy.
pub fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// Adds a sample to a voiceprint as a weighted running mean of unit
/// embeddings; returns the new embedding and weight.
pub fn merge_embedding(
    current: Option<&Voiceprint>,
    sample: &[f32],
    weight: f32,
) -> (Vec<f32>, f32) {
    let sample = unit(sample);
    match current {
        None => (sample, weight),
        Some(vp) => {
            let total = vp.weight + weight;
            let merged = vp
                .embedding
                .iter()
                .zip(&sample)
                .map(|(a, b)| (a * vp.weight + b * weight) / total)
                .collect();
            (merged, total)
        }
    }
}

/// Fraction of the enrollment target reached.
pub fn enrollment_progress(profile: &Profile, policy: &Policy) -> f32 {
    (profile.net_speech_millis as f32 / policy.enrollment_target_millis.max(1) as f32).min(1.0)
}

/// Adaptive-learning progress: half from enrollment speech, half from the
/// first ten confident verifications that refined the voiceprint.
pub fn learning_progress(profile: &Profile, policy: &Policy) -> f32 {
    let sessions = profile.sessions.min(10) as f32 / 10.0;
    0.5 * enrollment_progress(profile, policy) + 0.5 * sessions
}

/// Cooldown after `failures` consecutive failures: none for the free ones,
/// then `base`, doubling, capped (FIDO biometric guidance: a few free
/// attempts, then a growing delay).
pub fn cooldown_millis(failures: u32, policy: &Policy) -> u64 {
    if failures < policy.free_failures {
        return 0;
    }
    let doublings = (failures - policy.free_failures).min(20);
    (policy.base_cooldown_millis << doublings).min(policy.max_cooldown_millis)
}

/// Whether the `failures`-th consecutive failure locks the profile: the
/// cooldowns before it (one per failure past the free ones) reached the
/// lockout count.
pub fn locks_out(failures: u32, policy: &Policy) -> bool {
    policy.lockout_after_cooldowns > 0
        && failures
            >= policy
                .free_failures
                .saturating_add(policy.lockout_after_cooldowns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_split_scores_into_three_verdicts() {
        let p = VoiceThresholds::cosine(&Policy::default());
        assert_eq!(verdict(0.7, &p), Verdict::Accept);
        assert_eq!(verdict(0.4, &p), Verdict::Retry);
        assert_eq!(verdict(0.1, &p), Verdict::Reject);
        assert_eq!(
            (tier(0.7, &p), tier(0.4, &p), tier(0.1, &p)),
            (Tier::High, Tier::Medium, Tier::Low)
        );
        assert_eq!(bio_result(0.46, &p), BioResult::TrueLow);
        assert_eq!(bio_result(0.36, &p), BioResult::FalseLow);
        assert!(confidence(0.8, &p) > 0.99 && confidence(0.0, &p) > 0.99);
        assert!((confidence(0.5, &p) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn calibrated_thresholds_come_from_the_false_accept_rates() {
        // An impostor curve where the LLR for rate r is -log10(r).
        let curve = |far: f64| -far.log10() as f32;
        let p = Policy {
            accept_far: 0.001,
            reject_far: 0.1,
            ..Policy::default()
        };
        let t = VoiceThresholds::calibrated(&p, curve);
        assert_eq!((t.scale, t.accept, t.reject), (ScoreScale::Llr, 3.0, 1.0));
        assert_eq!(verdict(2.0, &t), Verdict::Retry);
        // One LLR past the accept line is as clear as a cosine 0.1 past it.
        let llr = confidence(4.0, &t);
        let cos = confidence(0.6, &VoiceThresholds::cosine(&Policy::default()));
        assert!((llr - cos).abs() < 1e-6 && llr > 0.95);
        // Rates the wrong way round: no reject above the accept line.
        let swapped = Policy {
            accept_far: 0.1,
            reject_far: 0.001,
            ..Policy::default()
        };
        let t = VoiceThresholds::calibrated(&swapped, curve);
        assert_eq!((t.accept, t.reject), (1.0, 1.0));
    }

    #[test]
    fn cooldown_starts_after_the_free_failures_and_grows() {
        let p = Policy::default();
        assert_eq!(cooldown_millis(2, &p), 0);
        assert_eq!(cooldown_millis(3, &p), 30_000);
        assert_eq!(cooldown_millis(4, &p), 60_000);
        assert_eq!(cooldown_millis(40, &p), p.max_cooldown_millis);
    }

    #[test]
    fn the_failure_after_the_last_allowed_cooldown_locks() {
        let p = Policy::default();
        // 3 free failures, then 5 cooldowns (failures 3..=7), then a lock.
        assert!(!locks_out(7, &p));
        assert!(locks_out(8, &p));
        let never = Policy {
            lockout_after_cooldowns: 0,
            ..Policy::default()
        };
        assert!(!locks_out(1000, &never));
    }

    #[test]
    fn merging_is_a_weighted_mean_of_unit_vectors() {
        let (first, w) = merge_embedding(None, &[3.0, 4.0], 1.0);
        assert_eq!((first.clone(), w), (vec![0.6, 0.8], 1.0));
        let vp = Voiceprint {
            tenant: "t".into(),
            user_id: "u".into(),
            model_id: "m".into(),
            embedding: first,
            weight: 1.0,
            updated_at: 0,
        };
        let (merged, w) = merge_embedding(Some(&vp), &[0.0, 2.0], 1.0);
        assert_eq!(w, 2.0);
        assert!((merged[0] - 0.3).abs() < 1e-6 && (merged[1] - 0.9).abs() < 1e-6);
    }
}
