//! The decision: the one output of every job.

use serde::{Deserialize, Serialize};

use super::{Contract, RecordKind, SchemaVersion, TraceContext};
use crate::code::Code;
use crate::error::SchemaError;
use crate::validate::{self, Limits, Shared};

/// Kind of job a decision answers. Symbols may only be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobKind {
    /// [`EnrollmentRequested`](super::EnrollmentRequested)
    Enrollment,
    /// [`VerificationRequested`](super::VerificationRequested)
    Verification,
    /// [`ConsentChanged`](super::ConsentChanged)
    Consent,
    /// [`ProfileCommand`](super::ProfileCommand)
    Profile,
    /// [`RescoreRequested`](super::RescoreRequested)
    Rescore,
}

impl JobKind {
    /// Every kind of job.
    pub const ALL: [JobKind; 5] = [
        Self::Enrollment,
        Self::Verification,
        Self::Consent,
        Self::Profile,
        Self::Rescore,
    ];

    /// The job kind of a request record; `None` for decisions and dead letters.
    pub const fn of(record: RecordKind) -> Option<Self> {
        match record {
            RecordKind::EnrollmentRequested => Some(Self::Enrollment),
            RecordKind::VerificationRequested => Some(Self::Verification),
            RecordKind::ConsentChanged => Some(Self::Consent),
            RecordKind::ProfileCommand => Some(Self::Profile),
            RecordKind::RescoreRequested => Some(Self::Rescore),
            RecordKind::Decision | RecordKind::DeadLetter => None,
        }
    }
}

/// Outcome of a job. Symbols may only be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionKind {
    /// Verification passed / enrollment sample taken.
    Accept,
    /// Inconclusive; the caller may try again (e.g. too little speech).
    Retry,
    /// Verification failed.
    Reject,
    /// Too many attempts; wait `retry_after_ms`.
    Cooldown,
    /// A command or consent change took effect.
    Applied,
    /// The job could not be processed; see `error_code`.
    Error,
}

/// Lifecycle state of a voice profile. Symbols may only be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProfileStatus {
    /// No usable voiceprint yet.
    NotEnrolled,
    /// Voiceprint ready for verification.
    Enrolled,
    /// Voiceprint must be rebuilt (e.g. model change without stored audio).
    ReEnroll,
    /// The user opted out; no biometric processing.
    OptedOut,
    /// Locked after repeated failed verifications; an admin unlocks it.
    Locked,
}

/// Biometric result class. Symbols may only be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BioResult {
    /// Same speaker, high confidence.
    TrueHigh,
    /// Same speaker, low confidence.
    TrueLow,
    /// Different speaker, low confidence.
    FalseLow,
    /// Different speaker, high confidence.
    FalseHigh,
    /// No biometric result (error or not scored).
    Error,
}

/// Per-signal tiers fused into the verdict. Each is `high`, `medium`, `low`
/// or `not_checked`; kept as strings so new tiers need no schema change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Speaker match tier.
    pub voice: String,
    /// Prompted-phrase tier.
    pub phrase: String,
    /// Liveness (replay / synthetic) tier.
    pub liveness: String,
    /// Phrase check score, when checked (v2).
    #[serde(default)]
    pub phrase_score: Option<f32>,
    /// Score the phrase check had to reach (v2).
    #[serde(default)]
    pub phrase_threshold: Option<f32>,
    /// Liveness score, when checked: the replay check's aligned share (v4).
    #[serde(default)]
    pub liveness_score: Option<f32>,
    /// Score at or above which the audio is a replay (v4).
    #[serde(default)]
    pub liveness_threshold: Option<f32>,
    /// Synthetic-speech score, when checked: AASIST's bona fide logit (v5).
    #[serde(default)]
    pub synthetic_score: Option<f32>,
    /// Score below which the audio is synthetic (v5).
    #[serde(default)]
    pub synthetic_threshold: Option<f32>,
}

/// Score thresholds applied to a decision, for audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Scores at or above this accept.
    pub accept: f32,
    /// Scores below this reject.
    pub reject: f32,
    /// Scale of the score and thresholds: `cosine` or `llr` (v6).
    #[serde(default = "cosine_scale")]
    pub scale: String,
    /// Audio band whose calibration applied: `wide` or `narrow` (v6).
    #[serde(default)]
    pub band: Option<String>,
}

fn cosine_scale() -> String {
    "cosine".into()
}

