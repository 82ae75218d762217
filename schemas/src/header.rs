//! The fields every record shares and that validation reads: schema
//! version and trace context. A leaf module, so `contracts` and `validate`
//! both depend on it and not on each other.

use serde::{Deserialize, Serialize};

/// A schema version, as carried in each record's `schema_version` field and
/// in the `"version"` attribute of its `.avsc` file. Versions start at 1.
pub type SchemaVersion = i32;

/// W3C trace context carried by every request and decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// W3C `traceparent` header value.
    pub traceparent: String,
    /// W3C `tracestate` header value, if any.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A trace context with only a `traceparent`.
    pub fn new(traceparent: impl Into<String>) -> Self {
        Self {
            traceparent: traceparent.into(),
            tracestate: None,
        }
    }
}
