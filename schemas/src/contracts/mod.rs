//! The event records, as Rust types mirroring `schemas/avro/*.avsc`.
//!
//! Field names, order and types follow the `.avsc` files exactly; the tests
//! check every type against its schema. Byte fields use apache-avro's `bytes`
//! serde helpers so they encode as Avro `bytes`, not as arrays of ints.

mod dead_letter;
mod decision;
mod requests;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::SchemaError;
pub use crate::header::{SchemaVersion, TraceContext};
use crate::validate::Limits;

pub use dead_letter::{DeadLetter, PayloadKept};
pub use decision::{
    BioResult, Decision, DecisionKind, JobKind, ProfileStatus, Signals, Thresholds,
};
pub use requests::{
    Biokey, ConsentChanged, EnrollmentRequested, ProfileCommand, ProfileCommandKind,
    RescoreRequested, VerificationRequested,
};

/// Avro namespace of every contract.
pub const NAMESPACE: &str = "io.timbre.v1";

/// The `.avsc` texts compiled into the crate: the one source of truth.
pub mod avsc {
    /// Current `EnrollmentRequested` schema.
    pub const ENROLLMENT_REQUESTED: &str = include_str!("../../avro/EnrollmentRequested.avsc");
    /// Current `VerificationRequested` schema.
    pub const VERIFICATION_REQUESTED: &str = include_str!("../../avro/VerificationRequested.avsc");
    /// Current `ConsentChanged` schema.
    pub const CONSENT_CHANGED: &str = include_str!("../../avro/ConsentChanged.avsc");
    /// Current `ProfileCommand` schema.
    pub const PROFILE_COMMAND: &str = include_str!("../../avro/ProfileCommand.avsc");
    /// Current `RescoreRequested` schema.
    pub const RESCORE_REQUESTED: &str = include_str!("../../avro/RescoreRequested.avsc");
    /// Current `Decision` schema.
    pub const DECISION: &str = include_str!("../../avro/Decision.avsc");
    /// Current `DeadLetter` schema.
    pub const DEAD_LETTER: &str = include_str!("../../avro/DeadLetter.avsc");

    /// Older writer schemas that consumers must still read.
    pub mod history {
        /// `VerificationRequested` v1: before `channel` was added.
        pub const VERIFICATION_REQUESTED_V1: &str =
            include_str!("../../avro/history/VerificationRequested.v1.avsc");
        /// `EnrollmentRequested` v1: before `retain_diagnostics`.
        pub const ENROLLMENT_REQUESTED_V1: &str =
            include_str!("../../avro/history/EnrollmentRequested.v1.avsc");
        /// `EnrollmentRequested` v2: before `biokeys`.
        pub const ENROLLMENT_REQUESTED_V2: &str =
            include_str!("../../avro/history/EnrollmentRequested.v2.avsc");
        /// `VerificationRequested` v2: before `retain_diagnostics`.
        pub const VERIFICATION_REQUESTED_V2: &str =
            include_str!("../../avro/history/VerificationRequested.v2.avsc");
        /// `Decision` v1: before the phrase score and threshold were added.
        pub const DECISION_V1: &str = include_str!("../../avro/history/Decision.v1.avsc");
        /// `Decision` v2: before the request digest and the `LOCKED` status.
        pub const DECISION_V2: &str = include_str!("../../avro/history/Decision.v2.avsc");
        /// `Decision` v3: before the liveness score and threshold.
        pub const DECISION_V3: &str = include_str!("../../avro/history/Decision.v3.avsc");
        /// `Decision` v4: before the synthetic-speech score and threshold.
        pub const DECISION_V4: &str = include_str!("../../avro/history/Decision.v4.avsc");
        /// `Decision` v5: before the raw and normalised scores, the LLR and
        /// the thresholds' scale and band.
        pub const DECISION_V5: &str = include_str!("../../avro/history/Decision.v5.avsc");
        /// `DeadLetter` v1: the whole original value, no digest.
        pub const DEAD_LETTER_V1: &str = include_str!("../../avro/history/DeadLetter.v1.avsc");
        /// `ProfileCommand` v1: before `UNLOCK`.
        pub const PROFILE_COMMAND_V1: &str =
            include_str!("../../avro/history/ProfileCommand.v1.avsc");
    }

    /// Every current schema, one per record.
    pub const CURRENT: [&str; 7] = [
        ENROLLMENT_REQUESTED,
        VERIFICATION_REQUESTED,
        CONSENT_CHANGED,
        PROFILE_COMMAND,
        RESCORE_REQUESTED,
        DECISION,
        DEAD_LETTER,
    ];

