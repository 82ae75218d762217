use serde::{Deserialize, Serialize};

/// Enrollment state of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProfileStatus {
    /// Allocated; not enough net speech yet.
    NotEnrolled,
    /// Has a voiceprint under the tenant's active model.
    Enrolled,
    /// The model changed and the voiceprint could not be rebuilt.
    ReEnroll,
    /// The user withdrew consent; biometrics are erased.
    OptedOut,
    /// Enrolled, but locked after repeated failed verifications until an
    /// admin unlocks it.
    Locked,
}

impl ProfileStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileStatus::NotEnrolled => "NOT_ENROLLED",
            ProfileStatus::Enrolled => "ENROLLED",
            ProfileStatus::ReEnroll => "RE_ENROLL",
            ProfileStatus::OptedOut => "OPTED_OUT",
            ProfileStatus::Locked => "LOCKED",
        }
    }

    /// Holds a voiceprint that verifications (once unlocked) and re-scoring use.
    pub fn has_voiceprint(self) -> bool {
        matches!(self, ProfileStatus::Enrolled | ProfileStatus::Locked)
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NOT_ENROLLED" => ProfileStatus::NotEnrolled,
            "ENROLLED" => ProfileStatus::Enrolled,
            "RE_ENROLL" => ProfileStatus::ReEnroll,
            "OPTED_OUT" => ProfileStatus::OptedOut,
            "LOCKED" => ProfileStatus::Locked,
            _ => return None,
        })
    }
}

/// A user's profile within a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Tenant id.
    pub tenant: String,
    /// User id, unique within the tenant.
    pub user_id: String,
    /// Enrollment state.
    pub status: ProfileStatus,
    /// Accepted enrollment samples.
    pub samples: u32,
    /// Net speech over all accepted samples.
    pub net_speech_millis: u64,
    /// Adaptive-learning progress in [0, 1].
    pub learning_progress: f32,
    /// Successful verifications that refined the voiceprint.
    pub sessions: u32,
    /// Failed verifications since the last success (drives the cooldown).
    pub failures: u32,
    /// No verification is scored before this time (ms since the epoch; 0 = none).
    pub cooldown_until: i64,
    /// Creation time (ms since the epoch).
    pub created_at: i64,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

/// A speaker embedding aggregate under one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voiceprint {
    /// Tenant id.
    pub tenant: String,
    /// User id.
    pub user_id: String,
    /// Model id (name + weights hash) that produced the embedding.
    pub model_id: String,
    /// Running mean of the samples' unit embeddings.
    pub embedding: Vec<f32>,
    /// Total weight behind the mean (enrollment samples count 1, refinements less).
    pub weight: f32,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

/// A voice on the tenant's watchlist: verifications whose voice matches it
/// are rejected, whatever user they claim to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchlistEntry {
    /// Tenant id.
    pub tenant: String,
    /// User whose voiceprint was listed.
    pub user_id: String,
    /// Model of the embedding.
    pub model_id: String,
    /// Unit embedding of the listed voice.
    pub embedding: Vec<f32>,
    /// Free-text reason for the audit trail.
    pub reason: String,
    /// When it was listed (ms since the epoch).
    pub added_at: i64,
}

/// A job's recording and decision kept for diagnosis, because the API key
/// that submitted it retains data; erased with the user's biometrics and
/// at `expires_at` at the latest.
#[derive(Clone, PartialEq)]
pub struct DiagnosticRecord {
    /// Request id of the job.
    pub request_id: String,
    /// `enrollment` or `verification`.
    pub job: String,
    /// When the job was decided (ms since the epoch).
    pub at: i64,
    /// When the record is gone (ms since the epoch).
    pub expires_at: i64,
    /// The WAV bytes as submitted.
    pub wav: Vec<u8>,
    /// The encoded decision event.
    pub decision: Vec<u8>,
}

// The recording is printed as its length: a derived Debug would dump it.
impl std::fmt::Debug for DiagnosticRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiagnosticRecord")
            .field("request_id", &self.request_id)
            .field("job", &self.job)
            .field("at", &self.at)
            .field("expires_at", &self.expires_at)
            .field("wav_bytes", &self.wav.len())
            .field("decision_bytes", &self.decision.len())
            .finish()
    }
}

/// Consent of a user for a purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    /// Tenant id.
    pub tenant: String,
    /// User id.
    pub user_id: String,
    /// e.g. `voice_biometrics`.
    pub purpose: String,
    /// Whether consent is given.
    pub granted: bool,
    /// Whether enrollment audio may be kept (needed to re-score after a model update).
    pub retain_audio: bool,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}
