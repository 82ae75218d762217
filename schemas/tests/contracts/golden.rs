//! Golden wire bytes: any change to the encoding of a contract fails here.
//!
//! The files under `tests/golden/` are committed. Regenerate them only on
//! purpose: `TIMBRE_BLESS=1 cargo test -p timbre-schemas --test golden`.

use crate::common;

use std::path::PathBuf;

use timbre_schemas::contracts::avsc;
use timbre_schemas::{Contract, Fingerprint, Registry};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.bin"))
}

fn bless() -> bool {
    std::env::var_os("TIMBRE_BLESS").is_some_and(|v| v == "1")
}

/// Compares `bytes` with the golden file `name` (or rewrites it when blessing).
fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden_path(name);
    if bless() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with TIMBRE_BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        golden == bytes,
        "{name}: wire bytes changed (a compatibility break?)\n golden: {golden:02x?}\n    now: {bytes:02x?}"
    );
}

/// Encodes the sample, compares with its golden file, and decodes the golden
/// bytes back to the sample.
fn round_trip<T: Contract>(value: T) {
    let registry = Registry::new();
    let name = T::KIND.name();
    let bytes = registry.encode(&value).unwrap();
    check_golden(name, &bytes);
    let golden = std::fs::read(golden_path(name)).unwrap();
    assert_eq!(registry.decode::<T>(&golden).unwrap(), value, "{name}");
}

#[test]
fn enrollment_requested() {
    round_trip(common::enrollment());
}

#[test]
fn verification_requested() {
    round_trip(common::verification());
}

#[test]
fn consent_changed() {
    round_trip(common::consent());
}

#[test]
fn profile_command() {
    round_trip(common::profile());
}

#[test]
fn rescore_requested() {
    round_trip(common::rescore());
}

#[test]
fn decision() {
    round_trip(common::decision());
}

#[test]
fn dead_letter() {
    round_trip(common::dead_letter());
}

/// Bytes a v1 producer wrote stay readable forever: they are pinned here and
/// decoded by the evolution tests.
#[test]
fn verification_requested_v1() {
    let registry = Registry::new();
    let v1 = Fingerprint::of(
        &apache_avro::Schema::parse_str(avsc::history::VERIFICATION_REQUESTED_V1).unwrap(),
    );
    let bytes = registry
        .encode_with_writer(v1, &common::verification_v1())
        .unwrap();
    check_golden("VerificationRequested.v1", &bytes);
}

/// Decodes the pinned bytes of an older writer `version` of `T` (the golden
/// file `<name>.v<version>.bin`, kept as it was) with today's reader.
fn decode_old<T: timbre_schemas::Contract>(history_schema: &str, version: u32) -> T {
    let registry = Registry::new();
    let bytes = std::fs::read(golden_path(&format!("{}.v{version}", T::KIND.name()))).unwrap();
    let (fp, _) = timbre_schemas::framing::split(&bytes).unwrap();
    assert_eq!(
        fp,
        Fingerprint::of(&apache_avro::Schema::parse_str(history_schema).unwrap())
    );
    registry.decode(&bytes).unwrap()
}

/// Decisions a v1 producer wrote (before the phrase score) still decode.
#[test]
fn decision_v1_still_decodes() {
    let decoded: timbre_schemas::Decision = decode_old(avsc::history::DECISION_V1, 1);
    let mut expected = before_liveness_scores(common::decision());
    let signals = expected.signals.as_mut().unwrap();
    (signals.phrase_score, signals.phrase_threshold) = (None, None);
    expected.request_digest = None;
    expected.schema_version = 1;
    assert_eq!(decoded, expected);
}

/// What the test decision was before v4: no liveness check had run.
fn before_liveness_scores(mut d: timbre_schemas::Decision) -> timbre_schemas::Decision {
    let signals = d.signals.as_mut().unwrap();
    signals.liveness = "not_checked".into();
    (signals.liveness_score, signals.liveness_threshold) = (None, None);
    before_synthetic_scores(d)
}

/// What the test decision was before v5: no synthetic-speech check.
fn before_synthetic_scores(mut d: timbre_schemas::Decision) -> timbre_schemas::Decision {
    let signals = d.signals.as_mut().unwrap();
    (signals.synthetic_score, signals.synthetic_threshold) = (None, None);
    before_calibration(d)
}

/// What the test decision was before v6: a raw cosine score against cosine
/// thresholds.
fn before_calibration(mut d: timbre_schemas::Decision) -> timbre_schemas::Decision {
    d.score = Some(0.8125);
    d.thresholds = Some(timbre_schemas::Thresholds {
        accept: 0.4375,
        reject: 0.3125,
        scale: "cosine".into(),
        band: None,
    });
    (d.raw_score, d.norm_score, d.llr) = (None, None, None);
    d
}

