//! Job requests: what callers publish.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ByteLen, Contract, RecordKind, SchemaVersion, TraceContext};
use crate::error::SchemaError;
use crate::validate::{self, Limits, Shared};

/// Request to add an enrollment sample to a user's voiceprint.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentRequested {
    /// Idempotency key: redelivery with the same id is harmless.
    pub request_id: String,
    /// Tenant that owns the user; no `/`.
    pub tenant: String,
    /// Tenant-scoped user id.
    pub user_id: String,
    /// When the caller created the event, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Caller's trace context.
    pub trace: Option<TraceContext>,
    /// Inline WAV audio; empty when `audio_uri` is set.
    #[serde(with = "apache_avro::serde::bytes")]
    pub audio: Vec<u8>,
    /// Claim check for audio too large to travel inline.
    pub audio_uri: Option<String>,
    /// Capture channel (`phone`, `app`, ...), selects calibrated thresholds.
    pub channel: Option<String>,
    /// Digits the speaker was prompted to say (a prompted enrollment). Since v2.
    #[serde(default)]
    pub expected_phrase: Option<String>,
    /// Keep the audio and decision as diagnostic data (at most 30 days). Since v2.
    #[serde(default)]
    pub retain_diagnostics: bool,
    /// The user's identifiers; non-empty replaces the stored set when the
    /// sample is admitted. Since v3.
    #[serde(default)]
    pub biokeys: Vec<Biokey>,
}

/// A supplementary identifier of a user (a phone number, an account id)
/// that finds the user at verification time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Biokey {
    /// Name of the identifier; letters, digits, `_`, `+`, `-`.
    pub key: String,
    /// The value; `None` when sensitive (only the digest travels).
    pub value: Option<String>,
    /// Hex HMAC-SHA256 of tenant, key and value under the deployment's
    /// identifier key: what lookups match.
    pub digest: String,
    /// Human-readable name of the identifier.
    pub display_name: Option<String>,
    /// Higher wins when several identifiers find users.
    pub priority: i32,
    /// The value is never stored, shown or logged.
    pub sensitive: bool,
    /// This identifier's value is the user id.
    pub is_user_id: bool,
}

// A sensitive value never travels; a present value is still kept out of
// logs, since a phone number is personal data either way.
impl fmt::Debug for Biokey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Biokey")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("priority", &self.priority)
            .field("sensitive", &self.sensitive)
            .field("is_user_id", &self.is_user_id)
            .finish()
    }
}

/// Request to verify a caller's voice against the user's voiceprint.
///
/// Version 2 added `channel`, version 3 `retain_diagnostics`; older messages
/// decode with `channel: None` and no retention.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRequested {
    /// Idempotency key: redelivery with the same id is harmless.
    pub request_id: String,
    /// Tenant that owns the user; no `/`.
    pub tenant: String,
    /// Tenant-scoped user id.
    pub user_id: String,
    /// When the caller created the event, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Caller's trace context.
    pub trace: Option<TraceContext>,
    /// Inline WAV audio; empty when `audio_uri` is set.
    #[serde(with = "apache_avro::serde::bytes")]
    pub audio: Vec<u8>,
    /// Claim check for audio too large to travel inline.
    pub audio_uri: Option<String>,
    /// Challenge session this attempt belongs to.
    pub session_id: Option<String>,
    /// Phrase or digits the caller was prompted to say.
    pub expected_phrase: Option<String>,
    /// Capture channel (`phone`, `app`, ...), selects calibrated thresholds. Since v2.
    pub channel: Option<String>,
    /// Keep the audio and decision as diagnostic data (at most 30 days). Since v3.
    #[serde(default)]
    pub retain_diagnostics: bool,
}

/// A user's biometric consent was granted or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChanged {
    /// Idempotency key: redelivery with the same id is harmless.
    pub request_id: String,
    /// Tenant that owns the user; no `/`.
    pub tenant: String,
    /// Tenant-scoped user id.
    pub user_id: String,
    /// When the caller created the event, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Caller's trace context.
    pub trace: Option<TraceContext>,
    /// True when consent is given, false when withdrawn.
    pub granted: bool,
    /// What the consent covers, e.g. `voice_biometrics`.
    pub purpose: String,
    /// Whether enrollment audio may be kept for re-scoring (schema default: true).
    pub retain_audio: bool,
}

