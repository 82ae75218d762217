//! The ports the pipeline is written against. Adapters (Kafka, CQL, embedded)
//! implement the bus and stores, `crate::backends` picks one per URL; the
//! model implements the embedder, detectors implement analysers.

pub mod access;
pub mod analyser;
pub mod bus;
pub mod embedder;
pub mod store;

pub use access::AccessStore;
pub use analyser::{Analyser, AnalyserError, AnalysisInput, SpeechDetector};
pub use bus::{Bus, BusError, Message, Subscription, TopicSpec};
pub use embedder::{EmbedError, Embedder};
pub use store::{Store, StoreError, stored_tails};
