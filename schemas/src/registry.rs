//! The registry of writer schemas: encodes with the current schema, decodes
//! any known writer version into the current Rust types.

use std::collections::HashMap;
use std::fmt::Display;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contracts::{
    ConsentChanged, Contract, EnrollmentRequested, JobKind, ProfileCommand, RecordKind,
    RescoreRequested, SchemaVersion, TraceContext, VerificationRequested, avsc, message_key,
};
use crate::error::SchemaError;
use crate::fingerprint::Fingerprint;
use crate::framing;
use crate::scan::{self, Names};
use crate::validate::Limits;

/// Every writer schema this process can read, keyed by fingerprint, plus the
/// current (reader) schema of each record.
///
/// Build one per process (or per worker) and share it; it holds no global
/// state. [`Registry::new`] knows every schema compiled into the crate;
/// [`Registry::register`] adds writers learned elsewhere (e.g. a newer
/// producer's schema during a rolling upgrade).
#[derive(Debug, Clone)]
pub struct Registry {
    writers: HashMap<Fingerprint, Writer>,
    current: HashMap<RecordKind, Fingerprint>,
}

#[derive(Debug, Clone)]
struct Writer {
    kind: RecordKind,
    version: SchemaVersion,
    schema: Schema,
    names: Names,
}

/// One registered writer schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriterInfo {
    /// Record it writes.
    pub kind: RecordKind,
    /// Its `"version"`.
    pub version: SchemaVersion,
    /// Fingerprint that names it in message headers.
    pub fingerprint: Fingerprint,
    /// Whether it is the current (reader) schema of its record.
    pub current: bool,
}

/// Any job request, as decoded from a mixed topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// An enrollment sample.
    Enrollment(EnrollmentRequested),
    /// A verification attempt.
    Verification(VerificationRequested),
    /// A consent change.
    Consent(ConsentChanged),
    /// A profile command.
    Profile(ProfileCommand),
    /// A re-scoring job.
    Rescore(RescoreRequested),
}