    /// Every older writer schema still registered.
    pub const HISTORY: [&str; 11] = [
        history::ENROLLMENT_REQUESTED_V1,
        history::ENROLLMENT_REQUESTED_V2,
        history::VERIFICATION_REQUESTED_V1,
        history::VERIFICATION_REQUESTED_V2,
        history::DECISION_V1,
        history::DECISION_V2,
        history::DECISION_V3,
        history::DECISION_V4,
        history::DECISION_V5,
        history::PROFILE_COMMAND_V1,
        history::DEAD_LETTER_V1,
    ];
}

/// Which record a message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// [`EnrollmentRequested`]
    EnrollmentRequested,
    /// [`VerificationRequested`]
    VerificationRequested,
    /// [`ConsentChanged`]
    ConsentChanged,
    /// [`ProfileCommand`]
    ProfileCommand,
    /// [`RescoreRequested`]
    RescoreRequested,
    /// [`Decision`]
    Decision,
    /// [`DeadLetter`]
    DeadLetter,
}

impl RecordKind {
    /// Every record, in a fixed order.
    pub const ALL: [RecordKind; 7] = [
        Self::EnrollmentRequested,
        Self::VerificationRequested,
        Self::ConsentChanged,
        Self::ProfileCommand,
        Self::RescoreRequested,
        Self::Decision,
        Self::DeadLetter,
    ];

    /// Short record name, as in the `.avsc` `name`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EnrollmentRequested => "EnrollmentRequested",
            Self::VerificationRequested => "VerificationRequested",
            Self::ConsentChanged => "ConsentChanged",
            Self::ProfileCommand => "ProfileCommand",
            Self::RescoreRequested => "RescoreRequested",
            Self::Decision => "Decision",
            Self::DeadLetter => "DeadLetter",
        }
    }

    /// The current `.avsc` text of this record.
    pub const fn current_schema(self) -> &'static str {
        match self {
            Self::EnrollmentRequested => avsc::ENROLLMENT_REQUESTED,
            Self::VerificationRequested => avsc::VERIFICATION_REQUESTED,
            Self::ConsentChanged => avsc::CONSENT_CHANGED,
            Self::ProfileCommand => avsc::PROFILE_COMMAND,
            Self::RescoreRequested => avsc::RESCORE_REQUESTED,
            Self::Decision => avsc::DECISION,
            Self::DeadLetter => avsc::DEAD_LETTER,
        }
    }

    /// Version of the current schema, i.e. the contract's
    /// [`Contract::CURRENT_VERSION`].
    pub const fn current_version(self) -> SchemaVersion {
        match self {
            Self::EnrollmentRequested => EnrollmentRequested::CURRENT_VERSION,
            Self::VerificationRequested => VerificationRequested::CURRENT_VERSION,
            Self::ConsentChanged => ConsentChanged::CURRENT_VERSION,
            Self::ProfileCommand => ProfileCommand::CURRENT_VERSION,
            Self::RescoreRequested => RescoreRequested::CURRENT_VERSION,
            Self::Decision => Decision::CURRENT_VERSION,
            Self::DeadLetter => DeadLetter::CURRENT_VERSION,
        }
    }

    /// Whether this is one of the job requests (a [`Request`](crate::Request)).
    pub const fn is_request(self) -> bool {
        !matches!(self, Self::Decision | Self::DeadLetter)
    }

    /// Finds a record by its full name (`io.timbre.v1.Decision`).
    pub fn from_full_name(full: &str) -> Option<Self> {
        let short = full.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
        Self::ALL.into_iter().find(|k| k.name() == short)
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Ties a Rust type to its Avro record.
pub trait Contract: Serialize + DeserializeOwned + fmt::Debug + Clone + PartialEq {
    /// The record this type mirrors.
    const KIND: RecordKind;
    /// Version of the current schema (the `"version"` of its `.avsc`); what
    /// producers put in `schema_version`.
    const CURRENT_VERSION: SchemaVersion;

    /// The current `.avsc` text.
    fn schema_json() -> &'static str {
        Self::KIND.current_schema()
    }

    /// The version the producer says it wrote.
    fn schema_version(&self) -> SchemaVersion;

    /// Checks the rules the schema cannot express: non-empty bounded ids,
    /// audio size, string lengths. Call it after decoding untrusted input.
    fn validate(&self, limits: &Limits) -> Result<(), SchemaError>;
}

/// The Kafka message key of a user's events: `tenant/user_id`, so one user's
/// jobs stay ordered on one partition. Tenants may not contain `/`, which
/// keeps the key unambiguous.
pub fn message_key(tenant: &str, user_id: &str) -> String {
    format!("{tenant}/{user_id}")
}

/// `Debug` for byte payloads: the length, not megabytes of numbers in logs.
pub(crate) struct ByteLen<'a>(pub &'a [u8]);

impl fmt::Debug for ByteLen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}
