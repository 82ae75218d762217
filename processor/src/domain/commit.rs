//! What a job changes, as a list of mutations every store applies in one
//! shared order, written atomically with the job's decision.

use timbre_schemas::Biokey;

use super::{Consent, Profile, RescoreResult, Voiceprint, WatchlistEntry};

/// One state change of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Erase the user's voiceprints (every model), fingerprints, retained
    /// audio and diagnostic records.
    EraseBiometrics {
        /// User id.
        user_id: String,
    },
    /// Erase the user's retained enrollment audio and diagnostic records
    /// only (retention withdrawn).
    EraseAudio {
        /// User id.
        user_id: String,
    },
    /// Delete everything about the user: profile, identifiers, consent,
    /// biometrics, diagnostic records, watchlist entries (the decision
    /// stays as the audit record).
    DeleteUser {
        /// User id.
        user_id: String,
    },
    /// Take the user's voice off the watchlist (every model).
    Unwatchlist {
        /// User id.
        user_id: String,
    },
    /// List the job's decision among the user's recent decisions (what an
    /// operator's console shows); the list goes with the user's deletion,
    /// the decision itself stays as the audit record.
    IndexDecision {
        /// User id.
        user_id: String,
        /// When the job was decided (ms since the epoch).
        at: i64,
    },
    /// Record the outcome of re-scoring one user.
    PutRescoreResult(RescoreResult),
    /// Put a voice on the watchlist.
    Watchlist(WatchlistEntry),
    /// Write the profile.
    PutProfile(Profile),
    /// Replace the user's identifiers (and their lookup entries).
    PutBiokeys {
        /// User id.
        user_id: String,
        /// The whole new set.
        biokeys: Vec<Biokey>,
    },
    /// Write a voiceprint.
    PutVoiceprint(Voiceprint),
    /// Write a consent record.
    PutConsent(Consent),
    /// Keep the landmark fingerprint of the job's audio (keyed by the job's
    /// request id) for replay detection.
    KeepFingerprint {
        /// User id.
        user_id: String,
        /// [`crate::liveness::Fingerprint::to_bytes`].
        landmarks: Vec<u8>,
        /// When the audio was decided (ms since the epoch).
        at: i64,
        /// How long it is kept.
        ttl_secs: u32,
        /// How many of the user's newest fingerprints are read back (a
        /// store may drop older ones).
        keep_newest: u32,
    },
    /// Keep enrollment audio (keyed by the job's request id), and of the
    /// user's retained recordings only the `keep_newest` newest.
    RetainAudio {
        /// User id.
        user_id: String,
        /// The WAV bytes as submitted.
        wav: Vec<u8>,
        /// When the sample was decided (ms since the epoch).
        at: i64,
        /// Recordings kept per user, this one included.
        keep_newest: u32,
    },
    /// Keep the job's audio and its decision (the commit's) as a diagnostic
    /// record, keyed by the job's request id, for `ttl_secs`.
    KeepDiagnostics {
        /// User id.
        user_id: String,
        /// `enrollment` or `verification`.
        job: String,
        /// The WAV bytes as submitted.
        wav: Vec<u8>,
        /// When the job was decided (ms since the epoch).
        at: i64,
        /// How long the record is kept.
        ttl_secs: u32,
    },
}

impl Mutation {
    /// Position in the shared order: erasures before writes, so a job that
    /// both clears and writes (an opt-out, a re-enrollment) ends with the
    /// write.
    pub fn rank(&self) -> u8 {
        match self {
            // Listed before a deletion, so deleting a user unlists its own
            // decision too.
            Mutation::EraseBiometrics { .. }
            | Mutation::EraseAudio { .. }
            | Mutation::IndexDecision { .. } => 0,
            Mutation::DeleteUser { .. } => 1,
            Mutation::Unwatchlist { .. } => 2,
            Mutation::PutRescoreResult(_) => 3,
            Mutation::Watchlist(_) => 4,
            Mutation::PutProfile(_) | Mutation::PutBiokeys { .. } => 5,
            Mutation::PutVoiceprint(_) => 6,
            Mutation::PutConsent(_) => 7,
            Mutation::RetainAudio { .. }
            | Mutation::KeepFingerprint { .. }
            | Mutation::KeepDiagnostics { .. } => 8,
        }
    }
}

/// Everything one job changes, written atomically with its decision so a
/// redelivered job finds its decision and applies nothing twice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCommit {
    /// Tenant id.
    pub tenant: String,
    /// Idempotency key of the job.
    pub request_id: String,
    /// The encoded decision event.
    pub decision: Vec<u8>,
    /// State changes, in any order; stores apply [`JobCommit::ordered`].
    pub mutations: Vec<Mutation>,
}

impl JobCommit {
    /// The mutations in the order every store applies them.
    pub fn ordered(&self) -> Vec<&Mutation> {
        let mut ordered: Vec<&Mutation> = self.mutations.iter().collect();
        ordered.sort_by_key(|m| m.rank());
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasures_come_before_writes() {
        let commit = JobCommit {
            mutations: vec![
                Mutation::RetainAudio {
                    user_id: "u".into(),
                    wav: vec![1],
                    at: 1,
                    keep_newest: 10,
                },
                Mutation::Unwatchlist {
                    user_id: "u".into(),
                },
                Mutation::EraseBiometrics {
                    user_id: "u".into(),
                },
            ],
            ..JobCommit::default()
        };
        let ranks: Vec<u8> = commit.ordered().iter().map(|m| m.rank()).collect();
        assert_eq!(ranks, vec![0, 2, 8]);
    }
}
