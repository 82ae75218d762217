//! The contract tests, one binary: schemas and types agree, golden bytes,
//! fingerprints, evolution rules, and hostile input.

mod common;

mod contracts;
mod evolution;
mod fingerprint;
mod golden;
mod robustness;
