//! Timbre: a voice-biometrics engine built as an event-driven stream processor.

pub mod adapters;
pub mod api;
pub mod audio;
pub mod backends;
pub mod client;
pub mod config;
pub mod domain;
pub mod engine;
pub mod eval;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod phrase;
pub mod pipeline;
pub mod ports;
pub mod rescore;
pub mod scoring;
pub mod topics;
