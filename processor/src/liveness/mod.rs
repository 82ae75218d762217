//! The liveness signal: is this live speech by the caller, or a recording
//! played back? [`fingerprint`] recognises audio submitted before (replays);
//! [`replays`] makes the replayed copies the evaluation measures against;
//! [`synthetic`] recognises text-to-speech and converted voices (AASIST).

pub mod fingerprint;
pub mod replays;
pub mod synthetic;
mod synthetic_backend;

pub use fingerprint::{Fingerprint, Fingerprinter, Overlap, ReplayThresholds, best_overlap};
pub use synthetic::{SyntheticSpeechCheck, SyntheticThresholds};
pub use synthetic_backend::SyntheticBackend;

use timbre_schemas::{Code, JobKind};

use crate::domain::{Signal, SignalKind, Tier};
use crate::ports::{Analyser, AnalyserError, AnalysisInput};

/// The replay check: a verification whose audio lines up with one of the
/// user's recent recordings is a replay (liveness `low`,
/// `replay_detected`), which the fusion turns into a reject.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayDetector {
    thresholds: ReplayThresholds,
}

impl ReplayDetector {
    /// A detector with these thresholds.
    pub fn new(thresholds: ReplayThresholds) -> Self {
        Self { thresholds }
    }
}

impl Analyser for ReplayDetector {
    fn kind(&self) -> SignalKind {
        SignalKind::Replay
    }

    fn analyse(&self, input: &AnalysisInput<'_>) -> Result<Option<Signal>, AnalyserError> {
        let Some(probe) = input.fingerprint else {
            return Ok(None);
        };
        if input.job != JobKind::Verification {
            return Ok(None);
        }
        let best = best_overlap(input.earlier, probe);
        let replayed = best.is_some_and(|o| self.thresholds.is_replay(&o));
        Ok(Some(Signal {
            kind: SignalKind::Replay,
            tier: if replayed { Tier::Low } else { Tier::High },
            pass: !replayed,
            reason: replayed.then_some(Code::ReplayDetected),
            score: Some(best.map_or(0.0, |o| o.ratio())),
            threshold: Some(self.thresholds.min_ratio),
        }))
    }
}
