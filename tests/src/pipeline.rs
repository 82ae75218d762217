//! A running processor on any bus/store pair, and a client that publishes
//! jobs and collects decisions, for the end-to-end tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use timbre::audio::AudioLimits;
use timbre::client::JobClient;
use timbre::domain::{BIOMETRIC_PURPOSE, Policies, Policy, now_ms};
use timbre::liveness::{ReplayDetector, SyntheticSpeechCheck};
use timbre::metrics::Metrics;
use timbre::model::silero::SileroVad;
use timbre::model::{SpeakerModel, default_model_dir};
use timbre::pipeline::{CohortSettings, Processor, ProcessorConfig, TailSettings};
use timbre::ports::{Analyser, Bus, BusError, Store, Subscription};
use timbre::scoring::{ScoringPool, bundled_score_norm};
use timbre::topics::{TopicNames, catalogue};
use timbre_schemas::{
    ConsentChanged, Decision, EnrollmentRequested, Registry, Request, VerificationRequested,
    message_key,
};
use tokio_util::sync::CancellationToken;

/// The real model, loaded once per test binary (a missing model fails).
pub fn model() -> Arc<SpeakerModel> {
    static MODEL: OnceLock<Arc<SpeakerModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(SpeakerModel::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}")))
        })
        .clone()
}

/// The real speech detector (Silero VAD), loaded once per test binary.
pub fn speech_detector() -> Arc<SileroVad> {
    static VAD: OnceLock<Arc<SileroVad>> = OnceLock::new();
    VAD.get_or_init(|| {
        Arc::new(SileroVad::load_from_dir(&default_model_dir()).unwrap_or_else(|e| panic!("{e}")))
    })
    .clone()
}

