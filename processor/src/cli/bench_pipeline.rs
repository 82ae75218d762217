//! `timbre bench pipeline`: verifications through the whole processor (bus,
//! scoring workers, store, decisions) with real speakers, reporting
//! throughput and publish→decision latency.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use timbre::config::Config;
use timbre::domain::{Policy, now_ms};
use timbre::engine::Engine;
use timbre::eval::read_manifest;
use timbre_schemas::{
    ConsentChanged, Decision, EnrollmentRequested, Registry, Request, VerificationRequested,
};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "bench";

/// `timbre bench pipeline`.
#[derive(clap::Args)]
pub struct BenchPipeline {
    /// Bus URL.
    #[arg(long, default_value = "embedded://")]
    bus: String,
    /// Store URL (default: a fresh file store under the temp dir).
    #[arg(long)]
    store: Option<String>,
    /// Manifest of speakers with at least two utterances each.
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    manifest: PathBuf,
    /// Verification jobs to publish.
    #[arg(long, default_value_t = 300)]
    verifications: usize,
    /// Clip length of each verification.
    #[arg(long, default_value_t = 3.0)]
    clip_seconds: f32,
    /// Jobs per second (0: publish all at once, open loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Scoring worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn clip(wav: &[u8], seconds: f32) -> Result<Vec<u8>> {
    let reader = hound::WavReader::new(Cursor::new(wav))?;
    let spec = reader.spec();
    let take = (spec.sample_rate as f32 * seconds) as usize * usize::from(spec.channels);
    let samples: Vec<i16> = reader
        .into_samples::<i16>()
        .take(take)
        .collect::<Result<_, _>>()?;
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec)?;
    for s in samples {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(out.into_inner())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl BenchPipeline {
    pub fn run(self) -> Result<()> {
        let run_id = format!("{:x}", now_ms());
        let mut config = Config {
            bus: self.bus.clone(),
            store: self.store.clone().unwrap_or_else(|| {
                format!(
                    "file://{}",
                    std::env::temp_dir()
                        .join(format!("timbre-bench-{run_id}.redb"))
                        .display()
                )
            }),
            topic_prefix: format!("bench{run_id}."),
            group: format!("bench{run_id}"),
            ..Config::default()
        };
        config.listen.set_port(0);
        if let Some(w) = self.workers {
            config.workers = w;
        }
        config.tenants.insert(
            TENANT.into(),
            Policy {
                // One utterance enrolls (some fixtures hold under 2 s of speech).
                enrollment_target_millis: 1_500,
                // Repeated impostor attempts must not put users in cooldown.
                free_failures: u32::MAX,
                ..Policy::default()
            },
        );
        let workers = config.workers;
        // Speakers with two or more utterances: the first enrolls, the second is the probe.
        let mut by_speaker: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for u in read_manifest(&self.manifest)? {
            by_speaker.entry(u.speaker).or_default().push(u.path);
        }
        let speakers: Vec<(String, Vec<u8>, Vec<u8>)> = by_speaker
            .into_iter()
            .filter(|(_, files)| files.len() >= 2)
            .map(|(s, files)| -> Result<_> {
                let enroll =
                    std::fs::read(&files[0]).with_context(|| files[0].display().to_string())?;
                let probe = clip(&std::fs::read(&files[1])?, self.clip_seconds)?;
                Ok((s, enroll, probe))
            })
            .collect::<Result<_>>()?;
        if speakers.len() < 2 {
            bail!("the manifest needs at least two speakers with two utterances each");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let engine = Engine::connect(config).await?;
            engine.apply_topics(Some(1)).await?;
            engine.store.migrate().await?;
            let (bus, topics) = (engine.bus.clone(), engine.topics.clone());
            let token = CancellationToken::new();
            let runner_token = token.clone();
            let runner = tokio::spawn(async move { engine.run(runner_token).await });
            let registry = Registry::new();
            let mut decisions = bus.subscribe(&format!("bench{run_id}-reader"), std::slice::from_ref(&topics.decisions)).await?;
            let publish = |topic: String, request: Request| {
                let bus = bus.clone();
                let bytes = registry.encode_request(&request).expect("encodable");
                async move { bus.publish(&topic, request.message_key().as_bytes(), &bytes).await }
            };
            // Setup: consent, then enrollment, waiting for each phase.
            let mut pending: HashMap<String, ()> = HashMap::new();
            for (s, _, _) in &speakers {
                let id = format!("consent-{s}");
                let r = Request::Consent(ConsentChanged::new(id.clone(), TENANT, s.clone(), now_ms(), true, timbre::pipeline::BIOMETRIC_PURPOSE, false));
                publish(topics.consent.clone(), r).await?;
                pending.insert(id, ());
            }
            while !pending.is_empty() {
                let d: Decision = registry.decode(&decisions.next().await?.payload)?;
                pending.remove(&d.request_id);
            }
            for (s, enroll, _) in &speakers {
                let id = format!("enroll-{s}");
                let r = Request::Enrollment(EnrollmentRequested::new(id.clone(), TENANT, s.clone(), now_ms(), enroll.clone()));
                publish(topics.enrollment.clone(), r).await?;
                pending.insert(id, ());
            }
            while !pending.is_empty() {
                let d: Decision = registry.decode(&decisions.next().await?.payload)?;
                pending.remove(&d.request_id);
            }
            // Measured phase: alternate genuine and impostor probes.
            let n = speakers.len();
            let mut sent: HashMap<String, (Instant, bool)> = HashMap::new();
            let mut latencies = Vec::with_capacity(self.verifications);
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            let (mut false_accepts, mut false_rejects, mut genuine, mut impostor) = (0usize, 0usize, 0usize, 0usize);
            let start = Instant::now();
            let interval = (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate));
            let mut published = 0;
            let audio_seconds = self.verifications as f64 * f64::from(self.clip_seconds);
            while latencies.len() < self.verifications {
                let due = interval.is_none_or(|i| start.elapsed() >= i * published as u32);
                if published < self.verifications && due {
                    let claimed = published % n;
                    let is_genuine = published % 2 == 0;
                    let speaker = if is_genuine { claimed } else { (claimed + 1 + published / 2 % (n - 1)) % n };
                    let id = format!("verify-{published}");
                    let r = Request::Verification(VerificationRequested::new(
                        id.clone(),
                        TENANT,
                        speakers[claimed].0.clone(),
                        now_ms(),
                        speakers[speaker].2.clone(),
                    ));
                    sent.insert(id, (Instant::now(), is_genuine));
                    publish(topics.verification.clone(), r).await?;
                    published += 1;
                    if interval.is_some() || published < self.verifications {
                        continue;
                    }
                }
                let wait = interval.map_or(Duration::from_secs(120), |i| i.min(Duration::from_millis(50)));
                let Ok(m) = tokio::time::timeout(wait, decisions.next()).await else { continue };
                let d: Decision = registry.decode(&m?.payload)?;
                if let Some((at, is_genuine)) = sent.remove(&d.request_id) {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    let kind = format!("{:?}", d.decision).to_lowercase();
                    let label = d.error_code.as_ref().map_or(kind.clone(), |c| format!("{kind}:{c}"));
                    *outcomes.entry(label).or_default() += 1;
                    if is_genuine {
                        genuine += 1;
                        false_rejects += usize::from(kind != "accept");
                    } else {
                        impostor += 1;
                        false_accepts += usize::from(kind == "accept");
                    }
                }
            }
            let wall = start.elapsed().as_secs_f64();
            token.cancel();
            runner.await??;
            latencies.sort_by(f64::total_cmp);
            let summary = json!({
                "bus": self.bus, "workers": workers, "verifications": self.verifications,
                "clip_seconds": self.clip_seconds, "rate": self.rate,
                "throughput_per_s": self.verifications as f64 / wall,
                "audio_seconds_per_wall_second": audio_seconds / wall,
                "latency_ms": {"p50": percentile(&latencies, 0.5), "p95": percentile(&latencies, 0.95),
                               "p99": percentile(&latencies, 0.99), "max": latencies.last().copied().unwrap_or(0.0)},
                "outcomes": outcomes,
                "far": false_accepts as f64 / impostor.max(1) as f64,
                "frr": false_rejects as f64 / genuine.max(1) as f64,
                "wall_seconds": wall,
            });
            if self.json {
                println!("{summary}");
            } else {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
            Ok(())
        })
    }
}