/// What a [`ProfileCommand`] does. Symbols may only be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProfileCommandKind {
    /// Create an empty profile.
    Create,
    /// Delete the profile and its voiceprints.
    Delete,
    /// The user opts out of voice biometrics.
    OptOut,
    /// Add the user's voice to the tenant's fraudster watchlist.
    GreylistAdd,
    /// Remove the user's voice from the watchlist.
    GreylistRemove,
    /// Lift a lockout after repeated failed verifications.
    Unlock,
}

/// Administrative command on a user's voice profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileCommand {
    /// Idempotency key: redelivery with the same id is harmless.
    pub request_id: String,
    /// Tenant that owns the user; no `/`.
    pub tenant: String,
    /// Tenant-scoped user id.
    pub user_id: String,
    /// When the caller created the event, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Caller's trace context.
    pub trace: Option<TraceContext>,
    /// The command.
    pub command: ProfileCommandKind,
    /// Free-text reason for the audit trail.
    pub reason: Option<String>,
}

/// Request to re-score one user's stored enrollment audio with a new model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescoreRequested {
    /// Idempotency key: redelivery with the same id is harmless.
    pub request_id: String,
    /// Tenant that owns the user; no `/`.
    pub tenant: String,
    /// Tenant-scoped user id.
    pub user_id: String,
    /// When the caller created the event, UTC epoch millis.
    pub occurred_at: i64,
    /// Schema version the producer wrote.
    pub schema_version: SchemaVersion,
    /// Caller's trace context.
    pub trace: Option<TraceContext>,
    /// Re-scoring plan (one model migration) this request belongs to.
    pub plan_id: String,
    /// Model id of the voiceprint being replaced.
    pub from_model: String,
    /// Model id to compute the new voiceprint with.
    pub to_model: String,
}

// shared-field plumbing, identical for every request
macro_rules! shared {
    ($t:ty) => {
        impl $t {
            pub(crate) fn shared(&self) -> Shared<'_> {
                Shared {
                    request_id: &self.request_id,
                    tenant: &self.tenant,
                    user_id: &self.user_id,
                    occurred_at: self.occurred_at,
                    schema_version: self.schema_version,
                    trace: self.trace.as_ref(),
                }
            }
        }
    };
}
shared!(EnrollmentRequested);
shared!(VerificationRequested);
shared!(ConsentChanged);
shared!(ProfileCommand);
shared!(RescoreRequested);

impl EnrollmentRequested {
    /// An enrollment with inline WAV audio and every optional field empty.
    pub fn new(
        request_id: impl Into<String>,
        tenant: impl Into<String>,
        user_id: impl Into<String>,
        occurred_at: i64,
        audio: Vec<u8>,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            tenant: tenant.into(),
            user_id: user_id.into(),
            occurred_at,
            schema_version: Self::CURRENT_VERSION,
            trace: None,
            audio,
            audio_uri: None,
            channel: None,
            expected_phrase: None,
            retain_diagnostics: false,
            biokeys: Vec::new(),
        }
    }
}

impl VerificationRequested {
    /// A verification with inline WAV audio and every optional field empty.
    pub fn new(
        request_id: impl Into<String>,
        tenant: impl Into<String>,
        user_id: impl Into<String>,
        occurred_at: i64,
        audio: Vec<u8>,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            tenant: tenant.into(),
            user_id: user_id.into(),
            occurred_at,
            schema_version: Self::CURRENT_VERSION,
            trace: None,
            audio,
            audio_uri: None,
            session_id: None,
            expected_phrase: None,
            channel: None,
            retain_diagnostics: false,
        }
    }
}