/// The real synthetic-speech check, loaded once per test binary.
pub fn synthetic_check() -> Arc<SyntheticSpeechCheck> {
    static CHECK: OnceLock<Arc<SyntheticSpeechCheck>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            Arc::new(
                SyntheticSpeechCheck::load(&default_model_dir(), Default::default())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .clone()
}

/// A processor running on its own task, and a decisions reader.
pub struct Harness {
    /// Topic names of this test.
    pub topics: TopicNames,
    /// The bus under test.
    pub bus: Arc<dyn Bus>,
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Encoder/decoder of events.
    pub registry: Registry,
    /// Publishes jobs to their topics (the engine's one job client).
    client: JobClient,
    /// A consumer-group reader of every decision, duplicates included (the
    /// tests count redeliveries, which the job client's waits do not show).
    decisions: Box<dyn Subscription>,
    /// Every decision read so far, raw, by request id.
    pub seen: HashMap<String, Vec<Vec<u8>>>,
    /// The processor's retry budget (takes effect at its next start).
    pub retry_budget: Duration,
    /// Analysers besides the replay detector (the synthetic-speech check
    /// costs most of a verification, so only its own tests run it).
    extra_analysers: Vec<Arc<dyn Analyser>>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Metrics of the running processor (new at each start).
    pub metrics: Metrics,
}

/// The policy of the tests: 6 s of speech enrolls (one 8 s fixture). The
/// tests submit the same fixtures again for one user, which replay
/// detection rejects: it is on for [`REPLAY_TENANT`] only.
pub fn test_policy() -> Policy {
    Policy {
        // The 8 s enrollment fixture holds 4.7 s of net speech.
        enrollment_target_millis: 4_000,
        replay_memory_days: 0,
        ..Policy::default()
    }
}

/// A tenant with replay detection on (the product's default).
pub const REPLAY_TENANT: &str = "replays";

/// A tenant that enrolls from 1.5 s of speech (one short clip).
pub const SHORT_ENROLLMENT_TENANT: &str = "short-enrollment";

/// A tenant whose dead letters keep the audio of refused jobs.
pub const DIAGNOSTIC_TENANT: &str = "diagnostics";

impl Harness {
    /// Creates the topics, starts a processor and subscribes to decisions.
    pub async fn start(bus: Arc<dyn Bus>, store: Arc<dyn Store>, prefix: &str) -> Self {
        Self::start_with(bus, store, prefix, Vec::new()).await
    }

    /// The same, the processor running `extra_analysers` too.
    pub async fn start_with(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        prefix: &str,
        extra_analysers: Vec<Arc<dyn Analyser>>,
    ) -> Self {
        let topics = TopicNames::with_prefix(prefix);
        let drift = bus
            .ensure_topics(&catalogue(prefix, Some(1)))
            .await
            .expect("topics");
        assert!(drift.is_empty(), "{drift:?}");
        store.migrate().await.expect("migrations");
        let decisions = bus
            .subscribe(
                &format!("{prefix}client"),
                std::slice::from_ref(&topics.decisions),
            )
            .await
            .expect("subscribe to decisions");
        let mut h = Self {
            client: JobClient::new(bus.clone(), topics.clone(), Some(store.clone())),
            topics,
            bus,
            store,
            registry: Registry::new(),
            decisions,
            seen: HashMap::new(),
            retry_budget: ProcessorConfig::default().retry_budget,
            extra_analysers,
            shutdown: CancellationToken::new(),
            task: None,
            metrics: Metrics::new(),
        };
        h.start_processor(prefix);
        h
    }

    /// Starts (or restarts) the processor task.
    pub fn start_processor(&mut self, prefix: &str) {
        let analysers = std::iter::once(Arc::new(ReplayDetector::default()) as Arc<dyn Analyser>)
            .chain(self.extra_analysers.iter().cloned());
        let pool = Arc::new(
            ScoringPool::new(model(), 2, 8, AudioLimits::default())
                .with_analysers(analysers)
                .with_speech_detector(speech_detector()),
        );
        let config = ProcessorConfig {
            group: format!("{prefix}processor"),
            topics: self.topics.clone(),
            policies: Policies {
                default: test_policy(),
                tenants: HashMap::from([
                    (
                        DIAGNOSTIC_TENANT.to_string(),
                        Policy {
                            dead_letter_audio: true,
                            ..test_policy()
                        },
                    ),
                    (
                        SHORT_ENROLLMENT_TENANT.to_string(),
                        Policy {
                            enrollment_target_millis: 1_500,
                            ..test_policy()
                        },
                    ),
                    (
                        REPLAY_TENANT.to_string(),
                        Policy {
                            replay_memory_days: Policy::default().replay_memory_days,
                            ..test_policy()
                        },
                    ),
                ]),
            },
            retry_budget: self.retry_budget,
            // Scored as the engine scores the default model: calibrated.
            score_norm: bundled_score_norm(&pool.model_id()).map(Arc::new),
            // Tenant cohorts read afresh for every verification: the tests
            // enroll users and verify right after.
            cohorts: CohortSettings {
                refresh: Duration::ZERO,
                ..CohortSettings::default()
            },
            // Impostor tails saved after every verification, to be read
            // back.
            tails: TailSettings {
                save_every: Duration::ZERO,
                ..TailSettings::default()
            },
            ..ProcessorConfig::default()
        };
        self.metrics = Metrics::new();
        let processor = Processor::new(
            self.bus.clone(),
            self.store.clone(),
            pool,
            config,
            self.metrics.clone(),
        );
        self.shutdown = CancellationToken::new();
        let token = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            processor.run(token).await.expect("processor run");
        }));
    }

    /// Stops the processor gracefully (drains and commits).
    pub async fn stop_processor(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("processor task");
        }
    }

    /// Aborts the processor task without draining, as a crash would.
    pub async fn kill_processor(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Publishes a request to its topic, keyed by tenant/user.
    pub async fn publish(&self, request: &Request) {
        self.client.publish(request).await.expect("publish");
    }

    /// Publishes raw bytes to a request topic.
    pub async fn publish_raw(&self, topic: &str, key: &[u8], payload: &[u8]) {
        self.bus
            .publish(topic, key, payload)
            .await
            .expect("publish");
    }

    /// Reads decisions until one for `request_id` arrives.
    pub async fn decision(&mut self, request_id: &str) -> Decision {
        self.read_until(request_id, 1).await;
        self.registry
            .decode(&self.seen[request_id][0])
            .expect("decision decodes")
    }

    /// Reads decisions until `count` have arrived for `request_id`; returns them raw.
    pub async fn decisions(&mut self, request_id: &str, count: usize) -> Vec<Vec<u8>> {
        self.read_until(request_id, count).await;
        self.seen[request_id].clone()
    }

    /// Reads the next decision, whatever its request.
    pub async fn next_decision(&mut self) -> Decision {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        self.read_one(deadline, "any request").await
    }

    async fn read_until(&mut self, request_id: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while self.seen.get(request_id).map_or(0, Vec::len) < count {
            self.read_one(deadline, request_id).await;
        }
    }

    /// Reads one decision and records its raw bytes under its request id.
    async fn read_one(&mut self, deadline: tokio::time::Instant, waiting_for: &str) -> Decision {
        let m = loop {
            let next = tokio::time::timeout_at(deadline, self.decisions.next())
                .await
                .unwrap_or_else(|_| panic!("no decision for {waiting_for} within 180 s"));
            match next {
                Ok(m) => break m,
                // A broker outage (the fault tests make them) surfaces here;
                // the client reconnects by itself, as the processor's does.
                Err(BusError::Unavailable(e)) => {
                    eprintln!("decisions subscription: {e}; polling again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("decisions subscription: {e}"),
            }
        };
        let d: Decision = self.registry.decode(&m.payload).expect("decision decodes");
        self.seen
            .entry(d.request_id.clone())
            .or_default()
            .push(m.payload);
        d
    }
}

/// A fixture WAV file's bytes.
pub fn wav(relative: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(relative),
    )
    .expect("fixture")
}

/// `wav` as an 8 kHz channel delivers it: an 8 kHz, 16-bit WAV.
pub fn at_8k(wav: &[u8]) -> Vec<u8> {
    let audio = timbre::audio::decode_wav(wav, &AudioLimits::default()).expect("a fixture decodes");
    let samples = timbre::audio::resample_to(&audio.samples, 16_000, 8_000);
    timbre::audio::encode_wav(&samples, 8_000)
}

/// A 16 kHz, 16-bit mono WAV of `samples` in [-1, 1].
pub fn wav_16k(samples: &[f32]) -> Vec<u8> {
    timbre::audio::encode_wav(samples, 16_000)
}

/// `wav` played back through one of the replay transforms
/// ([`timbre::liveness::replays`], by name), as a 16 kHz WAV.
pub fn replayed(wav: &[u8], transform: &str) -> Vec<u8> {
    timbre::liveness::replays::replayed_wav(wav, transform).expect("a fixture decodes")
}

/// A consent event.
pub fn consent(tenant: &str, user: &str, request_id: &str, granted: bool) -> Request {
    let purpose = BIOMETRIC_PURPOSE;
    Request::Consent(ConsentChanged::new(
        request_id,
        tenant,
        user,
        now_ms(),
        granted,
        purpose,
        true,
    ))
}

/// An enrollment job.
pub fn enrollment(tenant: &str, user: &str, request_id: &str, audio: Vec<u8>) -> Request {
    Request::Enrollment(EnrollmentRequested::new(
        request_id,
        tenant,
        user,
        now_ms(),
        audio,
    ))
}

/// A verification job.
pub fn verification(tenant: &str, user: &str, request_id: &str, audio: Vec<u8>) -> Request {
    Request::Verification(VerificationRequested::new(
        request_id,
        tenant,
        user,
        now_ms(),
        audio,
    ))
}

/// A profile command.
pub fn profile_command(
    tenant: &str,
    user: &str,
    request_id: &str,
    command: timbre_schemas::ProfileCommandKind,
) -> Request {
    Request::Profile(timbre_schemas::ProfileCommand {
        request_id: request_id.into(),
        tenant: tenant.into(),
        user_id: user.into(),
        occurred_at: now_ms(),
        schema_version: 1,
        trace: None,
        command,
        reason: Some("test".into()),
    })
}

/// The partition key of a user.
pub fn key(tenant: &str, user: &str) -> String {
    message_key(tenant, user)
}

/// A WAV (8 kHz, 16-bit) of `speaker` saying `code` (its ASCII digits), made
/// of the FSDD fixture recordings of `take` joined with 150 ms pauses.
pub fn spoken_digits(speaker: &str, take: u32, code: &str) -> Vec<u8> {
    let mut samples = Vec::new();
    for (i, digit) in code.chars().filter(char::is_ascii_digit).enumerate() {
        if i > 0 {
            samples.extend(std::iter::repeat_n(0i16, 8_000 * 150 / 1000));
        }
        let bytes = wav(&format!("fsdd/recordings/{digit}_{speaker}_{take}.wav"));
        let mut reader = hound::WavReader::new(bytes.as_slice()).expect("fixture wav");
        assert_eq!(reader.spec().sample_rate, 8_000, "FSDD is 8 kHz");
        for sample in reader.samples::<i16>() {
            samples.push(sample.expect("sample"));
        }
    }
    timbre::audio::encode_wav_pcm16(samples, 8_000)
}
