//! The phrase signal on real recordings: the Whisper front end against an
//! independent reference, the CTranslate2 reader on damaged files, the
//! recogniser on prompted codes, and challenges over HTTP on the embedded
//! default and on Kafka + Cassandra. Needs the real weights
//! (`processor/scripts/fetch-model.sh`); a missing model fails.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Tensor;
use reqwest::StatusCode;
use serde_json::{Value, json};
use timbre::audio::whisper_mel::{WHISPER_MEL_BINS, WhisperMel};
use timbre::audio::{AudioLimits, decode_wav};
use timbre::model::default_model_dir;
use timbre::phrase::ct2::Ct2Model;
use timbre::phrase::{
    DigitRecogniser, EncoderSpan, MODEL_FILE, MODEL_FOLDER, PhraseThresholds, load_recogniser,
    phrase_signal,
};
use timbre_schemas::Code;
use timbre_tests::api::{Api, Deployment, deploy, replica};
use timbre_tests::pipeline::{spoken_digits, wav};
use timbre_tests::{cql_nodes, fixtures, kafka_url, scratch_dir, unique};

/// The FSDD speaker of these tests: take 1 of his digits enrolls, take 0
/// answers.
const SPEAKER: &str = "jackson";

fn recogniser() -> &'static DigitRecogniser {
    static LOADED: OnceLock<DigitRecogniser> = OnceLock::new();
    LOADED.get_or_init(|| {
        load_recogniser(&default_model_dir(), EncoderSpan::OwnLength)
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn samples(wav: &[u8]) -> Vec<f32> {
    decode_wav(wav, &AudioLimits::default()).unwrap().samples
}

/// Codes the recogniser reads from the fixture takes (checked here, so a
/// regression of the recogniser fails this test first).
const CODES: [&str; 3] = ["4719", "305826", "8642"];

fn one_digit_off(code: &str) -> String {
    let mut digits: Vec<u8> = code.bytes().collect();
    let last = digits.len() - 1;
    digits[last] = b'0' + (digits[last] - b'0' + 1) % 10;
    String::from_utf8(digits).unwrap()
}

#[test]
fn whisper_mel_matches_an_independent_librosa_reference() {
    let dir = fixtures().join("reference/whisper");
    let files = std::fs::read_to_string(dir.join("files.txt")).unwrap();
    let mel = WhisperMel::new();
    for (i, file) in files.lines().enumerate() {
        let audio = samples(&wav(file));
        let ours = mel.compute(&audio[..3 * 16_000]);
        let reference = Tensor::read_npy(dir.join(format!("mel_{i}.npy"))).unwrap();
        assert_eq!(reference.dims(), &[WHISPER_MEL_BINS, 300], "{file}");
        let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours.len(), reference.len());
        let max_err = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Features span about [-1, 1.5]; 1e-4 is float32 rounding.
        assert!(max_err < 1e-4, "{file}: max error {max_err}");
    }
}

#[test]
fn the_ct2_reader_refuses_damaged_files_without_panicking() {
    let path = default_model_dir().join(MODEL_FOLDER).join(MODEL_FILE);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for cut in [0, 3, 7, 40, 1_000, 4 << 20, bytes.len() - 1] {
        let err = Ct2Model::parse(bytes[..cut].to_vec())
            .err()
            .unwrap_or_else(|| panic!("a prefix of {cut} bytes parsed"));
        assert_eq!(err.code(), Code::ModelBadWeights, "cut at {cut}: {err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    // A damaged installation is refused by its checksum before parsing.
    let damaged = scratch_dir("whisper-damaged");
    std::fs::create_dir_all(damaged.join(MODEL_FOLDER)).unwrap();
    std::fs::write(
        damaged.join(MODEL_FOLDER).join(MODEL_FILE),
        &bytes[..1 << 20],
    )
    .unwrap();
    let err = load_recogniser(&damaged, EncoderSpan::OwnLength)
        .err()
        .expect("damaged file refused");
    assert_eq!(err.code(), Code::ModelChecksumMismatch, "{err}");
    let err = load_recogniser(&PathBuf::from("/nonexistent"), EncoderSpan::OwnLength)
        .err()
        .expect("missing model refused");
    assert_eq!(err.code(), Code::ModelMissing, "{err}");
    assert!(err.to_string().contains("fetch-model.sh"), "{err}");
}

#[test]
fn prompted_codes_pass_only_when_the_right_code_is_said() {
    let thresholds = PhraseThresholds::default();
    for code in CODES {
        let audio = samples(&spoken_digits(SPEAKER, 0, code));
        let check = |expected: &str| {
            let heard = recogniser().check(&audio, expected).unwrap();
            (heard.clone(), phrase_signal(&heard, thresholds))
        };
        let (heard, right) = check(code);
        assert!(right.pass, "{code} said and refused: {heard:?}");
        let (heard, near) = check(&one_digit_off(code));
        assert!(!near.pass, "{code} said, one digit off accepted: {heard:?}");
        assert_eq!(near.reason, Some(Code::PhraseMismatch));
        let reversed: String = code.chars().rev().collect();
        let (heard, wrong) = check(&reversed);
        assert!(!wrong.pass, "{code} said, {reversed} accepted: {heard:?}");
    }
}

/// Words are no code: a read sentence answers no challenge, whatever digits
/// were asked (the digit ratio alone compares digits with each other only,
/// so a sentence once passed some 6-digit codes).
#[test]
fn a_sentence_never_passes_a_code() {
    let thresholds = PhraseThresholds::default();
    // The clip the API test answers a challenge with.
    let audio = samples(&wav("librispeech-r/test-other/1688/1688-142285-0005.wav"));
    let mut worst = None::<timbre::phrase::Heard>;
    for seed in 0..40u64 {
        // Deterministic codes of 4 and 6 digits spread over all digits.
        let len = if seed % 2 == 0 { 4 } else { 6 };
        let code: String = (0..len)
            .map(|i| char::from(b'0' + ((seed * 7 + i * 3 + seed / 3) % 10) as u8))
            .collect();
        let heard = recogniser().check(&audio, &code).unwrap();
        let signal = phrase_signal(&heard, thresholds);
        assert!(!signal.pass, "a sentence passed {code}: {heard:?}");
        if worst
            .as_ref()
            .is_none_or(|w| heard.digit_mass > w.digit_mass)
        {
            worst = Some(heard);
        }
    }
    eprintln!("highest digit mass of a sentence: {worst:?}");
}

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS", "4000".into()),
        // Refused phrases count as failures; these tests are not about
        // the cooldown.
        ("TIMBRE__POLICY__FREE_FAILURES", "20".into()),
    ]
}

/// The decision of a job call: its answer, or after a `202` the decision
/// polled from `/v1/decisions`.
async fn settled(api: &Api, key: &str, (status, body): (StatusCode, Value)) -> Value {
    if status != StatusCode::ACCEPTED {
        assert_eq!(status, StatusCode::OK, "{body}");
        return body;
    }
    let id = body["request_id"].as_str().unwrap();
    for _ in 0..300 {
        let (status, body) = api.get(key, &format!("/v1/decisions/{id}")).await;
        if status == StatusCode::OK {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no decision for {id}");
}

/// A user enrolled with two samples of the speaker's digits (take 1).
async fn enrolled_user(api: &Api, key: &str) -> String {
    let user = unique("digits");
    let profile = api
        .post(key, "/create-profile", json!({"user_id": user}))
        .await;
    settled(api, key, profile).await;
    let consent = api
        .post(
            key,
            "/v1/consent",
            json!({"user_id": user, "granted": true}),
        )
        .await;
    settled(api, key, consent).await;
    let fields = [("user_id", user.as_str())];
    let mut status = Value::Null;
    for code in ["0123456789", "9876543210"] {
        let answer = api
            .upload(
                key,
                "/enroll",
                &fields,
                spoken_digits(SPEAKER, 1, code),
                "audio/wav",
            )
            .await;
        status = settled(api, key, answer).await["status"].clone();
    }
    assert_eq!(status, "ENROLLED");
    user
}

async fn challenge(api: &Api, key: &str, user: &str) -> (String, String) {
    let (status, body) = api.post(key, "/start-auth", json!({"user_id": user})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["session_id"].as_str().unwrap().to_string(),
        body["challenge"].as_str().unwrap().to_string(),
    )
}

async fn answer(api: &Api, key: &str, user: &str, session: &str, said: &str) -> Value {
    let reply = api
        .upload(
            key,
            "/verify-voice",
            &[("user_id", user), ("session_id", session)],
            spoken_digits(SPEAKER, 0, said),
            "audio/wav",
        )
        .await;
    settled(api, key, reply).await
}

/// Answers challenges with their codes until one is accepted, as a caller
/// asked to retry would. The recogniser misses about one right code in
/// twenty (README, phrase signal), so one attempt alone would make a flaky
/// test; three stay within the two failures that cost no cooldown. Every
/// miss must be a phrase retry: the voice itself always matches.
///
/// Returns the accepting answer and the HTTP status of every answer.
async fn won_challenge(api: &Api, key: &str, user: &str) -> (Value, Vec<StatusCode>) {
    let mut misses = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (session, code) = challenge(api, key, user).await;
        let digits: Vec<char> = code.chars().filter(char::is_ascii_digit).collect();
        assert!(
            digits.len() == 6 && digits.windows(2).all(|w| w[0] != w[1]),
            "six digits, none twice in a row: {code}"
        );
        let reply = api
            .upload(
                key,
                "/verify-voice",
                &[("user_id", user), ("session_id", session.as_str())],
                spoken_digits(SPEAKER, 0, &code),
                "audio/wav",
            )
            .await;
        statuses.push(reply.0);
        let reply = settled(api, key, reply).await;
        if reply["decision"] == "accept" {
            return (reply, statuses);
        }
        assert_eq!(
            (reply["decision"].as_str(), reply["code"].as_str()),
            (Some("retry"), Some("phrase_mismatch")),
            "challenge {code}: {reply}"
        );
        misses.push(code);
    }
    panic!("three right answers refused: {misses:?}");
}

/// `second`: where tokens are checked (another replica on shared backends).
async fn flow(d: &Deployment, second: &Api) {
    let (api, acme) = (&d.api, d.acme.as_str());
    let user = enrolled_user(api, acme).await;
    let fields = |phrase: &'static str| [("user_id", user.clone()), ("phrase", phrase.into())];
    let verify = |phrase: &'static str, said: &'static str| {
        let fields = fields(phrase);
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.upload(
                acme,
                "/v1/voice/verify",
                &fields,
                spoken_digits(SPEAKER, 0, said),
                "audio/wav",
            )
            .await
        }
    };

    // The right code by the enrolled voice: accepted, the phrase checked.
    let (status, right) = verify("4 7 1 9", "4719").await;
    assert_eq!(status, StatusCode::OK, "{right}");
    assert_eq!(right["decision"], "accept", "{right}");
    assert!(
        matches!(right["signals"]["phrase"].as_str(), Some("high" | "medium")),
        "{right}"
    );
    let score = right["signals"]["phrase_score"].as_f64().unwrap();
    let threshold = right["signals"]["phrase_threshold"].as_f64().unwrap();
    assert!(score >= threshold, "{right}");

    // A challenge answered with its code: accepted, with a single-use
    // token. (Before the failures below, which count toward a cooldown.)
    let (won, _) = won_challenge(api, acme, &user).await;
    let token = json!({"token": won["voiceToken"]});
    let (_, foreign) = second.post(&d.globex, "/verify-token", token.clone()).await;
    assert_eq!(foreign["valid"], false, "another tenant's token is invalid");
    let (_, first) = second.post(acme, "/verify-token", token.clone()).await;
    assert_eq!(
        (first["valid"].as_bool(), first["user_id"].as_str()),
        (Some(true), Some(user.as_str())),
        "{first}"
    );
    let (_, again) = api.post(acme, "/verify-token", token).await;
    assert_eq!(
        (again["valid"].as_bool(), again["reason"].as_str()),
        (Some(false), Some("already_used")),
        "spent, on every replica"
    );

    // One digit wrong: a retry for the phrase, not a voice reject.
    let (status, near) = verify("4 7 1 0", "4719").await;
    assert_eq!(status, StatusCode::OK, "{near}");
    assert_eq!(
        (near["decision"].as_str(), near["reason"].as_str()),
        (Some("retry"), Some("phrase_mismatch")),
        "{near}"
    );
    assert_eq!(near["signals"]["phrase"], "low", "{near}");
    assert!(
        near["signals"]["phrase_score"].as_f64().unwrap()
            < near["signals"]["phrase_threshold"].as_f64().unwrap(),
        "{near}"
    );

    // A phrase that is not a code is refused as bad input.
    let (status, sentence) = verify("open sesame", "4719").await;
    assert_eq!(
        (status, sentence["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("phrase_unsupported")),
        "{sentence}"
    );

    // A challenge answered with another code: no token.
    let (session, code) = challenge(api, acme, &user).await;
    let other: String = code
        .chars()
        .filter(char::is_ascii_digit)
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 5) % 10))
        .collect();
    let lost = answer(api, acme, &user, &session, &other).await;
    assert_eq!(
        (lost["decision"].as_str(), lost["code"].as_str()),
        (Some("retry"), Some("phrase_mismatch")),
        "{lost}"
    );
    assert!(lost.get("voiceToken").is_none(), "{lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_on_the_embedded_backend() {
    let store = format!(
        "file://{}",
        scratch_dir("phrase").join("timbre.redb").display()
    );
    let d = deploy("embedded://", &store, settings()).await;
    flow(&d, &d.api).await;
    crate::dialects::digit_dialogue(&d, SPEAKER).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let d = deploy(
        &kafka,
        &format!("cql://{cql}/{}", unique("phrase")),
        settings(),
    )
    .await;
    let (second, _) = replica(&d.config, d.shutdown.clone()).await;
    flow(&d, &second).await;
    crate::dialects::digit_dialogue(&d, SPEAKER).await;
    d.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), d.task)
        .await
        .unwrap()
        .unwrap();
}

/// With a wait shorter than any decision, job calls answer 202 and are
/// polled; a challenge answer still waits for its decision and carries the
/// voice token, because the spent session could never mint one later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_challenge_decision_still_mints_its_token() {
    let store = format!(
        "file://{}",
        scratch_dir("phrase-slow").join("timbre.redb").display()
    );
    let mut slow = settings();
    slow.push(("TIMBRE__API__WAIT_TIMEOUT_MS", "1".into()));
    let d = deploy("embedded://", &store, slow).await;
    let (api, acme) = (&d.api, d.acme.as_str());
    let user = enrolled_user(api, acme).await;
    let (won, statuses) = won_challenge(api, acme, &user).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "every answer waits: {statuses:?}"
    );
    let token = json!({"token": won["voiceToken"]});
    let (_, checked) = api.post(acme, "/verify-token", token).await;
    assert_eq!(checked["valid"], true, "{checked}");
    d.stop().await;
}
