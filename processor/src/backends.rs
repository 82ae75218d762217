//! Picks a port implementation from its URL.

use std::path::PathBuf;
use std::sync::Arc;

use crate::adapters::cql::{CqlConfig, CqlStore};
use crate::adapters::file_store::FileStore;
use crate::adapters::kafka::{KafkaBus, KafkaConfig};
use crate::adapters::memory_bus::MemoryBus;
use crate::ports::{Bus, BusError, Store, StoreError};

/// Messages an embedded partition holds before publishers wait.
pub const EMBEDDED_PARTITION_CAPACITY: usize = 10_000;

/// `kafka://host:port[,…][?options]` or `embedded://`.
pub fn connect_bus(url: &str) -> Result<Arc<dyn Bus>, BusError> {
    if url == "embedded://" || url == "embedded" {
        return Ok(Arc::new(MemoryBus::new(EMBEDDED_PARTITION_CAPACITY)));
    }
    Ok(Arc::new(KafkaBus::connect(KafkaConfig::from_url(url)?)?))
}

/// `cql://[user:pass@]host:port[,…]/keyspace[?replication_factor=N]` or `file://path`.
pub async fn connect_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(StoreError::Config("file:// needs a path".into()));
        }
        return Ok(Arc::new(FileStore::open(&PathBuf::from(path))?));
    }
    Ok(Arc::new(
        CqlStore::connect(CqlConfig::from_url(url)?).await?,
    ))
}
