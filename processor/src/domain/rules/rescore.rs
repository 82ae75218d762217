//! Re-scoring one user after a model update: the retained enrollment audio
//! is embedded under the run's target model into a shadow voiceprint; live
//! traffic keeps using the active model until the tenant cuts over.

use timbre_schemas::{Code, DecisionKind, RescoreRequested};

use super::Context;
use crate::domain::policy;
use crate::domain::{
    Consent, Mutation, Outcome, Profile, RescoreResult, Voiceprint, WatchlistEntry,
};

/// What re-scoring reads to decide whether it may read the user's audio.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The profile, if any.
    pub profile: Option<Profile>,
    /// Voice-biometrics consent, if recorded.
    pub consent: Option<Consent>,
}

fn result(job: &RescoreRequested, ok: bool, detail: &str, now: i64) -> Mutation {
    Mutation::PutRescoreResult(RescoreResult {
        tenant: job.tenant.clone(),
        target_model: job.to_model.clone(),
        user_id: job.user_id.clone(),
        ok,
        detail: detail.to_string(),
        // Never before the job was published (the planner's clock): the
        // planner counts only outcomes stamped at or after its run began,
        // and this processor's clock may lag the planner's.
        updated_at: now.max(job.occurred_at),
    })
}

/// A failed re-scoring of this user: recorded in the run's results, never
/// dead-lettered (the job itself was well formed).
pub fn failed(job: &RescoreRequested, code: Code, message: &str, ctx: Context<'_>) -> Outcome {
    let mut outcome =
        Outcome::error(code, message).with(result(job, false, code.as_str(), ctx.now));
    if let Some(e) = &mut outcome.error {
        e.dead_letter = false;
    }
    outcome
}

/// Refuses before any retained audio is read: only enrolled users whose
/// consent still allows keeping their audio are re-scored.
pub fn admit(
    job: &RescoreRequested,
    loaded: &Loaded,
    ctx: Context<'_>,
) -> Result<(), Box<Outcome>> {
    let enrolled = loaded
        .profile
        .as_ref()
        .is_some_and(|p| p.status.has_voiceprint());
    if !enrolled {
        return Err(Box::new(failed(
            job,
            Code::NotEnrolled,
            "only enrolled users are re-scored",
            ctx,
        )));
    }
    match &loaded.consent {
        Some(c) if c.granted && c.retain_audio => {}
        Some(c) if c.granted => {
            return Err(Box::new(failed(
                job,
                Code::NoRetainedAudio,
                "the user withdrew consent to retain audio",
                ctx,
            )));
        }
        _ => {
            return Err(Box::new(failed(
                job,
                Code::ConsentWithdrawn,
                "no granted consent to voice biometrics",
                ctx,
            )));
        }
    }
    Ok(())
}

/// Builds the shadow voiceprint from the embeddings of the retained audio
/// (one per retained recording); `listed` is the user's watchlist entry,
/// which follows the voice to the new model.
pub fn decide(
    job: &RescoreRequested,
    listed: Option<WatchlistEntry>,
    embeddings: &[Vec<f32>],
    ctx: Context<'_>,
) -> Outcome {
    if embeddings.is_empty() {
        return failed(
            job,
            Code::NoRetainedAudio,
            "no enrollment audio was retained (consent without retain_audio)",
            ctx,
        );
    }
    let now = ctx.now;
    let mut shadow: Option<Voiceprint> = None;
    for embedding in embeddings {
        let (embedding, weight) = policy::merge_embedding(shadow.as_ref(), embedding, 1.0);
        shadow = Some(Voiceprint {
            tenant: job.tenant.clone(),
            user_id: job.user_id.clone(),
            model_id: job.to_model.clone(),
            embedding,
            weight,
            updated_at: now,
        });
    }
    let mut outcome = Outcome::new(DecisionKind::Applied, vec![Code::VoiceprintRebuilt]);
    outcome.model_id = Some(job.to_model.clone());
    if let Some(v) = shadow {
        // A listed voice stays listed under the new model.
        if let Some(entry) = listed {
            outcome = outcome.with(Mutation::Watchlist(WatchlistEntry {
                model_id: job.to_model.clone(),
                embedding: v.embedding.clone(),
                added_at: now,
                ..entry
            }));
        }
        outcome = outcome.with(Mutation::PutVoiceprint(v));
    }
    outcome.with(result(job, true, "", now))
}
