//! The quick-start demo: real recordings go through the real pipeline as
//! events, and the decisions come back from the decisions topic.

use std::path::Path;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use timbre::client::JobClient;
use timbre::domain::{BIOMETRIC_PURPOSE, now_ms};
use timbre::liveness::replays::replayed_wav;
use timbre_schemas::{ConsentChanged, EnrollmentRequested, Request, VerificationRequested};

/// The demo tenant; `timbre up --demo` lets it enroll from one 8 s recording.
pub const TENANT: &str = "demo";
/// Net speech that enrolls in the demo tenant (the 8 s enrollment
/// recording holds 4.7 s of it).
pub const ENROLLMENT_TARGET_MILLIS: u64 = 4_000;
/// Two utterances of one speaker and one of another (LibriSpeech test-other).
const ENROLL: &str = "test-other/1688/1688-142285-0000.wav";
const SAME: &str = "test-other/1688/1688-142285-0005.wav";
const OTHER: &str = "test-other/1998/1998-15444-0000.wav";
/// Text-to-speech (flite), next to the LibriSpeech folder in the fixtures.
const SYNTHETIC: &str = "../synthetic/flite-slt-1.wav";

pub async fn run(client: &JobClient, audio_dir: &Path) -> Result<()> {
    let read = |f: &str| {
        std::fs::read(audio_dir.join(f))
            .with_context(|| format!("reading {}", audio_dir.join(f).display()))
    };
    let run_id = format!("{:x}", now_ms());
    let user = format!("speaker-1688-{run_id}");
    let id = |s: &str| format!("{s}-{run_id}");
    let steps: Vec<(&str, &str, Request)> = vec![
        (
            "consent",
            "grant consent",
            Request::Consent(ConsentChanged::new(
                id("consent"),
                TENANT,
                user.clone(),
                now_ms(),
                true,
                BIOMETRIC_PURPOSE,
                true,
            )),
        ),
        (
            "enroll",
            ENROLL,
            enrollment(&id("enroll"), &user, read(ENROLL)?),
        ),
        (
            "verify same speaker",
            SAME,
            verification(&id("verify-same"), &user, read(SAME)?),
        ),
        // Before the refused attempts: three of them start a cooldown, which
        // would answer this one before its audio is read.
        (
            "verify malformed audio",
            "(text bytes)",
            verification(&id("verify-bad"), &user, b"not a wav".to_vec()),
        ),
        (
            "verify a replay",
            "(the same recording through a phone)",
            verification(
                &id("verify-replay"),
                &user,
                replayed_wav(&read(SAME)?, "room_and_telephone_band")?,
            ),
        ),
        (
            "verify a synthetic voice",
            "synthetic/flite-slt-1.wav (flite TTS)",
            verification(&id("verify-synthetic"), &user, read(SYNTHETIC)?),
        ),
        (
            "verify other speaker",
            OTHER,
            verification(&id("verify-other"), &user, read(OTHER)?),
        ),
    ];
    println!(
        "{:<24} {:<40} {:<9} {:>6} {:>6} {:>8}  reasons / error",
        "step", "input", "decision", "cosine", "llr", "speech"
    );
    for (step, input, request) in &steps {
        let decision = client
            .submit(request, Duration::from_secs(300))
            .await?
            .with_context(|| format!("no decision for {step} within 300 s"))?;
        println!(
            "{:<24} {:<40} {:<9} {:>6} {:>6} {:>7.1}s  {}",
            step,
            input,
            format!("{:?}", decision.decision).to_lowercase(),
            decision.raw_score.map_or("-".into(), |s| format!("{s:.3}")),
            decision.llr.map_or("-".into(), |s| format!("{s:.2}")),
            decision.speech_millis as f64 / 1000.0,
            decision
                .error_code
                .clone()
                .unwrap_or_else(|| decision.reasons.join(","))
        );
        if step.starts_with("verify same")
            && decision.decision != timbre_schemas::DecisionKind::Accept
        {
            bail!("the enrolled speaker was not accepted: {decision:?}");
        }
        if step.starts_with("verify a replay")
            && decision.decision == timbre_schemas::DecisionKind::Accept
        {
            bail!("a replayed recording was accepted: {decision:?}");
        }
        if (step.starts_with("verify other") || step.starts_with("verify a synthetic"))
            && decision.decision == timbre_schemas::DecisionKind::Accept
        {
            bail!("{step} was accepted: {decision:?}");
        }
    }
    Ok(())
}

fn enrollment(request_id: &str, user: &str, audio: Vec<u8>) -> Request {
    Request::Enrollment(EnrollmentRequested::new(
        request_id,
        TENANT,
        user,
        now_ms(),
        audio,
    ))
}

fn verification(request_id: &str, user: &str, audio: Vec<u8>) -> Request {
    Request::Verification(VerificationRequested::new(
        request_id,
        TENANT,
        user,
        now_ms(),
        audio,
    ))
}
