//! Errors of encoding, decoding and validating contracts.

use crate::code::Code;
use crate::fingerprint::Fingerprint;

/// Why a message could not be encoded, decoded or accepted.
///
/// Every variant has a stable [`code`](SchemaError::code) that ends up in
/// `Decision.error_code` and `DeadLetter.error_code`, so callers can match on
/// it; the `Display` text is for humans and may change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The message is not single-object encoded: too short or wrong marker.
    #[error("bad framing: {reason}")]
    BadFraming {
        /// What was wrong with the header.
        reason: String,
    },
    /// The header names a writer schema this registry does not know.
    #[error("unknown writer schema fingerprint {fingerprint}")]
    UnknownSchema {
        /// Fingerprint read from the header.
        fingerprint: Fingerprint,
    },
    /// The datum does not decode with its writer schema (or resolve to the
    /// reader schema).
    #[error("{record}: datum does not decode: {detail}")]
    BadAvro {
        /// Record the header named.
        record: &'static str,
        /// Decoder detail.
        detail: String,
    },
    /// The message holds a different record than the caller asked for.
    #[error("expected a {expected} record, found {found}")]
    WrongRecord {
        /// Record (or record family) the caller asked for.
        expected: &'static str,
        /// Record the header named.
        found: &'static str,
    },
    /// The record decoded but a field breaks a rule or a limit.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// Field name, dotted for nested fields (`trace.traceparent`).
        field: String,
        /// The rule that was broken.
        reason: String,
    },
    /// The value could not be written with the schema.
    #[error("{record}: encoding failed: {detail}")]
    EncodeFailed {
        /// Record being written.
        record: &'static str,
        /// Encoder detail.
        detail: String,
    },
    /// A schema handed to the registry is unusable: it does not parse, is not
    /// a known record, lacks a version, or cannot be read by the current
    /// schema. Only raised when building a registry, never per message.
    #[error("bad schema: {detail}")]
    BadSchema {
        /// What is wrong with it.
        detail: String,
    },
}

impl SchemaError {
    /// Stable, machine-readable error code.
    pub fn code(&self) -> Code {
        match self {
            Self::BadFraming { .. } => Code::BadFraming,
            Self::UnknownSchema { .. } => Code::UnknownSchema,
            Self::BadAvro { .. } => Code::BadAvro,
            Self::WrongRecord { .. } => Code::WrongRecord,
            Self::InvalidField { .. } => Code::InvalidField,
            Self::EncodeFailed { .. } => Code::EncodeFailed,
            Self::BadSchema { .. } => Code::BadSchema,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_schema(detail: impl Into<String>) -> Self {
        Self::BadSchema {
            detail: detail.into(),
        }
    }
}
