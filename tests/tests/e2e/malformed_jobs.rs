//! 100 malformed jobs (random bytes, bad Avro, bad WAV, wrong rate, too long)
//! each become an error decision and a dead-letter record, and the processor
//! keeps deciding valid jobs afterwards. Embedded and Kafka + Cassandra.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use timbre::adapters::file_store::FileStore;
use timbre::adapters::memory_bus::MemoryBus;
use timbre::backends::{connect_bus, connect_store};
use timbre::ports::{Bus, Store};
use timbre_schemas::framing::write_header;
use timbre_schemas::{DeadLetter, DecisionKind, RecordKind};
use timbre_tests::pipeline::{Harness, consent, enrollment};
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

    let mut errors: HashMap<String, usize> = HashMap::new();
    while errors.values().sum::<usize>() < 100 {
        let d = h.next_decision().await;
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
    for _ in 0..100 {
        let m = tokio::time::timeout(Duration::from_secs(120), dead.next())
            .await
            .expect("dead letter")
            .unwrap();
        let record: DeadLetter = h.registry.decode(&m.payload).unwrap();
        assert!(!record.payload.is_empty() || record.error_code == "bad_framing");
        *dead_codes.entry(record.error_code).or_default() += 1;
    }
    assert_eq!(dead_codes, expected, "one dead letter per malformed job");

    // Still alive: a valid job after the garbage is decided.
    h.publish(&consent(tenant, "trent", "after", true)).await;
    assert_eq!(h.decision("after").await.decision, DecisionKind::Applied);
    h.stop_processor().await;
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
