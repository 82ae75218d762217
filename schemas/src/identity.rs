//! Which job a request id belongs to. A request id (the HTTP
//! `Idempotency-Key`) names one job: retries of that job share it, and a
//! different job sent under the same id must never receive its decision.
//! The job is pinned by a digest of what it asks for.

use sha2::{Digest, Sha256};

use crate::contracts::{Decision, JobKind, ProfileCommandKind};
use crate::registry::Request;

/// Domain tag of the digest; bump it if the encoding below ever changes.
const DIGEST_TAG: &[u8] = b"timbre/job-digest/v1";

/// What a decision must match to answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIdentity {
    /// Tenant.
    pub tenant: String,
    /// Idempotency key.
    pub request_id: String,
    /// User.
    pub user_id: String,
    /// Kind of job.
    pub job: JobKind,
    /// [`Request::digest`].
    pub digest: String,
}

impl JobIdentity {
    /// Whether `decision` answers this job: same id, user, kind and digest.
    /// Decisions written before digests existed match on the rest.
    pub fn is_answered_by(&self, decision: &Decision) -> bool {
        decision.tenant == self.tenant
            && decision.request_id == self.request_id
            && decision.user_id == self.user_id
            && decision.job == self.job
            && decision
                .request_digest
                .as_ref()
                .is_none_or(|d| *d == self.digest)
    }
}

/// Length-prefixed fields, so no two different jobs encode alike.
struct Fields(Sha256);

impl Fields {
    fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    fn text(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    fn optional(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => {
                self.0.update([0]);
                self
            }
            Some(v) => {
                self.0.update([1]);
                self.text(v)
            }
        }
    }

    fn flag(&mut self, value: bool) -> &mut Self {
        self.0.update([u8::from(value)]);
        self
    }
}

impl Request {
    /// SHA-256 (hex) of the tenant, user, kind of job and body. The request
    /// id, timestamps, schema version, trace context and diagnostics flag
    /// are left out: a retry of the same call differs only there (the flag
    /// says how the job is kept, not what it asks).
    pub fn digest(&self) -> String {
        let mut f = Fields(Sha256::new());
        f.bytes(DIGEST_TAG)
            .text(self.tenant())
            .text(self.user_id())
            .text(self.kind().name());
        match self {
            Self::Enrollment(r) => {
                f.bytes(&r.audio)
                    .optional(r.audio_uri.as_deref())
                    .optional(r.channel.as_deref());
                // Hashed only when present, so the digest of an enrollment
                // without one is what it was before the field existed (a
                // retry across an upgrade is the same job).
                if let Some(phrase) = r.expected_phrase.as_deref() {
                    f.text(phrase);
                }
                // Likewise: identifiers change what the job writes.
                for k in &r.biokeys {
                    f.text(&k.key)
                        .text(&k.digest)
                        .optional(k.display_name.as_deref())
                        .text(&k.priority.to_string())
                        .flag(k.sensitive)
                        .flag(k.is_user_id);
                }
            }
            Self::Verification(r) => {
                f.bytes(&r.audio)
                    .optional(r.audio_uri.as_deref())
                    .optional(r.session_id.as_deref())
                    .optional(r.expected_phrase.as_deref())
                    .optional(r.channel.as_deref());
            }
            Self::Consent(r) => {
                f.flag(r.granted).text(&r.purpose).flag(r.retain_audio);
            }
            Self::Profile(r) => {
                let command = match r.command {
                    ProfileCommandKind::Create => "CREATE",
                    ProfileCommandKind::Delete => "DELETE",
                    ProfileCommandKind::OptOut => "OPT_OUT",
                    ProfileCommandKind::GreylistAdd => "GREYLIST_ADD",
                    ProfileCommandKind::GreylistRemove => "GREYLIST_REMOVE",
                    ProfileCommandKind::Unlock => "UNLOCK",
                };
                f.text(command).optional(r.reason.as_deref());
            }
            Self::Rescore(r) => {
                f.text(&r.plan_id).text(&r.from_model).text(&r.to_model);
            }
        }
        hex::encode(f.0.finalize())
    }

    /// The job's identity, digest included (hashes the body once).
    pub fn identity(&self) -> JobIdentity {
        JobIdentity {
            tenant: self.tenant().to_string(),
            request_id: self.request_id().to_string(),
            user_id: self.user_id().to_string(),
            job: self.job(),
            digest: self.digest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{ConsentChanged, VerificationRequested};

    fn verification(user: &str, audio: &[u8]) -> Request {
        Request::Verification(VerificationRequested::new(
            "k",
            "t",
            user,
            1,
            audio.to_vec(),
        ))
    }

    #[test]
    fn retries_share_a_digest_other_jobs_do_not() {
        let first = verification("alice", b"wav");
        let mut retry = verification("alice", b"wav");
        if let Request::Verification(r) = &mut retry {
            r.occurred_at = 99;
            r.request_id = "other-id".into();
        }
        assert_eq!(first.digest(), retry.digest());
        assert_ne!(first.digest(), verification("bob", b"wav").digest());
        assert_ne!(first.digest(), verification("alice", b"wa").digest());
        let consent = |granted| {
            Request::Consent(ConsentChanged::new(
                "k",
                "t",
                "alice",
                1,
                granted,
                "voice_biometrics",
                false,
            ))
        };
        assert_ne!(consent(true).digest(), consent(false).digest());
        assert_eq!(first.digest().len(), 64);
    }

    #[test]
    fn a_decision_answers_only_its_own_job() {
        let request = verification("alice", b"wav");
        let identity = request.identity();
        let mut decision = Decision::new(
            "k",
            "t",
            "alice",
            JobKind::Verification,
            crate::contracts::DecisionKind::Accept,
            1,
            2,
        );
        assert!(
            identity.is_answered_by(&decision),
            "no digest: legacy match"
        );
        decision.request_digest = Some(identity.digest.clone());
        assert!(identity.is_answered_by(&decision));
        let other = verification("alice", b"other wav").identity();
        assert!(!other.is_answered_by(&decision));
        decision.user_id = "bob".into();
        assert!(!identity.is_answered_by(&decision));
    }
}
