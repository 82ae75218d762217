//! Timbre's Avro event contracts and their wire format.
//!
//! - [`contracts`]: the records (`schemas/avro/*.avsc`, embedded) and the Rust
//!   types that mirror them.
//! - [`framing`]: Avro single-object encoding (`C3 01` + CRC-64-AVRO
//!   fingerprint + datum), so every message names its writer schema.
//! - [`Registry`]: every known writer schema by fingerprint; encodes with the
//!   current schema and decodes any registered version into current types.
//! - [`Limits`] and [`Contract::validate`]: rules the schema cannot express.
//! - [`SchemaError`]: failures with stable codes for decisions and dead letters.
//!
//! ```
//! use timbre_schemas::{Contract, Limits, Registry, Request, TraceContext, VerificationRequested};
//!
//! let registry = Registry::new();
//! let job = VerificationRequested {
//!     request_id: "r-1".into(),
//!     tenant: "acme".into(),
//!     user_id: "u-7".into(),
//!     occurred_at: 1_700_000_000_000,
//!     schema_version: VerificationRequested::CURRENT_VERSION,
//!     trace: Some(TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
//!     audio: b"RIFF....WAVE".to_vec(),
//!     audio_uri: None,
//!     session_id: None,
//!     expected_phrase: Some("4 7 1 9".into()),
//!     channel: Some("phone".into()),
//!     retain_diagnostics: false,
//! };
//! let bytes = registry.encode(&job)?;
//! let Request::Verification(back) = registry.decode_request(&bytes)? else { unreachable!() };
//! back.validate(&Limits::default())?;
//! assert_eq!(back, job);
//! # Ok::<(), timbre_schemas::SchemaError>(())
//! ```

mod code;
pub mod contracts;
mod error;
pub mod fingerprint;
pub mod framing;
mod header;
mod identity;
mod redact;
mod registry;
mod scan;
mod validate;

pub use code::{Code, CodeClass};
pub use contracts::{
    BioResult, Biokey, ConsentChanged, Contract, DeadLetter, Decision, DecisionKind,
    EnrollmentRequested, JobKind, PayloadKept, ProfileCommand, ProfileCommandKind, ProfileStatus,
    RecordKind, RescoreRequested, SchemaVersion, Signals, Thresholds, TraceContext,
    VerificationRequested, message_key,
};
pub use error::SchemaError;
pub use fingerprint::Fingerprint;
pub use identity::JobIdentity;
pub use registry::{Envelope, Registry, Request, WriterInfo};
pub use validate::{Limits, MAX_BIOKEYS, biokey_text};
