use thiserror::Error;
use timbre_schemas::Code;

/// Why an audio payload was refused. Each variant has a stable [`AudioError::code`]
/// that travels in decision events and HTTP error bodies.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AudioError {
    /// The bytes are not a RIFF/WAVE container.
    #[error("not a wav file: {0}")]
    NotWav(String),
    /// A WAV container with a sample format we do not decode.
    #[error("unsupported wav encoding: {0}")]
    UnsupportedEncoding(String),
    /// A sample rate outside the supported range.
    #[error("unsupported sample rate {0} Hz (supported: 8000..=48000)")]
    UnsupportedRate(u32),
    /// The header is valid but the data is cut short or corrupt.
    #[error("corrupt wav data: {0}")]
    Corrupt(String),
    /// No samples at all.
    #[error("audio is empty")]
    Empty,
    /// Shorter than the configured minimum.
    #[error("audio too short: {millis} ms < {min_millis} ms")]
    TooShort {
        /// Duration of the input.
        millis: u64,
        /// Configured minimum.
        min_millis: u64,
    },
    /// Longer than the configured maximum.
    #[error("audio too long: {millis} ms > {max_millis} ms")]
    TooLong {
        /// Duration of the input (from the header).
        millis: u64,
        /// Configured maximum.
        max_millis: u64,
    },
    /// NaN or infinite float samples.
    #[error("audio has non-finite samples")]
    NonFinite,
    /// Too many samples at full scale.
    #[error("audio is clipped: {percent:.1}% of samples at full scale")]
    Clipped {
        /// Share of clipped samples, in percent.
        percent: f32,
    },
    /// No signal above the noise floor.
    #[error("audio is silent")]
    Silent,
}

impl AudioError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            AudioError::NotWav(_) => Code::NotWav,
            AudioError::UnsupportedEncoding(_) => Code::UnsupportedEncoding,
            AudioError::UnsupportedRate(_) => Code::UnsupportedRate,
            AudioError::Corrupt(_) => Code::CorruptAudio,
            AudioError::Empty => Code::EmptyAudio,
            AudioError::TooShort { .. } => Code::TooShort,
            AudioError::TooLong { .. } => Code::TooLong,
            AudioError::NonFinite => Code::NonFiniteSamples,
            AudioError::Clipped { .. } => Code::ClippedAudio,
            AudioError::Silent => Code::SilentAudio,
        }
    }
}