/// The one output of every job: what was decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `request_id` of the job this answers.
    pub request_id: String,
    /// Tenant of the job.
    pub tenant: String,
    /// User of the job.
    pub user_id: String,
    /// When the job was created (copied from the request), UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Trace context of the job.
    pub trace: Option<TraceContext>,
    /// Kind of job answered.
    pub job: JobKind,
    /// Outcome.
    pub decision: DecisionKind,
    /// Profile status after the job, when known.
    pub profile_status: Option<ProfileStatus>,
    /// Speaker-match score on the thresholds' scale (the LLR when
    /// calibrated, else the raw cosine).
    pub score: Option<f32>,
    /// Confidence of the decision in [0, 1].
    pub confidence: Option<f32>,
    /// Per-signal tiers, when scored.
    pub signals: Option<Signals>,
    /// Biometric result class, when scored.
    pub bio_result: Option<BioResult>,
    /// Machine-readable reason codes.
    pub reasons: Vec<String>,
    /// Stable error code (see [`SchemaError::code`] for decoding errors).
    pub error_code: Option<String>,
    /// Human-readable error detail.
    pub error_message: Option<String>,
    /// Net speech in the audio after voice activity detection.
    pub speech_millis: i64,
    /// Adaptive learning progress in [0, 1].
    pub learning_progress: f32,
    /// Enrollment progress in [0, 1].
    pub enrollment_progress: f32,
    /// Speaker model identity (name + weights hash).
    pub model_id: Option<String>,
    /// For `COOLDOWN`/`RETRY`: how long to wait.
    pub retry_after_ms: Option<i64>,
    /// Challenge session of the job, echoed.
    pub session_id: Option<String>,
    /// Thresholds applied (per tenant/channel).
    pub thresholds: Option<Thresholds>,
    /// When the decision was made, UTC epoch millis.
    pub processed_at: i64,
    /// Digest of the job this decision answers ([`crate::Request::digest`]).
    pub request_digest: Option<String>,
    /// Cosine of probe and voiceprint, when scored (v6).
    #[serde(default)]
    pub raw_score: Option<f32>,
    /// AS-norm of the raw score, when calibrated (v6).
    #[serde(default)]
    pub norm_score: Option<f32>,
    /// Calibrated log-likelihood ratio, when calibrated (v6).
    #[serde(default)]
    pub llr: Option<f32>,
}

impl Decision {
    /// A decision with every optional field empty and the current schema
    /// version; fill in the rest with struct update syntax or field writes.
    pub fn new(
        request_id: impl Into<String>,
        tenant: impl Into<String>,
        user_id: impl Into<String>,
        job: JobKind,
        decision: DecisionKind,
        occurred_at: i64,
        processed_at: i64,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            tenant: tenant.into(),
            user_id: user_id.into(),
            occurred_at,
            schema_version: Self::CURRENT_VERSION,
            trace: None,
            job,
            decision,
            profile_status: None,
            score: None,
            confidence: None,
            signals: None,
            bio_result: None,
            reasons: Vec::new(),
            error_code: None,
            error_message: None,
            speech_millis: 0,
            learning_progress: 0.0,
            enrollment_progress: 0.0,
            model_id: None,
            retry_after_ms: None,
            session_id: None,
            thresholds: None,
            processed_at,
            request_digest: None,
            raw_score: None,
            norm_score: None,
            llr: None,
        }
    }
}

impl Decision {
    /// Marks the decision as ended by `code`: the error code and message, and
    /// the code as its only reason.
    pub fn set_error(&mut self, code: Code, message: impl Into<String>) {
        self.error_code = Some(code.as_str().into());
        self.error_message = Some(message.into());
        self.reasons = vec![code.as_str().into()];
    }

    /// The error code, when the job ended in an error this engine knows.
    pub fn error(&self) -> Option<Code> {
        self.error_code.as_deref().and_then(Code::parse)
    }

    /// Whether `code` is among the reasons.
    pub fn has_reason(&self, code: Code) -> bool {
        self.reasons.iter().any(|r| code == r.as_str())
    }

    /// The main code: the error, else the first reason.
    pub fn main_code(&self) -> Option<&str> {
        self.error_code
            .as_deref()
            .or_else(|| self.reasons.first().map(String::as_str))
    }
}

impl Contract for Decision {
    const KIND: RecordKind = RecordKind::Decision;
    const CURRENT_VERSION: SchemaVersion = 6;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        Shared {
            request_id: &self.request_id,
            tenant: &self.tenant,
            user_id: &self.user_id,
            occurred_at: self.occurred_at,
            schema_version: self.schema_version,
            trace: self.trace.as_ref(),
        }
        .check(Self::CURRENT_VERSION, limits)?;
        validate::finite("score", self.score)?;
        if let Some(c) = self.confidence {
            validate::unit("confidence", c)?;
        }
        validate::unit("learning_progress", self.learning_progress)?;
        validate::unit("enrollment_progress", self.enrollment_progress)?;
        if self.reasons.len() > limits.max_reasons {
            return Err(SchemaError::invalid(
                "reasons",
                format!(
                    "{} entries exceeds the limit of {}",
                    self.reasons.len(),
                    limits.max_reasons
                ),
            ));
        }
        for r in &self.reasons {
            validate::id("reasons[]", r, limits)?;
        }
        validate::opt_id("error_code", self.error_code.as_deref(), limits)?;
        validate::opt_text("error_message", self.error_message.as_deref(), limits)?;
        validate::opt_id("model_id", self.model_id.as_deref(), limits)?;
        validate::opt_id("session_id", self.session_id.as_deref(), limits)?;
        if self.speech_millis < 0 {
            return Err(SchemaError::invalid(
                "speech_millis",
                "must not be negative",
            ));
        }
        if self.retry_after_ms.is_some_and(|ms| ms < 0) {
            return Err(SchemaError::invalid(
                "retry_after_ms",
                "must not be negative",
            ));
        }
        if let Some(t) = &self.thresholds {
            validate::finite("thresholds.accept", Some(t.accept))?;
            validate::finite("thresholds.reject", Some(t.reject))?;
        }
        validate::timestamp("processed_at", self.processed_at)
    }
}
