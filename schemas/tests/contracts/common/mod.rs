//! Fixed sample values shared by the integration tests. Changing one changes
//! the golden bytes: re-bless deliberately (`TIMBRE_BLESS=1`).

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use timbre_schemas::{
    BioResult, Biokey, ConsentChanged, DeadLetter, Decision, DecisionKind, EnrollmentRequested,
    JobKind, ProfileCommand, ProfileCommandKind, ProfileStatus, RescoreRequested, Signals,
    Thresholds, TraceContext, VerificationRequested,
};

pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub fn trace() -> TraceContext {
    TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("timbre=1".into()),
    }
}

/// A tiny but real 16 kHz mono 16-bit WAV: header plus 8 samples.
pub fn wav() -> Vec<u8> {
    let samples: [i16; 8] = [0, 1200, -1200, 3000, -3000, 800, -800, 0];
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // pcm
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&32_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

pub fn enrollment() -> EnrollmentRequested {
    EnrollmentRequested {
        request_id: "enr-0001".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0,
        schema_version: 3,
        trace: Some(trace()),
        audio: wav(),
        audio_uri: None,
        channel: Some("phone".into()),
        expected_phrase: Some("3 8 1 5 0 6".into()),
        retain_diagnostics: true,
        biokeys: vec![
            Biokey {
                key: "UserID".into(),
                value: Some("user-42".into()),
                digest: "ab".repeat(32),
                display_name: Some("User".into()),
                priority: 1,
                sensitive: false,
                is_user_id: true,
            },
            Biokey {
                key: "ANI".into(),
                value: None,
                digest: "cd".repeat(32),
                display_name: None,
                priority: 5,
                sensitive: true,
                is_user_id: false,
            },
        ],
    }
}

pub fn verification() -> VerificationRequested {
    VerificationRequested {
        request_id: "ver-0001".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0 + 1_000,
        schema_version: 3,
        trace: None,
        audio: wav(),
        audio_uri: None,
        session_id: Some("sess-9".into()),
        expected_phrase: Some("vier sieben eins neun — 4719".into()),
        channel: Some("app".into()),
        retain_diagnostics: true,
    }
}

pub fn consent() -> ConsentChanged {
    ConsentChanged {
        request_id: "con-0001".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0 + 2_000,
        schema_version: 1,
        trace: Some(TraceContext::new(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )),
        granted: true,
        purpose: "voice_biometrics".into(),
        retain_audio: false,
    }
}

pub fn profile() -> ProfileCommand {
    ProfileCommand {
        request_id: "pro-0001".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0 + 3_000,
        schema_version: 2,
        trace: None,
        command: ProfileCommandKind::GreylistAdd,
        reason: Some("confirmed fraud case #123".into()),
    }
}

pub fn rescore() -> RescoreRequested {
    RescoreRequested {
        request_id: "res-0001".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0 + 4_000,
        schema_version: 1,
        trace: None,
        plan_id: "plan-2026-01".into(),
        from_model: "campplus@1a2b3c".into(),
        to_model: "campplus@4d5e6f".into(),
    }
}

pub fn decision() -> Decision {
    Decision {
        trace: Some(trace()),
        profile_status: Some(ProfileStatus::Enrolled),
        score: Some(2.5),
        confidence: Some(0.96875),
        signals: Some(Signals {
            voice: "high".into(),
            phrase: "medium".into(),
            liveness: "high".into(),
            phrase_score: Some(0.7),
            phrase_threshold: Some(0.5),
            liveness_score: Some(0.0625),
            liveness_threshold: Some(0.025),
            synthetic_score: Some(1.5),
            synthetic_threshold: Some(-3.0),
        }),
        bio_result: Some(BioResult::TrueHigh),
        reasons: vec!["voice_match".into(), "phrase_partial".into()],
        speech_millis: 2_340,
        learning_progress: 0.25,
        enrollment_progress: 1.0,
        model_id: Some("campplus@1a2b3c".into()),
        session_id: Some("sess-9".into()),
        thresholds: Some(Thresholds {
            accept: 1.75,
            reject: 0.25,
            scale: "llr".into(),
            band: Some("narrow".into()),
        }),
        request_digest: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        raw_score: Some(0.625),
        norm_score: Some(3.5),
        llr: Some(2.5),
        ..Decision::new(
            "ver-0001",
            "acme",
            "user-42",
            JobKind::Verification,
            DecisionKind::Accept,
            T0 + 1_000,
            T0 + 1_250,
        )
    }
}

pub fn error_decision() -> Decision {
    Decision {
        error_code: Some("bad_avro".into()),
        error_message: Some("datum does not decode".into()),
        retry_after_ms: Some(0),
        ..Decision::new(
            "enr-0002",
            "acme",
            "user-43",
            JobKind::Enrollment,
            DecisionKind::Error,
            T0,
            T0 + 5,
        )
    }
}

pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        request_id: DeadLetter::position_id("timbre.enrollment.v1", 3, 1_234_567),
        tenant: None,
        source_topic: "timbre.enrollment.v1".into(),
        partition: 3,
        offset: 1_234_567,
        key: Some(b"acme/user-43".to_vec()),
        payload: vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff],
        error_code: "bad_framing".into(),
        error_message: "marker is de ad, expected c3 01".into(),
        occurred_at: T0 + 6_000,
        schema_version: 2,
        payload_sha256: Some(
            "9d75d071ba512516dccba91d6f1adbf305c24c773250f1c0a49180819141bc3a".into(),
        ),
        payload_size: Some(6),
        payload_kept: "whole".into(),
    }
}

/// What a v1 producer's `VerificationRequested` looked like: no `channel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRequestedV1 {
    pub request_id: String,
    pub tenant: String,
    pub user_id: String,
    pub occurred_at: i64,
    pub schema_version: i32,
    pub trace: Option<TraceContext>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub audio: Vec<u8>,
    pub audio_uri: Option<String>,
    pub session_id: Option<String>,
    pub expected_phrase: Option<String>,
}

pub fn verification_v1() -> VerificationRequestedV1 {
    VerificationRequestedV1 {
        request_id: "ver-legacy-1".into(),
        tenant: "acme".into(),
        user_id: "user-42".into(),
        occurred_at: T0 - 86_400_000,
        schema_version: 1,
        trace: Some(trace()),
        audio: wav(),
        audio_uri: None,
        session_id: None,
        expected_phrase: Some("1 2 3 4".into()),
    }
}

/// Every error code a decode can produce.
pub const DECODE_CODES: [&str; 4] = ["bad_framing", "unknown_schema", "bad_avro", "wrong_record"];