/// Ids read from the front of a message without decoding the rest, so even
/// an otherwise broken job can get an error decision addressed to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Record named by the header.
    pub kind: RecordKind,
    /// Version of the writer schema named by the header.
    pub version: SchemaVersion,
    /// `request_id`, if readable.
    pub request_id: Option<String>,
    /// `tenant`, if readable.
    pub tenant: Option<String>,
    /// `user_id`, if readable (dead letters have none).
    pub user_id: Option<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry of every schema compiled into the crate: the current one of
    /// each record and the older writers under `avro/history/`.
    pub fn new() -> Self {
        // the compiled-in schemas are fixed data, checked by this crate's tests
        Self::builtin().expect("built-in schemas are valid")
    }

    fn builtin() -> Result<Self, SchemaError> {
        let mut registry = Self {
            writers: HashMap::new(),
            current: HashMap::new(),
        };
        for json in avsc::CURRENT {
            let writer = parse(json)?;
            let expected = writer.kind.current_version();
            if writer.version != expected {
                return Err(SchemaError::bad_schema(format!(
                    "{} .avsc says version {}, the Rust contract says {expected}",
                    writer.kind, writer.version
                )));
            }
            let fp = Fingerprint::of(&writer.schema);
            registry.current.insert(writer.kind, fp);
            registry.writers.insert(fp, writer);
        }
        for json in avsc::HISTORY {
            registry.register(json)?;
        }
        Ok(registry)
    }

    /// Adds an extra writer schema (`.avsc` text with a `"version"`
    /// attribute). Idempotent. Refused when the current schema of its record
    /// cannot read it, or when its version is already taken by another
    /// schema.
    pub fn register(&mut self, json: &str) -> Result<Fingerprint, SchemaError> {
        let writer = parse(json)?;
        let fp = Fingerprint::of(&writer.schema);
        if let Some(known) = self.writers.get(&fp) {
            return if known.kind == writer.kind && known.version == writer.version {
                Ok(fp)
            } else {
                Err(SchemaError::bad_schema(format!(
                    "{} v{} has the same fingerprint as the registered {} v{}",
                    writer.kind, writer.version, known.kind, known.version
                )))
            };
        }
        if self
            .writers
            .values()
            .any(|w| w.kind == writer.kind && w.version == writer.version)
        {
            return Err(SchemaError::bad_schema(format!(
                "{} v{} is already registered with a different schema",
                writer.kind, writer.version
            )));
        }
        let reader = &self.current_writer(writer.kind).schema;
        SchemaCompatibility::can_read(&writer.schema, reader).map_err(|e| {
            SchemaError::bad_schema(format!(
                "the current {} schema cannot read v{}: {}",
                writer.kind,
                writer.version,
                short(e)
            ))
        })?;
        self.writers.insert(fp, writer);
        Ok(fp)
    }

    /// Fingerprint of the current schema of `kind`.
    pub fn current_fingerprint(&self, kind: RecordKind) -> Fingerprint {
        self.current[&kind]
    }

    /// The parsed writer schema behind a fingerprint.
    pub fn schema(&self, fingerprint: Fingerprint) -> Option<&Schema> {
        self.writers.get(&fingerprint).map(|w| &w.schema)
    }

    /// Every registered writer, sorted by record then version.
    pub fn writers(&self) -> Vec<WriterInfo> {
        let mut all: Vec<_> = self
            .writers
            .iter()
            .map(|(&fingerprint, w)| WriterInfo {
                kind: w.kind,
                version: w.version,
                fingerprint,
                current: self.current[&w.kind] == fingerprint,
            })
            .collect();
        all.sort();
        all
    }

    /// Encodes a value with the current schema of its record, single-object
    /// framed.
    pub fn encode<T: Contract>(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        self.encode_with_writer(self.current_fingerprint(T::KIND), value)
    }

    /// Encodes any request with the current schema of its record.
    pub fn encode_request(&self, request: &Request) -> Result<Vec<u8>, SchemaError> {
        match request {
            Request::Enrollment(r) => self.encode(r),
            Request::Verification(r) => self.encode(r),
            Request::Consent(r) => self.encode(r),
            Request::Profile(r) => self.encode(r),
            Request::Rescore(r) => self.encode(r),
        }
    }

    /// Encodes `value` with a specific registered writer schema, e.g. to keep
    /// producing an older version while consumers upgrade. The value's fields
    /// must match that schema (fields it lacks take the schema default).
    pub fn encode_with_writer<T: Serialize>(
        &self,
        fingerprint: Fingerprint,
        value: &T,
    ) -> Result<Vec<u8>, SchemaError> {
        let writer = self
            .writers
            .get(&fingerprint)
            .ok_or(SchemaError::UnknownSchema { fingerprint })?;
        let failed = |e: apache_avro::Error| SchemaError::EncodeFailed {
            record: writer.kind.name(),
            detail: short(e),
        };
        let datum_writer = GenericDatumWriter::builder(&writer.schema)
            .build()
            .map_err(failed)?;
        let mut out = Vec::with_capacity(framing::HEADER_LEN + 256);
        framing::write_header(fingerprint, &mut out);
        datum_writer.write_ser(&mut out, value).map_err(failed)?;
        Ok(out)
    }

    /// Decodes a message holding record `T`, written with any registered
    /// version of it, into the current type.
    pub fn decode<T: Contract>(&self, message: &[u8]) -> Result<T, SchemaError> {
        let (writer, datum) = self.writer_of(message)?;
        if writer.kind != T::KIND {
            return Err(SchemaError::WrongRecord {
                expected: T::KIND.name(),
                found: writer.kind.name(),
            });
        }
        self.read(writer, datum)
    }

    /// Decodes whichever request record the header names, for consumers of
    /// a topic that carries several job kinds.
    pub fn decode_request(&self, message: &[u8]) -> Result<Request, SchemaError> {
        let (writer, datum) = self.writer_of(message)?;
        Ok(match writer.kind {
            RecordKind::EnrollmentRequested => Request::Enrollment(self.read(writer, datum)?),
            RecordKind::VerificationRequested => Request::Verification(self.read(writer, datum)?),
            RecordKind::ConsentChanged => Request::Consent(self.read(writer, datum)?),
            RecordKind::ProfileCommand => Request::Profile(self.read(writer, datum)?),
            RecordKind::RescoreRequested => Request::Rescore(self.read(writer, datum)?),
            RecordKind::Decision | RecordKind::DeadLetter => {
                return Err(SchemaError::WrongRecord {
                    expected: "request",
                    found: writer.kind.name(),
                });
            }
        })
    }

    /// Reads `request_id`, `tenant` and `user_id` from the front of a message
    /// without decoding the rest. Works when later fields are corrupt, as long
    /// as the header names a known schema and the ids themselves are intact.
    pub fn peek_envelope(&self, message: &[u8]) -> Result<Envelope, SchemaError> {
        let (writer, datum) = self.writer_of(message)?;
        let [request_id, tenant, user_id] = scan::peek_strings(
            &writer.schema,
            &writer.names,
            datum,
            ["request_id", "tenant", "user_id"],
        )
        .map_err(|detail| SchemaError::BadAvro {
            record: writer.kind.name(),
            detail,
        })?;
        Ok(Envelope {
            kind: writer.kind,
            version: writer.version,
            request_id,
            tenant,
            user_id,
        })
    }

    fn current_writer(&self, kind: RecordKind) -> &Writer {
        &self.writers[&self.current[&kind]]
    }

    fn writer_of<'m>(&self, message: &'m [u8]) -> Result<(&Writer, &'m [u8]), SchemaError> {
        let (fingerprint, datum) = framing::split(message)?;
        let writer = self
            .writers
            .get(&fingerprint)
            .ok_or(SchemaError::UnknownSchema { fingerprint })?;
        Ok((writer, datum))
    }

    fn read<T: DeserializeOwned>(&self, writer: &Writer, datum: &[u8]) -> Result<T, SchemaError> {
        let bad = |detail: String| SchemaError::BadAvro {
            record: writer.kind.name(),
            detail,
        };
        // bounds first: apache-avro would trust a corrupt length prefix
        let used = scan::datum_len(&writer.schema, &writer.names, datum).map_err(bad)?;
        if used != datum.len() {
            return Err(bad(format!(
                "{} trailing bytes after the datum",
                datum.len() - used
            )));
        }
        let reader = &self.current_writer(writer.kind).schema;
        // resolution is only needed when an older writer wrote it
        let resolve_to = (!std::ptr::eq(reader, &writer.schema)).then_some(reader);
        let value = GenericDatumReader::builder(&writer.schema)
            .maybe_reader_schema(resolve_to)
            .build()
            .and_then(|r| r.read_value(&mut &datum[..]))
            .map_err(|e| bad(short(e)))?;
        apache_avro::from_value(&value).map_err(|e| bad(short(e)))
    }
}