/// Decisions a v5 producer wrote (before calibration) still decode.
#[test]
fn decision_v5_still_decodes() {
    let decoded: timbre_schemas::Decision = decode_old(avsc::history::DECISION_V5, 5);
    let expected = timbre_schemas::Decision {
        schema_version: 5,
        ..before_calibration(common::decision())
    };
    assert_eq!(decoded, expected);
}

/// Decisions a v2 producer wrote (before the request digest) still decode.
#[test]
fn decision_v2_still_decodes() {
    let decoded: timbre_schemas::Decision = decode_old(avsc::history::DECISION_V2, 2);
    let expected = timbre_schemas::Decision {
        request_digest: None,
        schema_version: 2,
        ..before_liveness_scores(common::decision())
    };
    assert_eq!(decoded, expected);
}

/// Decisions a v4 producer wrote (before the synthetic-speech score) still decode.
#[test]
fn decision_v4_still_decodes() {
    let decoded: timbre_schemas::Decision = decode_old(avsc::history::DECISION_V4, 4);
    let expected = timbre_schemas::Decision {
        schema_version: 4,
        ..before_synthetic_scores(common::decision())
    };
    assert_eq!(decoded, expected);
}

/// Decisions a v3 producer wrote (before the liveness score) still decode.
#[test]
fn decision_v3_still_decodes() {
    let decoded: timbre_schemas::Decision = decode_old(avsc::history::DECISION_V3, 3);
    let expected = timbre_schemas::Decision {
        schema_version: 3,
        ..before_liveness_scores(common::decision())
    };
    assert_eq!(decoded, expected);
}

/// Dead letters a v1 producer wrote (the whole value, no digest) still decode.
#[test]
fn dead_letter_v1_still_decodes() {
    let decoded: timbre_schemas::DeadLetter = decode_old(avsc::history::DEAD_LETTER_V1, 1);
    let expected = timbre_schemas::DeadLetter {
        schema_version: 1,
        payload_sha256: None,
        payload_size: None,
        payload_kept: "whole".into(),
        ..common::dead_letter()
    };
    assert_eq!(decoded, expected);
}

/// Commands a v1 producer wrote (before `UNLOCK`) still decode.
#[test]
fn profile_command_v1_still_decodes() {
    let decoded: timbre_schemas::ProfileCommand = decode_old(avsc::history::PROFILE_COMMAND_V1, 1);
    let expected = timbre_schemas::ProfileCommand {
        schema_version: 1,
        ..common::profile()
    };
    assert_eq!(decoded, expected);
}

/// The header of every golden file carries the fingerprint of the schema
/// that is current today; a schema edit without a version bump shows here.
#[test]
fn golden_headers_name_the_current_schemas() {
    if bless() {
        return; // the files are being rewritten by the other tests
    }
    let registry = Registry::new();
    for kind in timbre_schemas::RecordKind::ALL {
        let bytes = std::fs::read(golden_path(kind.name())).unwrap();
        let (fp, _) = timbre_schemas::framing::split(&bytes).unwrap();
        assert_eq!(fp, registry.current_fingerprint(kind), "{kind}");
    }
}

/// Enrollments a v1 producer wrote (before `expected_phrase` and
/// `retain_diagnostics`) still decode: free speech, retaining nothing.
#[test]
fn enrollment_requested_v1_still_decodes() {
    let decoded: timbre_schemas::EnrollmentRequested =
        decode_old(avsc::history::ENROLLMENT_REQUESTED_V1, 1);
    let expected = timbre_schemas::EnrollmentRequested {
        schema_version: 1,
        expected_phrase: None,
        retain_diagnostics: false,
        biokeys: Vec::new(),
        ..common::enrollment()
    };
    assert_eq!(decoded, expected);
}

/// Enrollments a v2 producer wrote (before `biokeys`) still decode, with
/// no identifiers (the stored set is kept).
#[test]
fn enrollment_requested_v2_still_decodes() {
    let decoded: timbre_schemas::EnrollmentRequested =
        decode_old(avsc::history::ENROLLMENT_REQUESTED_V2, 2);
    let expected = timbre_schemas::EnrollmentRequested {
        schema_version: 2,
        biokeys: Vec::new(),
        ..common::enrollment()
    };
    assert_eq!(decoded, expected);
}

/// Verifications a v2 producer wrote (before `retain_diagnostics`) still
/// decode, retaining nothing.
#[test]
fn verification_requested_v2_still_decodes() {
    let decoded: timbre_schemas::VerificationRequested =
        decode_old(avsc::history::VERIFICATION_REQUESTED_V2, 2);
    let expected = timbre_schemas::VerificationRequested {
        schema_version: 2,
        retain_diagnostics: false,
        ..common::verification()
    };
    assert_eq!(decoded, expected);
}
