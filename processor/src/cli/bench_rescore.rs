//! `timbre bench rescore`: re-scoring throughput in audio seconds per wall
//! second, through the real pipeline (planner, bus, background workers,
//! store), from one model id to another over the same weights.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use timbre::client::JobClient;
use timbre::config::{Config, ExtraModel};
use timbre::domain::{BIOMETRIC_PURPOSE, Policy, now_ms};
use timbre::engine::Engine;
use timbre::eval::read_manifest;
use timbre::model::default_model_id;
use timbre::rescore::Rescorer;
use timbre_schemas::{ConsentChanged, Decision, EnrollmentRequested, Request};
use tokio_util::sync::CancellationToken;

use super::engine::runtime;

const TENANT: &str = "bench";
const TARGET: &str = "campplus-bench";

/// `timbre bench rescore`.
#[derive(clap::Args)]
pub struct BenchRescore {
    /// Corpus manifest; every utterance is enrolled and retained.
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    manifest: PathBuf,
    /// At most this many speakers.
    #[arg(long, default_value_t = usize::MAX)]
    speakers: usize,
    /// Scoring worker threads (re-scoring may use half of them, at least one).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

impl BenchRescore {
    pub fn run(self) -> Result<()> {
        let run_id = format!("{:x}", now_ms());
        let mut config = Config {
            store: format!(
                "file://{}",
                std::env::temp_dir()
                    .join(format!("timbre-bench-rescore-{run_id}.redb"))
                    .display()
            ),
            extra_models: vec![ExtraModel {
                name: TARGET.into(),
                dir: None,
            }],
            ..Config::default()
        };
        config.listen.set_port(0);
        if let Some(w) = self.workers {
            config.workers = w;
        }
        config.tenants.insert(
            TENANT.into(),
            Policy {
                enrollment_target_millis: 1_500,
                ..Policy::default()
            },
        );
        let workers = config.workers;
        let mut by_speaker: BTreeMap<String, Vec<(PathBuf, f64)>> = BTreeMap::new();
        for u in read_manifest(&self.manifest)? {
            let wav = hound::WavReader::open(&u.path)?;
            let seconds = f64::from(wav.duration()) / f64::from(wav.spec().sample_rate);
            by_speaker
                .entry(u.speaker)
                .or_default()
                .push((u.path, seconds));
        }
        let speakers: Vec<_> = by_speaker.into_iter().take(self.speakers).collect();
        if speakers.is_empty() {
            bail!("no speakers in {}", self.manifest.display());
        }
        runtime()?.block_on(async move {
            let engine = Engine::connect(config).await?;
            engine.apply_topics(Some(1)).await?;
            engine.store.migrate().await?;
            let token = CancellationToken::new();
            let client = JobClient::new(
                engine.bus.clone(),
                engine.topics.clone(),
                Some(engine.store.clone()),
            );
            let tail = client.start(token.clone()).await?;
            let (bus, store, topics) = (
                engine.bus.clone(),
                engine.store.clone(),
                engine.topics.clone(),
            );
            let runner = {
                let token = token.clone();
                tokio::spawn(async move { engine.run(token).await })
            };
            // Consent with retention, then every utterance as an enrollment sample.
            let mut audio_seconds = 0.0;
            let consents: Vec<Request> = speakers
                .iter()
                .map(|(speaker, _)| {
                    Request::Consent(ConsentChanged::new(
                        format!("c-{speaker}"),
                        TENANT,
                        speaker,
                        now_ms(),
                        true,
                        BIOMETRIC_PURPOSE,
                        true,
                    ))
                })
                .collect();
            decided(client.submit_all(&consents, DECISION_WAIT).await?)?;
            let mut enrollments = Vec::new();
            for (speaker, files) in &speakers {
                for (i, (path, seconds)) in files.iter().enumerate() {
                    enrollments.push(Request::Enrollment(EnrollmentRequested::new(
                        format!("e-{speaker}-{i}"),
                        TENANT,
                        speaker,
                        now_ms(),
                        std::fs::read(path)?,
                    )));
                    audio_seconds += seconds;
                }
            }
            decided(client.submit_all(&enrollments, DECISION_WAIT).await?)?;

            let target = format!(
                "{TARGET}@sha256:{}",
                default_model_id().0.rsplit(':').next().unwrap_or_default()
            );
            let rescorer = Rescorer::new(bus, store, topics, default_model_id().0);
            let started = Instant::now();
            let run = rescorer.plan(TENANT, &target).await?;
            rescorer.publish_pending(&run).await?;
            let progress = loop {
                let p = rescorer.progress(TENANT, &target).await?;
                if p.pending == 0 {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let wall = started.elapsed().as_secs_f64();
            token.cancel();
            runner.await??;
            tail.await?;
            let background = (workers / 2).max(1);
            let speed = audio_seconds / wall;
            let summary = json!({
                "users": progress.enrolled, "rebuilt": progress.done, "failed": progress.failed,
                "audio_seconds": audio_seconds, "wall_seconds": wall,
                "x_real_time": speed, "workers": workers, "background_workers": background,
                "x_real_time_per_background_worker": speed / background as f64,
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

/// How long a batch of setup jobs may take.
const DECISION_WAIT: Duration = Duration::from_secs(300);

/// Fails unless every job was decided.
fn decided(decisions: Vec<Option<Decision>>) -> Result<()> {
    let undecided = decisions.iter().filter(|d| d.is_none()).count();
    if undecided > 0 {
        bail!("{undecided} setup jobs were not decided in {DECISION_WAIT:?}");
    }
    Ok(())
}
