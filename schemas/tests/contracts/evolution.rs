//! Schema evolution: old writers stay readable, unknown or incompatible
//! writers are refused with the right codes.

use crate::common;

use std::path::PathBuf;

use apache_avro::Schema;
use timbre_schemas::contracts::avsc;
use timbre_schemas::{
    Contract, Decision, EnrollmentRequested, Fingerprint, RecordKind, Registry, Request,
    VerificationRequested, framing,
};

fn v1_fingerprint() -> Fingerprint {
    Fingerprint::of(&Schema::parse_str(avsc::history::VERIFICATION_REQUESTED_V1).unwrap())
}

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.bin"));
    std::fs::read(path).unwrap()
}

/// The v1 sample, as the current type sees it: `channel` takes its default.
fn expected_from_v1() -> VerificationRequested {
    let v1 = common::verification_v1();
    VerificationRequested {
        request_id: v1.request_id,
        tenant: v1.tenant,
        user_id: v1.user_id,
        occurred_at: v1.occurred_at,
        schema_version: v1.schema_version,
        trace: v1.trace,
        audio: v1.audio,
        audio_uri: v1.audio_uri,
        session_id: v1.session_id,
        expected_phrase: v1.expected_phrase,
        channel: None,
        retain_diagnostics: false,
    }
}

#[test]
fn every_writer_version_is_registered() {
    let registry = Registry::new();
    let versions: Vec<_> = registry
        .writers()
        .into_iter()
        .filter(|w| w.kind == RecordKind::VerificationRequested)
        .map(|w| (w.version, w.current))
        .collect();
    assert_eq!(versions, [(1, false), (2, false), (3, true)]);
    assert_eq!(VerificationRequested::CURRENT_VERSION, 3);
    assert_ne!(
        v1_fingerprint(),
        registry.current_fingerprint(RecordKind::VerificationRequested)
    );
}

#[test]
fn v1_bytes_decode_with_the_current_reader() {
    let registry = Registry::new();
    let bytes = golden("VerificationRequested.v1");
    assert_eq!(framing::split(&bytes).unwrap().0, v1_fingerprint());

    let decoded: VerificationRequested = registry.decode(&bytes).unwrap();
    assert_eq!(decoded, expected_from_v1());
    decoded.validate(&Default::default()).unwrap();

    // the same through the mixed-topic entry point
    assert_eq!(
        registry.decode_request(&bytes).unwrap(),
        Request::Verification(expected_from_v1())
    );
    let envelope = registry.peek_envelope(&bytes).unwrap();
    assert_eq!(
        (envelope.kind, envelope.version),
        (RecordKind::VerificationRequested, 1)
    );
}

#[test]
fn v1_writer_drops_nothing_it_knows() {
    // a v1 producer that is fed a current value cannot silently lose `channel`:
    // the serializer refuses the unknown field
    let registry = Registry::new();
    let err = registry
        .encode_with_writer(v1_fingerprint(), &common::verification())
        .unwrap_err();
    assert_eq!(err.code(), "encode_failed");
}

