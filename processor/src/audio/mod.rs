//! Audio front end: WAV decoding, resampling to the model rate, quality checks,
//! voice-activity detection and Kaldi-compatible filterbank features.

mod decode;
mod error;
pub mod fbank;
pub mod not_speech;
mod resample;
pub mod vad;
pub mod whisper_mel;

pub use decode::{
    AudioLimits, DecodedAudio, decode_wav, encode_wav, encode_wav_pcm16, is_wav_container,
};
pub use error::AudioError;
pub use resample::{resample_to, through_narrowband};

/// Sample rate the speaker model is trained on.
pub const MODEL_SAMPLE_RATE: u32 = 16_000;
