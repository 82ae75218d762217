//! 100 malformed jobs (random bytes, bad Avro, bad WAV, wrong rate, too long)
//! each become an error decision and a dead-letter record that keeps no
//! audio unless the tenant asked for it, and the processor keeps deciding
//! valid jobs afterwards. Embedded and Kafka + Cassandra.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use timbre::adapters::file_store::FileStore;
use timbre::adapters::memory_bus::MemoryBus;
use timbre::backends::{connect_bus, connect_store};
use timbre::ports::{Bus, Store};
use timbre_schemas::framing::write_header;
use timbre_schemas::{DeadLetter, DecisionKind, RecordKind, Request, VerificationRequested};
use timbre_tests::pipeline::{DIAGNOSTIC_TENANT, Harness, consent, enrollment};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, unique};

fn tone_wav(rate: u32, seconds: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..rate * seconds {
        w.write_sample(((i as f32 * 0.05).sin() * 8_000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

async fn malformed(bus: Arc<dyn Bus>, store: Arc<dyn Store>) {
    let prefix = format!("{}.", unique("bad"));
    let mut h = Harness::start(bus, store, &prefix).await;
    let tenant = "acme";
    h.publish(&consent(tenant, "mallory", "consent", true))
        .await;
    h.decision("consent").await;
    h.publish(&consent(DIAGNOSTIC_TENANT, "mallory", "consent-diag", true))
        .await;
    h.decision("consent-diag").await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let verification = h.topics.verification.clone();
    let fingerprint = h
        .registry
        .current_fingerprint(RecordKind::VerificationRequested);
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for i in 0..20 {
        let len = rng.random_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if bytes.len() >= 2 && bytes[..2] == [0xC3, 0x01] {
            bytes[0] = 0;
        }
        h.publish_raw(&verification, format!("acme/r{i}").as_bytes(), &bytes)
            .await;
    }
    *expected.entry("bad_framing").or_default() += 20;
    for i in 0..20 {
        let mut bytes = Vec::new();
        write_header(fingerprint, &mut bytes);
        // A string length that runs past the end of the message.
        bytes.extend_from_slice(&[0x7f, b'x', b'y']);
        h.publish_raw(&verification, format!("acme/a{i}").as_bytes(), &bytes)
            .await;
    }
    *expected.entry("bad_avro").or_default() += 20;
    // An undecodable value far over the dead letter's prefix (it could hold
    // a voice): only its first bytes, digest and size are kept.
    let mut big = Vec::new();
    write_header(fingerprint, &mut big);
    big.extend_from_slice(&[0x7f]);
    big.extend((0..200_000u32).map(|i| (i % 251) as u8));
    h.publish_raw(&verification, b"acme/big", &big).await;
    *expected.entry("bad_avro").or_default() += 1;
    // Ids and a key far over the limits (the very fields that fail): the
    // error decision names the message's position instead and carries no
    // such key (on Kafka, a decision of megabytes would be refused by the
    // decisions topic and retried for ever).
    let huge = "x".repeat(1_500_000);
    let oversized = Request::Verification(VerificationRequested::new(
        huge.clone(),
        tenant,
        "mallory",
        timbre::domain::now_ms(),
        tone_wav(8_000, 2),
    ));
    let oversized = h.registry.encode_request(&oversized).unwrap();
    h.publish_raw(&verification, format!("acme/{huge}").as_bytes(), &oversized)
        .await;
    *expected.entry("invalid_field").or_default() += 1;
    let (not_wav, low_rate, too_long) = (
        b"RIFX not a wav".to_vec(),
        tone_wav(4_000, 2),
        tone_wav(8_000, 61),
    );
    for (code, audio) in [
        ("not_wav", &not_wav),
        ("unsupported_rate", &low_rate),
        ("too_long", &too_long),
    ] {
        for i in 0..20 {
            h.publish(&enrollment(
                tenant,
                "mallory",
                &format!("{code}-{i}"),
                audio.clone(),
            ))
            .await;
        }
        *expected.entry(code).or_default() += 20;
    }
    // A tenant that keeps refused audio for diagnosis gets it whole.
    h.publish(&enrollment(
        DIAGNOSTIC_TENANT,
        "mallory",
        "diag-not-wav",
        not_wav.clone(),
    ))
    .await;
    *expected.entry("not_wav").or_default() += 1;
    let total: usize = expected.values().sum();

    let mut errors: HashMap<String, usize> = HashMap::new();
    while errors.values().sum::<usize>() < total {
        let d = h.next_decision().await;
        assert!(d.request_id.len() <= 256, "an id within the limits");
        if d.decision == DecisionKind::Error {
            *errors.entry(d.error_code.clone().unwrap()).or_default() += 1;
        }
    }
    let expected: HashMap<String, usize> = expected
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(errors, expected);

    let mut dead = h
        .bus
        .subscribe(
            &format!("{prefix}dlq"),
            std::slice::from_ref(&h.topics.dead_letter),
        )
        .await
        .unwrap();
    let mut dead_codes: HashMap<String, usize> = HashMap::new();
    let mut kept: HashMap<String, usize> = HashMap::new();
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(120), dead.next())
            .await
            .expect("dead letter")
            .unwrap();
        let record: DeadLetter = h.registry.decode(&m.payload).unwrap();
        assert!(!record.payload.is_empty() || record.error_code == "bad_framing");
        assert!(record.key.as_ref().is_none_or(|k| k.len() <= 513));
        check_kept_payload(&h, &record, &[&big, &oversized], &not_wav);
        *kept.entry(record.payload_kept.clone()).or_default() += 1;
        *dead_codes.entry(record.error_code).or_default() += 1;
    }
    assert_eq!(dead_codes, expected, "one dead letter per malformed job");
    assert_eq!(
        (kept["without_audio"], kept["prefix"]),
        (60, 2),
        "audio of refused jobs is dropped, big undecodable values cut: {kept:?}"
    );

    // Still alive: a valid job after the garbage is decided.
    h.publish(&consent(tenant, "trent", "after", true)).await;
    assert_eq!(h.decision("after").await.decision, DecisionKind::Applied);
    h.stop_processor().await;
}

/// A dead letter keeps the digest and size of the original and, of the
/// original, only what its kind allows.
fn check_kept_payload(h: &Harness, record: &DeadLetter, bigs: &[&[u8]], not_wav: &[u8]) {
    let size = record.payload_size.expect("payload_size") as usize;
    let digest = record.payload_sha256.clone().expect("payload_sha256");
    match record.payload_kept.as_str() {
        "whole" => {
            assert_eq!(size, record.payload.len());
            assert_eq!(digest, hex::encode(Sha256::digest(&record.payload)));
            if record.tenant.as_deref() == Some(DIAGNOSTIC_TENANT) {
                let job = h.registry.decode_request(&record.payload).unwrap();
                let Request::Enrollment(job) = job else {
                    panic!("{record:?}")
                };
                assert_eq!(job.audio, not_wav, "the diagnostic tenant keeps its audio");
            } else {
                assert!(size <= 4096, "{record:?}");
            }
        }
        "without_audio" => {
            let job = h.registry.decode_request(&record.payload).unwrap();
            let Request::Enrollment(job) = job else {
                panic!("{record:?}")
            };
            assert!(job.audio.is_empty(), "no audio in a dead letter");
            assert_eq!(job.request_id, record.request_id);
            assert_eq!(job.tenant, "acme");
            assert!(size > record.payload.len(), "{record:?}");
        }
        "prefix" => {
            let big = bigs
                .iter()
                .find(|b| hex::encode(Sha256::digest(b)) == digest)
                .expect("the digest of a published value");
            assert_eq!(record.payload, big[..4096]);
            assert_eq!(size, big.len());
        }
        other => panic!("payload_kept {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_on_embedded() {
    let store = Arc::new(FileStore::open(&scratch_dir("bad").join("timbre.redb")).unwrap());
    malformed(Arc::new(MemoryBus::new(10_000)), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let store = connect_store(&format!("cql://{cql}/{}", unique("bad")))
        .await
        .unwrap()
        .state;
    malformed(connect_bus(&kafka).unwrap(), store).await;
}