impl Request {
    /// Record of this request.
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Enrollment(_) => RecordKind::EnrollmentRequested,
            Self::Verification(_) => RecordKind::VerificationRequested,
            Self::Consent(_) => RecordKind::ConsentChanged,
            Self::Profile(_) => RecordKind::ProfileCommand,
            Self::Rescore(_) => RecordKind::RescoreRequested,
        }
    }

    /// Job kind to put in the decision.
    pub fn job(&self) -> JobKind {
        match self {
            Self::Enrollment(_) => JobKind::Enrollment,
            Self::Verification(_) => JobKind::Verification,
            Self::Consent(_) => JobKind::Consent,
            Self::Profile(_) => JobKind::Profile,
            Self::Rescore(_) => JobKind::Rescore,
        }
    }

    /// Idempotency key.
    pub fn request_id(&self) -> &str {
        self.shared().request_id
    }

    /// Tenant.
    pub fn tenant(&self) -> &str {
        self.shared().tenant
    }

    /// User.
    pub fn user_id(&self) -> &str {
        self.shared().user_id
    }

    /// When the caller created it, UTC epoch millis.
    pub fn occurred_at(&self) -> i64 {
        self.shared().occurred_at
    }

    /// Caller's trace context.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.shared().trace
    }

    /// Asks that an audio job's recording and decision be kept as
    /// diagnostic data; other jobs carry no audio and are left as they are.
    pub fn retain_diagnostics(&mut self) {
        match self {
            Self::Enrollment(r) => r.retain_diagnostics = true,
            Self::Verification(r) => r.retain_diagnostics = true,
            Self::Consent(_) | Self::Profile(_) | Self::Rescore(_) => {}
        }
    }

    /// Kafka key: `tenant/user_id`.
    pub fn message_key(&self) -> String {
        message_key(self.tenant(), self.user_id())
    }

    /// Runs the record's [`Contract::validate`].
    pub fn validate(&self, limits: &Limits) -> Result<(), SchemaError> {
        match self {
            Self::Enrollment(r) => r.validate(limits),
            Self::Verification(r) => r.validate(limits),
            Self::Consent(r) => r.validate(limits),
            Self::Profile(r) => r.validate(limits),
            Self::Rescore(r) => r.validate(limits),
        }
    }

    fn shared(&self) -> crate::validate::Shared<'_> {
        match self {
            Self::Enrollment(r) => r.shared(),
            Self::Verification(r) => r.shared(),
            Self::Consent(r) => r.shared(),
            Self::Profile(r) => r.shared(),
            Self::Rescore(r) => r.shared(),
        }
    }
}

fn parse(json: &str) -> Result<Writer, SchemaError> {
    let schema = Schema::parse_str(json).map_err(|e| SchemaError::bad_schema(short(e)))?;
    let Schema::Record(record) = &schema else {
        return Err(SchemaError::bad_schema("top-level schema is not a record"));
    };
    let full = record.name.fullname(None);
    let kind = RecordKind::from_full_name(&full)
        .ok_or_else(|| SchemaError::bad_schema(format!("{full} is not a Timbre contract")))?;
    let version = record
        .attributes
        .get("version")
        .and_then(|v| v.as_i64())
        .and_then(|v| SchemaVersion::try_from(v).ok())
        .filter(|&v| v >= 1)
        .ok_or_else(|| {
            SchemaError::bad_schema(format!("{full} lacks a positive integer \"version\""))
        })?;
    let mut names = Names::new();
    scan::collect_names(&schema, None, &mut names);
    Ok(Writer {
        kind,
        version,
        schema,
        names,
    })
}

// apache-avro errors can embed whole schemas in their text; keep the head
fn short(e: impl Display) -> String {
    const MAX: usize = 400;
    let mut s = e.to_string();
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
