//! Timbre: a voice-biometrics engine built as an event-driven stream processor.

pub mod audio;
pub mod eval;
pub mod model;
