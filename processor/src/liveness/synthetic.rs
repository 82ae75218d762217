//! The synthetic-speech check: AASIST's features through the fitted
//! back-end ([`SyntheticBackend`]) give a log-odds of bona fide speech;
//! below the threshold the audio is taken for text-to-speech or a voice
//! converter (liveness `low`, `synthetic_speech`).

use std::path::Path;

use timbre_schemas::{Code, JobKind};

use super::SyntheticBackend;
use crate::domain::{Signal, SignalKind, Tier};
use crate::model::ModelError;
use crate::model::aasist::{Aasist, AasistOutput, prepare_input};
use crate::ports::{Analyser, AnalyserError, AnalysisInput};

/// Where the bona fide logit puts an input. Telephone-band audio scores
/// lower (the detector was trained on 16 kHz speech), so it has its own
/// threshold; the values are set from real speech alone, to a bona fide
/// pass rate (README, "The liveness check").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticThresholds {
    /// Below this, wideband audio is synthetic (`low`, fails).
    pub threshold: f32,
    /// The same for audio sent at 8 kHz (or any rate under 16 kHz).
    pub narrowband_threshold: f32,
    /// Scores less than this above their threshold are `medium`, higher
    /// ones `high`.
    pub medium_band: f32,
    /// Whether narrowband audio can fail. Off by default: real 8 kHz
    /// recordings of other microphones pass too rarely (README, "The
    /// liveness check"), so there the signal is reported, not enforced.
    pub narrowband_enforced: bool,
}

impl Default for SyntheticThresholds {
    fn default() -> Self {
        Self {
            threshold: 0.0,
            narrowband_threshold: -1.5,
            medium_band: 3.0,
            narrowband_enforced: false,
        }
    }
}

impl SyntheticThresholds {
    /// The signal a score of audio submitted at `source_rate` Hz gives.
    pub fn signal(&self, score: f32, source_rate: u32) -> Signal {
        let threshold = self.for_rate(source_rate);
        let tier = if score < threshold {
            Tier::Low
        } else if score < threshold + self.medium_band {
            Tier::Medium
        } else {
            Tier::High
        };
        let enforced = source_rate >= 16_000 || self.narrowband_enforced;
        let fails = tier == Tier::Low && enforced;
        Signal {
            kind: SignalKind::Synthetic,
            tier,
            pass: !fails,
            reason: fails.then_some(Code::SyntheticSpeech),
            score: Some(score),
            threshold: Some(threshold),
        }
    }

    /// The threshold for audio submitted at `source_rate` Hz.
    pub fn for_rate(&self, source_rate: u32) -> f32 {
        if source_rate < 16_000 {
            self.narrowband_threshold
        } else {
            self.threshold
        }
    }
}

/// AASIST, its back-end and thresholds, run on verifications.
pub struct SyntheticSpeechCheck {
    model: Aasist,
    backend: SyntheticBackend,
    thresholds: SyntheticThresholds,
}

impl SyntheticSpeechCheck {
    /// Loads the checksum-verified checkpoint from a model directory.
    pub fn load(dir: &Path, thresholds: SyntheticThresholds) -> Result<Self, ModelError> {
        Ok(Self {
            model: Aasist::load_from_dir(dir)?,
            backend: SyntheticBackend::bundled(),
            thresholds,
        })
    }

    /// The same check with another back-end (evaluation of a re-fit).
    pub fn with_backend(self, backend: SyntheticBackend) -> Self {
        Self { backend, ..self }
    }

    /// The score of 16 kHz samples; `None` for silence.
    pub fn score(&self, samples: &[f32]) -> Result<Option<f32>, ModelError> {
        Ok(self.output(samples)?.map(|o| self.score_output(&o)))
    }

    /// The back-end's score of the network's output.
    pub fn score_output(&self, output: &AasistOutput) -> f32 {
        self.backend.score(&output.hidden, output.bona_fide())
    }

    /// The network's whole output (logits and features); `None` for silence.
    pub fn output(&self, samples: &[f32]) -> Result<Option<AasistOutput>, ModelError> {
        match prepare_input(samples) {
            Some(input) => Ok(Some(self.model.forward(&input)?)),
            None => Ok(None),
        }
    }

    /// The thresholds applied.
    pub fn thresholds(&self) -> SyntheticThresholds {
        self.thresholds
    }

    /// The signal a score of audio submitted at `source_rate` Hz gives.
    pub fn signal(&self, score: f32, source_rate: u32) -> Signal {
        self.thresholds.signal(score, source_rate)
    }
}

impl Analyser for SyntheticSpeechCheck {
    fn kind(&self) -> SignalKind {
        SignalKind::Synthetic
    }

    fn analyse(&self, input: &AnalysisInput<'_>) -> Result<Option<Signal>, AnalyserError> {
        if input.job != JobKind::Verification {
            return Ok(None);
        }
        let score = self.score(input.samples).map_err(|e| AnalyserError {
            code: e.code(),
            message: e.to_string(),
        })?;
        Ok(score.map(|s| self.signal(s, input.source_rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_map_to_tiers_per_channel() {
        let t = SyntheticThresholds::default();
        let tier = |score, rate| t.signal(score, rate).tier;
        assert_eq!(tier(-0.1, 16_000), Tier::Low);
        assert_eq!(tier(0.0, 16_000), Tier::Medium);
        assert_eq!(tier(3.0, 16_000), Tier::High);
        assert_eq!(
            tier(-1.0, 8_000),
            Tier::Medium,
            "8 kHz has its own threshold"
        );
        let low = t.signal(-0.1, 16_000);
        assert!(!low.pass);
        assert_eq!(low.reason, Some(Code::SyntheticSpeech));
        assert_eq!(low.threshold, Some(0.0));
    }

    #[test]
    fn narrowband_is_reported_unless_enforced() {
        let reported = SyntheticThresholds::default().signal(-9.0, 8_000);
        assert_eq!(reported.tier, Tier::Low);
        assert!(reported.pass);
        assert_eq!(reported.reason, None);
        let enforced = SyntheticThresholds {
            narrowband_enforced: true,
            ..SyntheticThresholds::default()
        }
        .signal(-9.0, 8_000);
        assert!(!enforced.pass);
        assert_eq!(enforced.reason, Some(Code::SyntheticSpeech));
    }
}