#[test]
fn an_unknown_newer_writer_is_unknown_schema() {
    // a v4 producer added a field this build has never seen
    let v4 = avsc::VERIFICATION_REQUESTED
        .replace(r#""version": 3"#, r#""version": 4"#)
        .replace(
            r#""fields": ["#,
            r#""fields": [{"name": "locale", "type": ["null", "string"], "default": null},"#,
        );
    let mut newer = Registry::new();
    let v4_fp = newer.register(&v4).unwrap();
    let bytes = newer
        .encode_with_writer(v4_fp, &serde_v4(common::verification()))
        .unwrap();

    let registry = Registry::new();
    let err = registry
        .decode::<VerificationRequested>(&bytes)
        .unwrap_err();
    assert_eq!(err.code(), "unknown_schema");
    assert_eq!(
        registry.decode_request(&bytes).unwrap_err().code(),
        "unknown_schema"
    );

    // once told about v4 (e.g. from config), this build reads it as v3,
    // skipping the field it does not know
    let got: VerificationRequested = newer.decode(&bytes).unwrap();
    assert_eq!(got, common::verification());
}

/// The v3 sample plus the field only v4 knows.
fn serde_v4(v: VerificationRequested) -> impl serde::Serialize {
    #[derive(serde::Serialize)]
    struct V4 {
        locale: Option<String>,
        #[serde(flatten)]
        rest: VerificationRequested,
    }
    V4 {
        locale: Some("de-CH".into()),
        rest: v,
    }
}

#[test]
fn an_incompatible_writer_is_refused_at_registration() {
    let mut registry = Registry::new();
    // a "v0" without `tenant`: the current reader has no default for it
    let missing_required = avsc::history::VERIFICATION_REQUESTED_V1
        .replace(r#""version": 1"#, r#""version": 7"#)
        .replacen(r#""name": "tenant""#, r#""name": "tenant_name""#, 1);
    let err = registry.register(&missing_required).unwrap_err();
    assert_eq!(err.code(), "bad_schema", "{err}");
    assert!(err.to_string().contains("cannot read v7"), "{err}");

    // a writer that changed a field's type
    let retyped = avsc::CONSENT_CHANGED
        .replace(r#""version": 1"#, r#""version": 2"#)
        .replace(
            r#""type": "boolean",
      "doc": "True when"#,
            r#""type": "string",
      "doc": "True when"#,
        );
    assert_ne!(
        retyped,
        avsc::CONSENT_CHANGED.replace(r#""version": 1"#, r#""version": 2"#)
    );
    let err = registry.register(&retyped).unwrap_err();
    assert!(err.to_string().contains("cannot read v2"), "{err}");

    // a version number reused for a different schema
    let reused = avsc::VERIFICATION_REQUESTED
        .replace("\"default\": null", "\"default\": null, \"doc\": \"x\"");
    assert!(
        registry.register(&reused).is_ok(),
        "docs only: same fingerprint, idempotent"
    );
    let clash = avsc::history::VERIFICATION_REQUESTED_V1.replace(
        r#""fields": ["#,
        r#""fields": [{"name": "x", "type": "int", "default": 0},"#,
    );
    let err = registry.register(&clash).unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");

    // something that is not a contract at all
    assert_eq!(
        registry.register(r#""int""#).unwrap_err().code(),
        "bad_schema"
    );
    assert_eq!(
        registry.register("{not json").unwrap_err().code(),
        "bad_schema"
    );
    let unversioned = avsc::RESCORE_REQUESTED.replace(r#""version": 1,"#, "");
    assert_eq!(
        registry.register(&unversioned).unwrap_err().code(),
        "bad_schema"
    );
}

#[test]
fn a_record_is_never_decoded_as_another() {
    let registry = Registry::new();
    let enrollment = registry.encode(&common::enrollment()).unwrap();
    let err = registry
        .decode::<VerificationRequested>(&enrollment)
        .unwrap_err();
    assert_eq!(err.code(), "wrong_record");
    assert_eq!(
        err.to_string(),
        "expected a VerificationRequested record, found EnrollmentRequested"
    );

    // a decision on a request topic
    let decision = registry.encode(&common::decision()).unwrap();
    assert_eq!(
        registry.decode_request(&decision).unwrap_err().code(),
        "wrong_record"
    );
    assert_eq!(
        registry
            .decode::<EnrollmentRequested>(&decision)
            .unwrap_err()
            .code(),
        "wrong_record"
    );
    assert!(registry.decode::<Decision>(&decision).is_ok());
}

#[test]
fn mixed_topic_dispatch() {
    let registry = Registry::new();
    let requests = [
        Request::Enrollment(common::enrollment()),
        Request::Verification(common::verification()),
        Request::Consent(common::consent()),
        Request::Profile(common::profile()),
        Request::Rescore(common::rescore()),
    ];
    for request in requests {
        let bytes = registry.encode_request(&request).unwrap();
        let back = registry.decode_request(&bytes).unwrap();
        assert_eq!(back.kind(), request.kind());
        assert_eq!(back.message_key(), "acme/user-42");
        back.validate(&Default::default()).unwrap();
        assert_eq!(back, request);
    }
}
