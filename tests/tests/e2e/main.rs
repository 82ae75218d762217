//! Every cross-crate integration and end-to-end test, in one binary (one
//! link instead of one per file). Tests that need Kafka or Cassandra fail
//! under `tests/run.sh` when the services are missing.
//!
//! - ports: `bus_port`, `store_port` (one body per port, every backend);
//! - pipeline: `pipeline_e2e`, `malformed_jobs`, `crash_resume`,
//!   `reader_backpressure`, `retry_budget`, `rescore`, `erasure_race`,
//!   `service_faults` (kill -9 of Kafka and Cassandra, on private instances);
//! - HTTP: `api_e2e`, `api_openapi`, `dialects` and `dialect_standalone` (vendor dialects, run by
//!   `api_e2e` and `phrase_check`), `diagnostics_cli` (records of keys that
//!   retain data);
//! - model and audio: `model_parity`, `model_errors`, `audio_inputs`,
//!   `calibration` (`timbre calibrate`);
//! - phrase signal: `phrase_check` (front end, reader, recogniser, challenges);
//! - liveness signal: `synthetic_speech` (and replays in `pipeline_e2e`);
//! - browser: `browser` (the SDK and the console in headless Chromium);
//! - load generator: `loadgen_embedded`, `loadgen_targets`;
//! - deployment: `helm_chart`.

mod api_e2e;
mod api_openapi;
mod audio_inputs;
mod browser;
mod bus_port;
mod calibration;
mod crash_resume;
mod demo_cli;
mod diagnostics_cli;
mod dialect_standalone;
mod dialects;
mod erasure_race;
mod helm_chart;
mod loadgen_embedded;
mod loadgen_targets;
mod malformed_jobs;
mod model_errors;
mod model_parity;
mod phrase_check;
mod pipeline_e2e;
mod reader_backpressure;
mod rescore;
mod retry_budget;
mod service_faults;
mod store_port;
mod synthetic_speech;
