//! Consent changes. Withdrawing voice-biometrics consent erases the user's
//! biometrics and opts the profile out; granting it again lets an
//! opted-out profile enroll anew.

use timbre_schemas::{Code, ConsentChanged, DecisionKind};

use super::{Context, opted_out};
use crate::domain::policy::BIOMETRIC_PURPOSE;
use crate::domain::{Consent, Mutation, Outcome, Profile, ProfileStatus};

/// Records the consent and applies what it implies to the profile.
pub fn decide(job: &ConsentChanged, profile: Option<Profile>, ctx: Context<'_>) -> Outcome {
    let now = ctx.now;
    let mut profile = profile;
    let mut outcome = Outcome::new(
        DecisionKind::Applied,
        vec![if job.granted {
            Code::ConsentGranted
        } else {
            Code::ConsentWithdrawn
        }],
    );
    if job.purpose == BIOMETRIC_PURPOSE {
        if job.granted && !job.retain_audio {
            // Retention withdrawn: audio kept under an earlier consent goes.
            outcome = outcome.with(Mutation::EraseAudio {
                user_id: job.user_id.clone(),
            });
        }
        if !job.granted {
            outcome = outcome.with(Mutation::EraseBiometrics {
                user_id: job.user_id.clone(),
            });
            profile = profile.map(|p| opted_out(p, now));
        } else if let Some(p) = profile
            .as_mut()
            .filter(|p| p.status == ProfileStatus::OptedOut)
        {
            p.status = ProfileStatus::NotEnrolled;
            p.updated_at = now;
        }
    }
    outcome = outcome.with(Mutation::PutConsent(Consent {
        tenant: job.tenant.clone(),
        user_id: job.user_id.clone(),
        purpose: job.purpose.clone(),
        granted: job.granted,
        retain_audio: job.retain_audio,
        updated_at: now,
    }));
    if let Some(p) = profile {
        outcome = outcome.with_progress(&p, ctx.policy);
        outcome = outcome.with(Mutation::PutProfile(p));
    }
    outcome
}
