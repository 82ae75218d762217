//! Implementations of the ports: Kafka and CQL for production, an in-process
//! bus and a local file store for the embedded default.

pub mod cql;
pub mod file_store;
pub mod kafka;
pub mod memory_bus;
