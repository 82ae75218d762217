//! Net speech as the engine measures it (the Silero speech detector), for
//! the commands that fit or evaluate on durations: the calibration's
//! quality measure must see the durations the processor computes at run
//! time, or every LLR is shifted.

use anyhow::{Context, Result, anyhow};
use timbre::domain::calibration::Band;
use timbre::model::default_model_dir;
use timbre::model::silero::SileroVad;
use timbre::ports::SpeechDetector;

use super::ModelArgs;

/// The engine's speech detector.
pub struct NetSpeech(SileroVad);

impl NetSpeech {
    /// Loads the detector from the model directory (its weights come with
    /// `processor/scripts/fetch-model.sh`).
    pub fn load(model: &ModelArgs) -> Result<Self> {
        let dir = model.model_dir.clone().unwrap_or_else(default_model_dir);
        let vad = SileroVad::load_from_dir(&dir)
            .with_context(|| format!("loading the speech detector from {}", dir.display()))?;
        Ok(Self(vad))
    }

    /// Net speech of 16 kHz `samples` that reached the engine in `band`
    /// (narrowband audio goes through the detector's 8 kHz network, as a
    /// job sent at 8 kHz does).
    pub fn millis(&self, samples: &[f32], band: Band) -> Result<u64> {
        let source_rate = match band {
            Band::Wide => 16_000,
            Band::Narrow => 8_000,
        };
        SpeechDetector::speech_millis(&self.0, samples, source_rate)
            .map_err(|e| anyhow!("{}", e.message))
    }
}
