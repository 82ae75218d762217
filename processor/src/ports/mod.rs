//! The ports the pipeline is written against. Adapters (Kafka, CQL, embedded)
//! implement them; `crate::backends` picks one per URL.

pub mod access;
pub mod bus;
pub mod store;

pub use access::AccessStore;
pub use bus::{Bus, BusError, Message, Subscription, TopicSpec};
pub use store::{Store, StoreError};