impl ConsentChanged {
    /// A consent change for `purpose`, with no trace context.
    pub fn new(
        request_id: impl Into<String>,
        tenant: impl Into<String>,
        user_id: impl Into<String>,
        occurred_at: i64,
        granted: bool,
        purpose: impl Into<String>,
        retain_audio: bool,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            tenant: tenant.into(),
            user_id: user_id.into(),
            occurred_at,
            schema_version: Self::CURRENT_VERSION,
            trace: None,
            granted,
            purpose: purpose.into(),
            retain_audio,
        }
    }
}

impl Contract for EnrollmentRequested {
    const KIND: RecordKind = RecordKind::EnrollmentRequested;
    const CURRENT_VERSION: SchemaVersion = 3;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        self.shared().check(Self::CURRENT_VERSION, limits)?;
        validate::audio(&self.audio, self.audio_uri.as_deref(), limits)?;
        validate::opt_text("expected_phrase", self.expected_phrase.as_deref(), limits)?;
        validate::opt_id("channel", self.channel.as_deref(), limits)?;
        validate::biokeys(&self.biokeys, &self.user_id)
    }
}

impl Contract for VerificationRequested {
    const KIND: RecordKind = RecordKind::VerificationRequested;
    const CURRENT_VERSION: SchemaVersion = 3;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        self.shared().check(Self::CURRENT_VERSION, limits)?;
        validate::audio(&self.audio, self.audio_uri.as_deref(), limits)?;
        validate::opt_id("session_id", self.session_id.as_deref(), limits)?;
        validate::opt_text("expected_phrase", self.expected_phrase.as_deref(), limits)?;
        validate::opt_id("channel", self.channel.as_deref(), limits)
    }
}

impl Contract for ConsentChanged {
    const KIND: RecordKind = RecordKind::ConsentChanged;
    const CURRENT_VERSION: SchemaVersion = 1;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        self.shared().check(Self::CURRENT_VERSION, limits)?;
        validate::id("purpose", &self.purpose, limits)
    }
}

impl Contract for ProfileCommand {
    const KIND: RecordKind = RecordKind::ProfileCommand;
    const CURRENT_VERSION: SchemaVersion = 2;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        self.shared().check(Self::CURRENT_VERSION, limits)?;
        validate::opt_text("reason", self.reason.as_deref(), limits)
    }
}

impl Contract for RescoreRequested {
    const KIND: RecordKind = RecordKind::RescoreRequested;
    const CURRENT_VERSION: SchemaVersion = 1;

    fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        self.shared().check(Self::CURRENT_VERSION, limits)?;
        validate::id("plan_id", &self.plan_id, limits)?;
        validate::id("from_model", &self.from_model, limits)?;
        validate::id("to_model", &self.to_model, limits)
    }
}

// audio is printed as its length: a derived Debug would dump the whole WAV into logs
impl fmt::Debug for EnrollmentRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentRequested")
            .field("request_id", &self.request_id)
            .field("tenant", &self.tenant)
            .field("user_id", &self.user_id)
            .field("occurred_at", &self.occurred_at)
            .field("schema_version", &self.schema_version)
            .field("trace", &self.trace)
            .field("audio", &ByteLen(&self.audio))
            .field("audio_uri", &self.audio_uri)
            .field("channel", &self.channel)
            .field("expected_phrase", &self.expected_phrase)
            .field("retain_diagnostics", &self.retain_diagnostics)
            .field("biokeys", &self.biokeys)
            .finish()
    }
}

impl fmt::Debug for VerificationRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationRequested")
            .field("request_id", &self.request_id)
            .field("tenant", &self.tenant)
            .field("user_id", &self.user_id)
            .field("occurred_at", &self.occurred_at)
            .field("schema_version", &self.schema_version)
            .field("trace", &self.trace)
            .field("audio", &ByteLen(&self.audio))
            .field("audio_uri", &self.audio_uri)
            .field("session_id", &self.session_id)
            .field("expected_phrase", &self.expected_phrase)
            .field("channel", &self.channel)
            .field("retain_diagnostics", &self.retain_diagnostics)
            .finish()
    }
}
