//! `timbre bench seed`: a tenant of many enrolled users written straight to
//! the configured store (profile, consent with audio retention, voiceprint,
//! one retained clip each), so re-scoring can be measured at a scale the
//! enrollment path would take hours to build.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav, encode_wav};
use timbre::backends::connect_store;
use timbre::domain::rules::new_profile;
use timbre::domain::{
    BIOMETRIC_PURPOSE, Consent, JobCommit, Mutation, Profile, ProfileStatus, Voiceprint, now_ms,
};
use timbre::eval::read_manifest;

use super::ModelArgs;
use super::engine::{ConfigArgs, runtime};
use super::speech::load_model;

/// `timbre bench seed --tenant T --users N`.
#[derive(clap::Args)]
pub struct BenchSeed {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Tenant to fill (use a throwaway one: its users are not real enrollments).
    #[arg(long)]
    tenant: String,
    /// Users to write (ids `seed-0000000` upwards).
    #[arg(long)]
    users: usize,
    /// Seconds of speech retained per user, cut from the manifest's utterances.
    #[arg(long, default_value_t = 1.0)]
    clip_seconds: f32,
    /// Corpus manifest the clips come from.
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    manifest: PathBuf,
    /// Distinct clips, shared by the users in turn.
    #[arg(long, default_value_t = 32)]
    clips: usize,
    /// Users written at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// One distinct clip: its WAV bytes and its embedding under the model.
struct Clip {
    wav: Vec<u8>,
    embedding: Vec<f32>,
    millis: u64,
}

impl BenchSeed {
    pub fn run(self) -> Result<()> {
        let config = self.config.load()?;
        let model = load_model(&self.model)?;
        let model_id = model.id().to_string();
        let length = (self.clip_seconds * MODEL_SAMPLE_RATE as f32) as usize;
        let mut clips = Vec::new();
        for u in read_manifest(&self.manifest)? {
            if clips.len() == self.clips {
                break;
            }
            let audio = decode_wav(&std::fs::read(&u.path)?, &AudioLimits::default())?;
            if audio.samples.len() < length {
                continue;
            }
            let samples = &audio.samples[..length];
            clips.push(Clip {
                wav: encode_wav(samples, MODEL_SAMPLE_RATE),
                embedding: model.embed(samples)?,
                millis: length as u64 * 1_000 / u64::from(MODEL_SAMPLE_RATE),
            });
        }
        if clips.is_empty() {
            bail!(
                "no utterance of {} lasts {} s",
                self.manifest.display(),
                self.clip_seconds
            );
        }
        let (tenant, users, concurrency) = (self.tenant.clone(), self.users, self.concurrency);
        let summary = runtime()?.block_on(async move {
            let store = connect_store(&config.store).await?.state;
            store.migrate().await?;
            let started = Instant::now();
            let clips = &clips;
            futures::stream::iter(0..users)
                .map(|i| {
                    let store = store.clone();
                    let commit = seed_commit(&tenant, i, &model_id, &clips[i % clips.len()]);
                    async move {
                        store.commit(&commit).await?;
                        if (i + 1) % 10_000 == 0 {
                            tracing::info!(users = i + 1, "seeded");
                        }
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect::<()>()
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::Ok(json!({
                "tenant": tenant, "users": users, "model": model_id,
                "clip_seconds": self.clip_seconds, "seconds": seconds,
                "users_per_s": users as f64 / seconds,
            }))
        })?;
        if self.json {
            println!("{summary}");
        } else {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Ok(())
    }
}

/// What an enrollment that completed and kept its audio would have written.
fn seed_commit(tenant: &str, i: usize, model_id: &str, clip: &Clip) -> JobCommit {
    let user_id = format!("seed-{i:07}");
    let now = now_ms();
    JobCommit {
        tenant: tenant.into(),
        request_id: format!("seed-{i:07}"),
        decision: Vec::new(),
        mutations: vec![
            Mutation::PutProfile(Profile {
                status: ProfileStatus::Enrolled,
                samples: 1,
                net_speech_millis: clip.millis,
                ..new_profile(tenant, &user_id, now)
            }),
            Mutation::PutConsent(Consent {
                tenant: tenant.into(),
                user_id: user_id.clone(),
                purpose: BIOMETRIC_PURPOSE.into(),
                granted: true,
                retain_audio: true,
                updated_at: now,
            }),
            Mutation::PutVoiceprint(Voiceprint {
                tenant: tenant.into(),
                user_id: user_id.clone(),
                model_id: model_id.into(),
                embedding: clip.embedding.clone(),
                weight: 1.0,
                updated_at: now,
            }),
            Mutation::RetainAudio {
                user_id,
                wav: clip.wav.clone(),
                at: now,
                keep_newest: 1,
            },
        ],
    }
}
