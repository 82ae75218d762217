//! Profile commands: create, opt out, delete, unlock, and the tenant watchlist.

use timbre_schemas::{Code, DecisionKind, ProfileCommand, ProfileCommandKind};

use super::{Context, new_profile, opted_out};
use crate::domain::{
    BIOMETRIC_PURPOSE, Consent, Mutation, Outcome, Profile, ProfileStatus, Voiceprint,
    WatchlistEntry,
};

/// What a profile command reads.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The profile, if any.
    pub profile: Option<Profile>,
    /// For `GREYLIST_ADD`: the voiceprint under the tenant's active model.
    pub voiceprint: Option<Voiceprint>,
}

/// Applies a profile command.
pub fn decide(job: &ProfileCommand, loaded: Loaded, ctx: Context<'_>) -> Outcome {
    let now = ctx.now;
    let user = || job.user_id.clone();
    let existing = loaded.profile;
    let applied = |reason| Outcome::new(DecisionKind::Applied, vec![reason]);
    let (outcome, profile) = match job.command {
        ProfileCommandKind::Create => {
            let reason = if existing.is_some() {
                Code::ProfileExists
            } else {
                Code::ProfileCreated
            };
            let profile = existing.unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now));
            (applied(reason), profile)
        }
        ProfileCommandKind::OptOut => {
            let profile = opted_out(
                existing.unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now)),
                now,
            );
            // Opting out withdraws consent too, so no later (or reordered)
            // enrollment can silently enroll the user again.
            let outcome = applied(Code::OptedOut)
                .with(Mutation::EraseBiometrics { user_id: user() })
                .with(Mutation::PutConsent(Consent {
                    tenant: job.tenant.clone(),
                    user_id: user(),
                    purpose: BIOMETRIC_PURPOSE.into(),
                    granted: false,
                    retain_audio: false,
                    updated_at: now,
                }));
            (outcome, profile)
        }
        ProfileCommandKind::Delete => {
            // Everything about the user goes; the decision stays as the audit record.
            let reason = if existing.is_some() {
                Code::ProfileDeleted
            } else {
                Code::ProfileAbsent
            };
            return applied(reason).with(Mutation::DeleteUser { user_id: user() });
        }
        ProfileCommandKind::GreylistAdd => {
            let Some(voiceprint) = loaded.voiceprint else {
                return Outcome::error(
                    Code::NotEnrolled,
                    "only an enrolled voice can be put on the watchlist",
                );
            };
            let outcome = applied(Code::Watchlisted).with(Mutation::Watchlist(WatchlistEntry {
                tenant: job.tenant.clone(),
                user_id: user(),
                model_id: voiceprint.model_id,
                embedding: voiceprint.embedding,
                reason: job.reason.clone().unwrap_or_default(),
                added_at: now,
            }));
            let profile = existing.unwrap_or_else(|| new_profile(&job.tenant, &job.user_id, now));
            (outcome, profile)
        }
        ProfileCommandKind::Unlock => {
            let Some(mut profile) = existing else {
                return Outcome::error(Code::ProfileNotFound, "no profile for this user");
            };
            if profile.status == ProfileStatus::Locked {
                // Locked, then opted out: no voiceprint is left to verify.
                profile.status = if profile.samples > 0 {
                    ProfileStatus::Enrolled
                } else {
                    ProfileStatus::NotEnrolled
                };
            }
            profile.failures = 0;
            profile.cooldown_until = 0;
            profile.updated_at = now;
            (applied(Code::ProfileUnlocked), profile)
        }
        ProfileCommandKind::GreylistRemove => {
            let outcome =
                applied(Code::Unwatchlisted).with(Mutation::Unwatchlist { user_id: user() });
            let Some(profile) = existing else {
                // Nothing to allocate for a user who never existed.
                return outcome;
            };
            (outcome, profile)
        }
    };
    outcome
        .with_progress(&profile, ctx.policy)
        .with(Mutation::PutProfile(profile))
}
