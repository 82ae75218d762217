//! What a rule returns: the decision's fields and the state changes. The
//! pipeline turns it into the decision event and commits the mutations.

use timbre_schemas::{
    BioResult, Code, Decision, DecisionKind, JobKind, ProfileStatus as WireStatus, Request,
    Signals, Thresholds,
};

use super::commit::Mutation;
use super::policy::{self, Policy};
use super::{Profile, ProfileStatus};

/// An error ending: its code, a message for humans, and whether the job
/// also goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Stable code.
    pub code: Code,
    /// Human-readable detail.
    pub message: String,
    /// Whether the job's bytes go to the dead-letter topic.
    pub dead_letter: bool,
}

/// A profile's status and progress, as a decision reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Status after the job.
    pub status: ProfileStatus,
    /// Fraction of the enrollment target reached.
    pub enrollment: f32,
    /// Adaptive-learning progress.
    pub learning: f32,
}

impl Progress {
    /// The progress of `profile` under `policy`.
    pub fn of(profile: &Profile, policy: &Policy) -> Self {
        Self {
            status: profile.status,
            enrollment: policy::enrollment_progress(profile, policy),
            learning: policy::learning_progress(profile, policy),
        }
    }
}

/// The voice score of a verification and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Score on the thresholds' scale: the LLR when calibrated, else `raw`.
    pub score: f32,
    /// Cosine against the voiceprint.
    pub raw: f32,
    /// AS-norm of `raw` and the LLR, when calibrated.
    pub calibrated: Option<(f32, f32)>,
    /// Confidence of the verdict.
    pub confidence: f32,
    /// Biometric result class.
    pub bio_result: BioResult,
    /// Tiers of every signal.
    pub signals: Signals,
}

/// The result of a decision rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Outcome kind.
    pub kind: DecisionKind,
    /// Reason codes, the deciding one first (empty for errors).
    pub reasons: Vec<Code>,
    /// Set for `ERROR` outcomes.
    pub error: Option<Refusal>,
    /// Voice score of a scored verification.
    pub scores: Option<Scores>,
    /// Thresholds applied.
    pub thresholds: Option<Thresholds>,
    /// Net speech of the scored audio.
    pub speech_millis: u64,
    /// Model the job scored with.
    pub model_id: Option<String>,
    /// For cooldowns and failures that started one.
    pub retry_after_ms: Option<i64>,
    /// Profile status and progress after the job.
    pub progress: Option<Progress>,
    /// Challenge session echoed from the job.
    pub session_id: Option<String>,
    /// State changes to commit with the decision.
    pub mutations: Vec<Mutation>,
}

impl Outcome {
    /// A non-error outcome with `reasons`.
    pub fn new(kind: DecisionKind, reasons: Vec<Code>) -> Self {
        Self {
            kind,
            reasons,
            error: None,
            scores: None,
            thresholds: None,
            speech_millis: 0,
            model_id: None,
            retry_after_ms: None,
            progress: None,
            session_id: None,
            mutations: Vec::new(),
        }
    }

    /// An `ERROR` outcome; dead-lettered when the code says so.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Self {
            error: Some(Refusal {
                code,
                message: message.into(),
                dead_letter: code.dead_letters(),
            }),
            ..Self::new(DecisionKind::Error, Vec::new())
        }
    }

    /// Adds the profile's progress.
    pub fn with_progress(mut self, profile: &Profile, policy: &Policy) -> Self {
        self.progress = Some(Progress::of(profile, policy));
        self
    }

    /// Adds a state change.
    pub fn with(mut self, mutation: Mutation) -> Self {
        self.mutations.push(mutation);
        self
    }

    /// The decision event answering `request`.
    pub fn decision(&self, request: &Request, processed_at: i64) -> Decision {
        let mut d = Decision::new(
            request.request_id(),
            request.tenant(),
            request.user_id(),
            request.job(),
            self.kind,
            request.occurred_at(),
            processed_at,
        );
        d.trace = request.trace().cloned();
        d.reasons = self
            .reasons
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        if let Some(e) = &self.error {
            d.set_error(e.code, e.message.clone());
            if request.job() == JobKind::Verification {
                d.bio_result = Some(BioResult::Error);
            }
        }
        if let Some(s) = &self.scores {
            d.score = Some(s.score);
            d.raw_score = Some(s.raw);
            (d.norm_score, d.llr) = s.calibrated.unzip();
            d.confidence = Some(s.confidence);
            d.bio_result = Some(s.bio_result);
            d.signals = Some(s.signals.clone());
        }
        d.thresholds = self.thresholds.clone();
        d.speech_millis = self.speech_millis as i64;
        d.model_id = self.model_id.clone();
        d.retry_after_ms = self.retry_after_ms;
        d.session_id = self.session_id.clone();
        if let Some(p) = self.progress {
            d.profile_status = Some(wire_status(p.status));
            d.enrollment_progress = p.enrollment;
            d.learning_progress = p.learning;
        }
        d
    }
}

/// The wire form of a profile status.
pub fn wire_status(s: ProfileStatus) -> WireStatus {
    match s {
        ProfileStatus::NotEnrolled => WireStatus::NotEnrolled,
        ProfileStatus::Enrolled => WireStatus::Enrolled,
        ProfileStatus::ReEnroll => WireStatus::ReEnroll,
        ProfileStatus::OptedOut => WireStatus::OptedOut,
        ProfileStatus::Locked => WireStatus::Locked,
    }
}
