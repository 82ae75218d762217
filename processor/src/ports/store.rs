//! State: profiles, voiceprints, consent, retained audio and decisions.

use async_trait::async_trait;
use thiserror::Error;
use timbre_schemas::{Biokey, Code};

use crate::domain::impostor_tail::TenantTails;
use crate::domain::{
    Consent, DiagnosticRecord, JobCommit, Profile, ProfileStatus, RescoreResult, RescoreRun,
    TenantModel, Voiceprint, WatchlistEntry,
};
use crate::liveness::Fingerprint;

/// Store failures; [`StoreError::code`] is stable.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The store URL or options are invalid.
    #[error("store configuration: {0}")]
    Config(String),
    /// The store refused the request itself (e.g. an invalid value): a
    /// retry fails the same way.
    #[error("store refused the request: {0}")]
    Rejected(String),
}

/// Impostor tails as a store read them back ([`TenantTails::decode`]).
pub fn stored_tails(bytes: &[u8]) -> Result<TenantTails, StoreError> {
    TenantTails::decode(bytes).ok_or_else(|| StoreError::Corrupt("impostor tails".into()))
}

impl StoreError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            StoreError::Unavailable(_) => Code::StoreUnavailable,
            StoreError::Corrupt(_) => Code::StoreCorrupt,
            StoreError::Config(_) => Code::StoreConfig,
            StoreError::Rejected(_) => Code::StoreRejected,
        }
    }
}

/// Persistent state of the engine.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies versioned, idempotent schema migrations; returns the version.
    async fn migrate(&self) -> Result<u32, StoreError>;

    /// Reads a profile.
    async fn profile(&self, tenant: &str, user_id: &str) -> Result<Option<Profile>, StoreError>;

    /// Reads the voiceprint of a user under a model.
    async fn voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<Option<Voiceprint>, StoreError>;

    /// Reads a user's consent for a purpose.
    async fn consent(
        &self,
        tenant: &str,
        user_id: &str,
        purpose: &str,
    ) -> Result<Option<Consent>, StoreError>;

    /// Request ids of a user's retained recordings, in the store's order.
    async fn retained_audio_ids(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// One retained recording; `None` when it was erased meanwhile. Readers
    /// take recordings one at a time, so memory holds one, not a user's ten.
    async fn retained_audio(
        &self,
        tenant: &str,
        user_id: &str,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every retained recording of a user as `(request_id, wav)`, read one
    /// at a time (for inspection and tests; the engine pages).
    async fn enrollment_audio(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for id in self.retained_audio_ids(tenant, user_id).await? {
            if let Some(wav) = self.retained_audio(tenant, user_id, &id).await? {
                out.push((id, wav));
            }
        }
        Ok(out)
    }

    /// Landmark fingerprints of a user's recent recordings (enrollment and
    /// verified audio), newest first, at most `limit`, none past its time
    /// to live.
    async fn fingerprints(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<Fingerprint>, StoreError>;

    /// A user's identifiers (empty when none were recorded).
    async fn biokeys(&self, tenant: &str, user_id: &str) -> Result<Vec<Biokey>, StoreError>;

    /// The users an identifier (name and digest) was recorded for, in id
    /// order. Each user writes and erases only its own entry, so two jobs
    /// of different users never touch one row (see
    /// [`Store::find_by_biokey`]).
    async fn biokey_owners(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// The first user (in id order) whose current identifier set holds
    /// this identifier, with that set: entries are confirmed against their
    /// owner's set, so a replaced or erased identifier finds no one.
    async fn find_by_biokey(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
    ) -> Result<Option<(String, Vec<Biokey>)>, StoreError> {
        for user in self.biokey_owners(tenant, name, digest).await? {
            let set = self.biokeys(tenant, &user).await?;
            if set.iter().any(|k| k.key == name && k.digest == digest) {
                return Ok(Some((user, set)));
            }
        }
        Ok(None)
    }

    /// A user's diagnostic records within their time to live, newest
    /// first (for the operator; the API shows none).
    async fn diagnostics(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<DiagnosticRecord>, StoreError>;

    /// The tenant's watchlist, every model (a listed user stays listed
    /// across a model change; voices match only within their model).
    async fn watchlist(&self, tenant: &str) -> Result<Vec<WatchlistEntry>, StoreError>;

    /// The decision already recorded for a job, if any.
    async fn decision(&self, tenant: &str, request_id: &str)
    -> Result<Option<Vec<u8>>, StoreError>;

    /// The request ids of the user's `limit` newest decisions, newest first
    /// (the index goes with the user's deletion and the decisions' TTL).
    async fn recent_decision_ids(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Binds a request id to the digest of one job, first come first served
    /// (a conditional insert); true when the id is bound to `digest`, now
    /// or before (a redelivery).
    async fn claim_request(
        &self,
        tenant: &str,
        request_id: &str,
        digest: &str,
    ) -> Result<bool, StoreError>;

    /// Writes a job's state changes and its decision as one unit.
    async fn commit(&self, commit: &JobCommit) -> Result<(), StoreError>;

    /// The model a tenant uses, when one was recorded (else the default).
    async fn tenant_model(&self, tenant: &str) -> Result<Option<TenantModel>, StoreError>;

    /// Records the model a tenant uses (one row: a cutover is atomic).
    async fn put_tenant_model(&self, model: &TenantModel) -> Result<(), StoreError>;

    /// A page of a tenant's users in id order, after `after`.
    async fn users(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProfileStatus)>, StoreError>;

    /// A re-scoring run.
    async fn rescore_run(
        &self,
        tenant: &str,
        target_model: &str,
    ) -> Result<Option<RescoreRun>, StoreError>;

    /// Records a re-scoring run.
    async fn put_rescore_run(&self, run: &RescoreRun) -> Result<(), StoreError>;

    /// A page of a run's per-user outcomes in user id order (the order of
    /// [`Store::users`]), after `after`.
    async fn rescore_results(
        &self,
        tenant: &str,
        target_model: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RescoreResult>, StoreError>;

    /// Deletes a user's voiceprint under one model.
    async fn delete_voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<(), StoreError>;

    /// A tenant's impostor tails under a model, as last saved (counts of
    /// impostor LLRs only: no user, score or voice in them).
    async fn impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
    ) -> Result<Option<TenantTails>, StoreError>;

    /// Saves a tenant's impostor tails under a model (one row, overwritten).
    async fn put_impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
        tails: &TenantTails,
    ) -> Result<(), StoreError>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
