//! Dead letters: messages that could not be processed, with a digest of the
//! original and as much of it as may be kept.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ByteLen, Contract, RecordKind, SchemaVersion};
use crate::error::SchemaError;
use crate::validate::{self, Limits};

/// A message that could not be processed, for inspection and replay: the
/// original's digest and size, and what may be kept of it ([`PayloadKept`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job's `request_id` if it could be read, else
    /// `<topic>/<partition>/<offset>` (see [`DeadLetter::position_id`]).
    pub request_id: String,
    /// The job's tenant, if it could be read.
    pub tenant: Option<String>,
    /// Topic the message was read from.
    pub source_topic: String,
    /// Partition the message was read from.
    pub partition: i32,
    /// Offset of the message in its partition.
    pub offset: i64,
    /// Original message key, untouched.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    /// What is kept of the original message value (see `payload_kept`).
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    /// Stable error code of the failure.
    pub error_code: String,
    /// Human-readable failure detail.
    pub error_message: String,
    /// When the failure was recorded, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// SHA-256 (hex) of the original message value.
    pub payload_sha256: Option<String>,
    /// Length of the original message value in bytes.
    pub payload_size: Option<i64>,
    /// What `payload` holds: a [`PayloadKept`] name.
    pub payload_kept: String,
}

/// What a dead letter keeps of the original message value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKept {
    /// The original value.
    Whole,
    /// The decoded job re-encoded with its audio removed.
    WithoutAudio,
    /// The first bytes of a value that did not decode.
    Prefix,
}

impl PayloadKept {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKept::Whole => "whole",
            PayloadKept::WithoutAudio => "without_audio",
            PayloadKept::Prefix => "prefix",
        }
    }
}

impl DeadLetter {
    /// The stand-in `request_id` for a message whose own id is unreadable.
    pub fn position_id(topic: &str, partition: i32, offset: i64) -> String {
        format!("{topic}/{partition}/{offset}")
    }
}

impl Contract for DeadLetter {
    const KIND: RecordKind = RecordKind::DeadLetter;
    const CURRENT_VERSION: SchemaVersion = 2;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    // no payload limit: a dead letter must be able to carry whatever arrived
    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        // a topic/partition/offset id can be longer than a caller's id
        validate::text("request_id", &self.request_id, limits)?;
        if self.request_id.is_empty() {
            return Err(SchemaError::invalid("request_id", "must not be empty"));
        }
        validate::opt_text("tenant", self.tenant.as_deref(), limits)?;
        validate::id("source_topic", &self.source_topic, limits)?;
        if self.partition < 0 || self.offset < 0 {
            return Err(SchemaError::invalid(
                "partition",
                "partition and offset must not be negative",
            ));
        }
        validate::id("error_code", &self.error_code, limits)?;
        validate::text("error_message", &self.error_message, limits)?;
        validate::timestamp("occurred_at", self.occurred_at)?;
        validate::id("payload_kept", &self.payload_kept, limits)?;
        validate::version(self.schema_version, Self::CURRENT_VERSION)
    }
}

// key and payload are printed as lengths, not contents
impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("request_id", &self.request_id)
            .field("tenant", &self.tenant)
            .field("source_topic", &self.source_topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key.as_deref().map(ByteLen))
            .field("payload", &ByteLen(&self.payload))
            .field("error_code", &self.error_code)
            .field("error_message", &self.error_message)
            .field("occurred_at", &self.occurred_at)
            .field("schema_version", &self.schema_version)
            .field("payload_sha256", &self.payload_sha256)
            .field("payload_size", &self.payload_size)
            .field("payload_kept", &self.payload_kept)
            .finish()
    }
}
