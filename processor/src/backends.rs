//! Picks a port implementation from its URL.

use std::path::PathBuf;
use std::sync::Arc;

use crate::adapters::cql::{CqlConfig, CqlStore};
use crate::adapters::file_store::FileStore;
use crate::adapters::kafka::{KafkaBus, KafkaConfig};
use crate::adapters::memory_bus::MemoryBus;
use crate::ports::{AccessStore, Bus, BusError, Store, StoreError};

/// Messages an embedded partition holds before publishers wait.
pub const EMBEDDED_PARTITION_CAPACITY: usize = 10_000;

/// `kafka://host:port[,…][?options]` or `embedded://`.
pub fn connect_bus(url: &str) -> Result<Arc<dyn Bus>, BusError> {
    connect_bus_as(url, None)
}

/// [`connect_bus`] for a processor with a static consumer-group member id
/// (`instance_id`; ignored by the embedded bus, which has one member).
pub fn connect_bus_as(url: &str, instance_id: Option<&str>) -> Result<Arc<dyn Bus>, BusError> {
    if url == "embedded://" || url == "embedded" {
        return Ok(Arc::new(MemoryBus::new(EMBEDDED_PARTITION_CAPACITY)));
    }
    let mut config = KafkaConfig::from_url(url)?;
    config.instance_id = instance_id.map(str::to_string);
    Ok(Arc::new(KafkaBus::connect(config)?))
}

/// One store connection seen through both of its ports.
#[derive(Clone)]
pub struct Stores {
    /// Biometric state of the pipeline.
    pub state: Arc<dyn Store>,
    /// API access state of the HTTP adapter.
    pub access: Arc<dyn AccessStore>,
}

/// `cql://[user[:pass]@]host:port[,…]/keyspace[?replication_factor=N]` or `file://path`.
pub async fn connect_store(url: &str) -> Result<Stores, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(StoreError::Config("file:// needs a path".into()));
        }
        // One handle: a redb file can be opened once per process.
        let store = Arc::new(FileStore::open(&PathBuf::from(path))?);
        return Ok(Stores {
            state: store.clone(),
            access: store,
        });
    }
    let store = Arc::new(CqlStore::connect(CqlConfig::from_url(url)?).await?);
    Ok(Stores {
        state: store.clone(),
        access: store,
    })
}
