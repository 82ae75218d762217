//! Speaker embeddings: the model behind the voice signal. The pipeline
//! knows only this trait; `model::SpeakerModel` (CAM++ on candle) is the
//! production implementation.

use timbre_schemas::Code;

/// Why an embedding could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EmbedError {
    /// Stable code (`too_short`, `model_internal`, …).
    pub code: Code,
    /// Human-readable detail.
    pub message: String,
}

/// Computes speaker embeddings.
pub trait Embedder: Send + Sync + 'static {
    /// Raw embedding of 16 kHz mono samples.
    fn embed(&self, samples: &[f32]) -> Result<Vec<f32>, EmbedError>;
    /// Id stamped on every voiceprint and decision (name + weights hash).
    fn model_id(&self) -> String;
}
