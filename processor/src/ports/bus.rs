//! The message bus: partitioned, keyed, at-least-once topics with consumer groups.

use async_trait::async_trait;
use thiserror::Error;
use timbre_schemas::Code;

/// A message read from a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic it was read from.
    pub topic: String,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Partitioning key (`tenant/user_id` for jobs).
    pub key: Option<Vec<u8>>,
    /// Encoded event.
    pub payload: Vec<u8>,
}

/// What a topic should look like; the catalogue in `topics/` is a list of these.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name (before any deployment prefix).
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i16,
    /// Retention in milliseconds (`-1` keeps forever).
    pub retention_ms: i64,
    /// `delete` or `compact`.
    pub cleanup_policy: String,
    /// What the message key is (documentation; producers key by it).
    #[serde(default)]
    pub key: String,
    /// Largest message the topic accepts (`max.message.bytes`), when above
    /// the broker default (jobs carry audio inline).
    #[serde(default)]
    pub max_message_bytes: Option<i64>,
}

/// Bus failures; [`BusError::code`] is stable.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus cannot be reached or refused the operation.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A topic is missing or misconfigured.
    #[error("topic error: {0}")]
    Topic(String),
    /// The bus URL or options are invalid.
    #[error("bus configuration: {0}")]
    Config(String),
    /// The subscription was closed.
    #[error("subscription closed")]
    Closed,
}

impl BusError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            BusError::Unavailable(_) => Code::BusUnavailable,
            BusError::Topic(_) => Code::BusTopic,
            BusError::Config(_) => Code::BusConfig,
            BusError::Closed => Code::BusClosed,
        }
    }
}

/// Publishing, subscribing and topic administration.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Appends `payload` to `topic`, partitioned by `key`; returns once durable
    /// (acknowledged by all in-sync replicas on Kafka).
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError>;

    /// Joins consumer group `group` on `topics`, starting at the group's
    /// committed offsets (or the earliest offset for a new group).
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// Reads every partition of `topic` from its current end, outside any
    /// consumer group: each tail sees every message published after it is
    /// positioned (how each HTTP adapter replica receives all decisions).
    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>, BusError>;

    /// Creates the topics that are missing; returns a line per topic that
    /// exists with a different partition count (drift is reported, never fixed
    /// by deleting data).
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, BusError>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), BusError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message of any assigned partition.
    async fn next(&mut self) -> Result<Message, BusError>;

    /// Marks every message of `topic`/`partition` before `next_offset` as
    /// processed; it is committed and not redelivered to the group.
    fn commit(&self, topic: &str, partition: i32, next_offset: i64) -> Result<(), BusError>;

    /// Stops fetching `topic`/`partition` (backpressure) until resumed.
    fn pause(&self, topic: &str, partition: i32) -> Result<(), BusError>;

    /// Resumes a paused partition.
    fn resume(&self, topic: &str, partition: i32) -> Result<(), BusError>;

    /// Partitions taken from this member by a rebalance since the last call;
    /// their in-flight work must not be tracked further.
    fn take_revoked(&mut self) -> Vec<(String, i32)> {
        Vec::new()
    }

    /// Messages of the assigned partitions not yet committed by the group,
    /// when known.
    fn lag(&self) -> Option<i64> {
        None
    }

    /// Commits what is marked and leaves the group.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}
