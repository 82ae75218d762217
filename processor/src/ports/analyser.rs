//! Analysers: detectors that run on a job's decoded audio in the scoring
//! pool, next to the embedder, and report a signal (prompted phrase,
//! replay, synthetic speech). Adding one is a new implementation plus one
//! line where the engine lists its analysers; what the signals mean
//! together is `domain::signals::fuse`.

use timbre_schemas::{Code, JobKind};

use crate::domain::{Signal, SignalKind};
use crate::liveness::Fingerprint;

/// What an analyser sees of a job.
#[derive(Debug, Clone, Copy)]
pub struct AnalysisInput<'a> {
    /// Kind of job.
    pub job: JobKind,
    /// 16 kHz mono samples.
    pub samples: &'a [f32],
    /// Net speech found by the VAD.
    pub speech_millis: u64,
    /// Sample rate the audio was submitted at (8 kHz: a telephone channel).
    pub source_rate: u32,
    /// The phrase the caller was prompted to say, if any.
    pub expected_phrase: Option<&'a str>,
    /// Landmark fingerprint of the samples, when the job keeps one.
    pub fingerprint: Option<&'a Fingerprint>,
    /// Fingerprints of the user's recent recordings, newest first.
    pub earlier: &'a [Fingerprint],
}

/// Why an analyser could not produce its signal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AnalyserError {
    /// Stable code.
    pub code: Code,
    /// Human-readable detail.
    pub message: String,
}

/// Measures the net speech of a job's decoded audio (a neural VAD). Without
/// one, the decoder's energy estimate stands; with one, its figure is the
/// job's `speech_millis` everywhere (enrollment targets, the minimum
/// speech of a verification, what analysers see).
pub trait SpeechDetector: Send + Sync + 'static {
    /// Net speech in milliseconds of 16 kHz `samples` submitted at
    /// `source_rate` Hz.
    fn speech_millis(&self, samples: &[f32], source_rate: u32) -> Result<u64, AnalyserError>;
}

/// A detector run on every scored job's audio.
pub trait Analyser: Send + Sync + 'static {
    /// The signal it reports.
    fn kind(&self) -> SignalKind;
    /// The signal for this job, or `None` when it does not apply (e.g. no
    /// phrase was prompted).
    fn analyse(&self, input: &AnalysisInput<'_>) -> Result<Option<Signal>, AnalyserError>;
}
