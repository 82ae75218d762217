//! The Rust types mirror the `.avsc` files, and validation enforces the
//! rules the schemas cannot.

use crate::common;

use serde_json::Value as Json;
use timbre_schemas::contracts::avsc;
use timbre_schemas::{
    BioResult, Contract, DecisionKind, JobKind, Limits, ProfileCommandKind, ProfileStatus,
    RecordKind, Registry, Request, TraceContext, fingerprint::parsing_canonical_form,
};

fn avsc_json(kind: RecordKind) -> Json {
    serde_json::from_str(kind.current_schema()).unwrap()
}

fn field_names(schema: &Json) -> Vec<String> {
    schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Field names of a value as serde sees them, sorted.
fn rust_fields<T: serde::Serialize>(value: &T) -> Vec<String> {
    let Json::Object(map) = serde_json::to_value(value).unwrap() else {
        panic!("not a struct")
    };
    let mut names: Vec<_> = map.keys().cloned().collect();
    names.sort();
    names
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A Rust field missing from a type would be silently written as the
/// schema default; catch that here.
#[test]
fn rust_fields_match_avsc_fields() {
    let cases: [(RecordKind, Vec<String>); 7] = [
        (
            RecordKind::EnrollmentRequested,
            rust_fields(&common::enrollment()),
        ),
        (
            RecordKind::VerificationRequested,
            rust_fields(&common::verification()),
        ),
        (RecordKind::ConsentChanged, rust_fields(&common::consent())),
        (RecordKind::ProfileCommand, rust_fields(&common::profile())),
        (
            RecordKind::RescoreRequested,
            rust_fields(&common::rescore()),
        ),
        (RecordKind::Decision, rust_fields(&common::decision())),
        (RecordKind::DeadLetter, rust_fields(&common::dead_letter())),
    ];
    for (kind, rust) in cases {
        let schema = avsc_json(kind);
        assert_eq!(sorted(field_names(&schema)), rust, "{kind}");
        assert_eq!(schema["namespace"], "io.timbre.v1");
        assert_eq!(schema["name"], kind.name());
        assert_eq!(schema["version"], kind.current_version(), "{kind}");
    }
    let mut shared = vec![
        "request_id",
        "tenant",
        "user_id",
        "occurred_at",
        "schema_version",
    ];
    for kind in RecordKind::ALL {
        let names = field_names(&avsc_json(kind));
        if kind != RecordKind::DeadLetter {
            shared.push("trace");
            assert_eq!(
                names[..6],
                shared[..],
                "{kind}: shared fields lead, in order"
            );
            shared.pop();
        }
    }
}

fn symbols(kind: RecordKind, field: &str) -> Vec<String> {
    let schema = avsc_json(kind);
    let field = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == field)
        .unwrap();
    let ty = match &field["type"] {
        Json::Array(union) => union[1].clone(),
        other => other.clone(),
    };
    ty["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn names<T: serde::Serialize>(variants: &[T]) -> Vec<String> {
    variants
        .iter()
        .map(|v| {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Same symbols, same order: Avro writes enums by index.
#[test]
fn rust_enums_match_avro_symbols() {
    use ProfileCommandKind as P;
    assert_eq!(
        names(&[
            P::Create,
            P::Delete,
            P::OptOut,
            P::GreylistAdd,
            P::GreylistRemove,
            P::Unlock
        ]),
        symbols(RecordKind::ProfileCommand, "command")
    );
    use JobKind as J;
    assert_eq!(
        names(&[
            J::Enrollment,
            J::Verification,
            J::Consent,
            J::Profile,
            J::Rescore
        ]),
        symbols(RecordKind::Decision, "job")
    );
    use DecisionKind as D;
    assert_eq!(
        names(&[
            D::Accept,
            D::Retry,
            D::Reject,
            D::Cooldown,
            D::Applied,
            D::Error
        ]),
        symbols(RecordKind::Decision, "decision")
    );
    use ProfileStatus as S;
    assert_eq!(
        names(&[
            S::NotEnrolled,
            S::Enrolled,
            S::ReEnroll,
            S::OptedOut,
            S::Locked
        ]),
        symbols(RecordKind::Decision, "profile_status")
    );
    use BioResult as B;
    assert_eq!(
        names(&[B::TrueHigh, B::TrueLow, B::FalseLow, B::FalseHigh, B::Error]),
        symbols(RecordKind::Decision, "bio_result")
    );
    for kind in RecordKind::ALL.into_iter().filter(|k| k.is_request()) {
        assert!(JobKind::of(kind).is_some());
    }
    assert_eq!(JobKind::of(RecordKind::Decision), None);
}

/// `TraceContext` is defined inline in every file (each `.avsc` must stand
/// alone as a writer schema); the copies must never drift apart.
#[test]
fn trace_context_is_identical_everywhere() {
    let mut forms = Vec::new();
    for json in avsc::CURRENT.iter().chain(avsc::HISTORY.iter()) {
        let schema = apache_avro::Schema::parse_str(json).unwrap();
        let apache_avro::Schema::Record(r) = &schema else {
            panic!()
        };
        if let Some(f) = r.fields.iter().find(|f| f.name == "trace") {
            forms.push(parsing_canonical_form(&f.schema));
        }
    }
    assert_eq!(forms.len(), 16);
    assert!(forms.iter().all(|f| *f == forms[0]), "{forms:#?}");
    assert_eq!(
        forms[0],
        r#"["null",{"name":"io.timbre.v1.TraceContext","type":"record","fields":[{"name":"traceparent","type":"string"},{"name":"tracestate","type":["null","string"]}]}]"#
    );
}

#[test]
fn samples_are_valid() {
    let limits = Limits::default();
    common::enrollment().validate(&limits).unwrap();
    common::verification().validate(&limits).unwrap();
    common::consent().validate(&limits).unwrap();
    common::profile().validate(&limits).unwrap();
    common::rescore().validate(&limits).unwrap();
    common::decision().validate(&limits).unwrap();
    common::error_decision().validate(&limits).unwrap();
    common::dead_letter().validate(&limits).unwrap();
}

fn invalid_field<T: Contract>(value: &T, limits: &Limits) -> String {
    match value.validate(limits) {
        Err(timbre_schemas::SchemaError::InvalidField { field, .. }) => field,
        other => panic!("expected invalid_field, got {other:?}"),
    }
}

#[test]
fn validation_rules() {
    let limits = Limits::default();
    let base = common::verification();
    let check = |f: &dyn Fn(&mut timbre_schemas::VerificationRequested), field: &str| {
        let mut v = base.clone();
        f(&mut v);
        assert_eq!(invalid_field(&v, &limits), field);
    };
    check(&|v| v.request_id.clear(), "request_id");
    check(&|v| v.request_id = "x".repeat(257), "request_id");
    check(&|v| v.user_id = "a\nb".into(), "user_id");
    check(&|v| v.tenant.clear(), "tenant");
    check(&|v| v.tenant = "acme/eu".into(), "tenant");
    check(&|v| v.occurred_at = -1, "occurred_at");
    check(&|v| v.schema_version = 0, "schema_version");
    check(&|v| v.schema_version = 4, "schema_version");
    check(
        &|v| v.trace = Some(TraceContext::new("")),
        "trace.traceparent",
    );
    check(&|v| v.audio.clear(), "audio");
    check(
        &|v| v.audio_uri = Some("s3://bucket/a.wav".into()),
        "audio_uri",
    );
    check(
        &|v| {
            v.audio.clear();
            v.audio_uri = Some(String::new());
        },
        "audio_uri",
    );
    check(&|v| v.session_id = Some(String::new()), "session_id");
    check(
        &|v| v.expected_phrase = Some("9".repeat(5000)),
        "expected_phrase",
    );
    check(&|v| v.channel = Some("x".repeat(300)), "channel");

    // a claim check instead of inline audio is fine
    let mut claim = base.clone();
    claim.audio.clear();
    claim.audio_uri = Some("s3://bucket/a.wav".into());
    claim.validate(&limits).unwrap();

    // the audio limit is configurable
    let tight = Limits {
        max_audio_bytes: 10,
        ..limits
    };
    assert_eq!(invalid_field(&common::enrollment(), &tight), "audio");
    assert_eq!(
        common::enrollment().validate(&tight).unwrap_err().code(),
        "invalid_field"
    );

    let mut d = common::decision();
    d.learning_progress = 1.5;
    assert_eq!(invalid_field(&d, &limits), "learning_progress");
    let mut d = common::decision();
    d.score = Some(f32::NAN);
    assert_eq!(invalid_field(&d, &limits), "score");
    let mut d = common::decision();
    d.reasons = vec!["r".into(); 65];
    assert_eq!(invalid_field(&d, &limits), "reasons");

    // identifier sets: each broken rule is refused on `biokeys`
    type Edit = dyn Fn(&mut Vec<timbre_schemas::Biokey>);
    let broken: [&Edit; 8] = [
        &|k| k[0].key = "User ID".into(),
        &|k| k[0].value = Some("user 42".into()),
        &|k| k[1].value = Some("+15550100".into()),
        &|k| k[1].digest = "zz".repeat(32),
        &|k| k[1].key = "UserID".into(),
        &|k| k[1].is_user_id = true,
        &|k| k[0].is_user_id = false,
        &|k| k[0].value = Some("someone-else".into()),
    ];
    for (i, edit) in broken.iter().enumerate() {
        let mut e = common::enrollment();
        edit(&mut e.biokeys);
        assert_eq!(invalid_field(&e, &limits), "biokeys", "rule {i}");
    }
    let mut none = common::enrollment();
    none.biokeys.clear();
    none.validate(&limits).unwrap();

    let mut consent = common::consent();
    consent.purpose.clear();
    assert_eq!(invalid_field(&consent, &limits), "purpose");
    let mut rescore = common::rescore();
    rescore.to_model.clear();
    assert_eq!(invalid_field(&rescore, &limits), "to_model");
    let mut dl = common::dead_letter();
    dl.source_topic.clear();
    assert_eq!(invalid_field(&dl, &limits), "source_topic");

    // Request::validate dispatches
    let mut bad = common::profile();
    bad.user_id.clear();
    assert_eq!(
        Request::Profile(bad).validate(&limits).unwrap_err().code(),
        "invalid_field"
    );
}

/// Ids survive a corrupt tail, so the error decision reaches its caller.
#[test]
fn peek_envelope_reads_ids_of_broken_jobs() {
    let registry = Registry::new();
    let mut bytes = registry.encode(&common::enrollment()).unwrap();
    let whole = bytes.len();
    bytes.truncate(whole - 20); // audio and everything after it cut off
    assert_eq!(
        registry.decode_request(&bytes).unwrap_err().code(),
        "bad_avro"
    );
    let envelope = registry.peek_envelope(&bytes).unwrap();
    assert_eq!(envelope.kind, RecordKind::EnrollmentRequested);
    assert_eq!(envelope.version, 3);
    assert_eq!(envelope.request_id.as_deref(), Some("enr-0001"));
    assert_eq!(envelope.tenant.as_deref(), Some("acme"));
    assert_eq!(envelope.user_id.as_deref(), Some("user-42"));

    let dl = registry.encode(&common::dead_letter()).unwrap();
    let envelope = registry.peek_envelope(&dl).unwrap();
    assert_eq!(
        envelope.request_id.as_deref(),
        Some("timbre.enrollment.v1/3/1234567")
    );
    assert_eq!((envelope.tenant, envelope.user_id), (None, None));

    // cut inside user_id: nothing to salvage
    let header_and_ids = 10 + 1 + 8 + 1 + 4 + 1 + 3;
    let err = registry
        .peek_envelope(&bytes[..header_and_ids])
        .unwrap_err();
    assert_eq!(err.code(), "bad_avro");
}

#[test]
fn debug_does_not_dump_audio() {
    let mut job = common::enrollment();
    job.audio = vec![7; 100_000];
    let text = format!("{job:?}");
    assert!(text.contains("audio: <100000 bytes>"), "{text}");
    assert!(text.len() < 1_000);
    let text = format!("{:?}", common::dead_letter());
    assert!(
        text.contains("payload: <6 bytes>") && text.contains("key: Some(<12 bytes>)"),
        "{text}"
    );
    assert!(format!("{:?}", common::verification()).contains("audio: <60 bytes>"));
}

#[test]
fn registry_is_a_plain_value() {
    let a = Registry::default();
    let b = a.clone();
    for kind in RecordKind::ALL {
        assert_eq!(a.current_fingerprint(kind), b.current_fingerprint(kind));
        assert!(a.schema(a.current_fingerprint(kind)).is_some());
        assert_eq!(
            RecordKind::from_full_name(&format!("io.timbre.v1.{kind}")),
            Some(kind)
        );
    }
    assert_eq!(RecordKind::from_full_name("io.timbre.v2.Decision"), None);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Registry>();
}

/// Identifier values stay out of debug output (and so out of logs), even
/// those that are not marked sensitive.
#[test]
fn biokey_values_are_not_in_debug_output() {
    let mut e = common::enrollment();
    e.biokeys[1].sensitive = false;
    e.biokeys[1].value = Some("+15550100".into());
    let shown = format!("{e:?}");
    assert!(
        shown.contains("ANI") && !shown.contains("15550100"),
        "{shown}"
    );
}
