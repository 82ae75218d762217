//! Pipeline.
pub mod scoring_pool;
