//! Speaker-model commands: model info, embed, compare, eval, bench.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav};
use timbre::domain::calibration::{Band, ScoreNorm};
use timbre::domain::policy::cosine;
use timbre::eval::{Trial, code_sets, metrics, pair_trials, read_manifest};
use timbre::liveness::{Fingerprint, Fingerprinter, best_overlap};
use timbre::model::aasist::{Aasist, prepare_input};
use timbre::model::silero::SileroVad;
use timbre::model::{SpeakerModel, WEIGHTS_FILE, default_model_dir};
use timbre::phrase::EncoderSpan;

use super::ModelArgs;

/// Cosine threshold used by `compare` when none is given: the EER threshold
/// measured on librispeech-r (see README, "Accuracy").
const DEFAULT_COMPARE_THRESHOLD: f32 = 0.40;

pub(super) fn load_model(args: &ModelArgs) -> Result<SpeakerModel> {
    let dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
    let mut model = SpeakerModel::load(&dir)?;
    model.set_matmul(args.matmul)?;
    Ok(model)
}

pub(super) fn read_audio(path: &Path) -> Result<Vec<f32>> {
    read_audio_with(path, &AudioLimits::default())
}

pub(super) fn read_audio_with(path: &Path, limits: &AudioLimits) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let audio =
        decode_wav(&bytes, limits).with_context(|| format!("decoding {}", path.display()))?;
    Ok(audio.samples)
}

pub(super) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?)
}

/// One spoken code from single-digit recordings, with 150 ms of silence
/// between digits, as a caller pausing would leave.
pub(super) fn join_with_pauses<'a>(parts: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
    let gap = vec![0f32; MODEL_SAMPLE_RATE as usize * 150 / 1000];
    let mut audio = Vec::new();
    for (i, part) in parts.enumerate() {
        if i > 0 {
            audio.extend_from_slice(&gap);
        }
        audio.extend_from_slice(part);
    }
    audio
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("static template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// `timbre model`: where the weights are and which id they carry.
#[derive(clap::Args)]
pub struct ModelCmd {
    #[command(flatten)]
    model: ModelArgs,
}

impl ModelCmd {
    pub fn run(self) -> Result<()> {
        let dir = self
            .model
            .model_dir
            .clone()
            .unwrap_or_else(default_model_dir);
        let model = load_model(&self.model)?;
        println!(
            "{}",
            json!({"model": model.id().to_string(), "weights": dir.join(WEIGHTS_FILE)})
        );
        Ok(())
    }
}

/// `timbre embed FILE`.
#[derive(clap::Args)]
pub struct EmbedCmd {
    /// WAV file.
    file: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl EmbedCmd {
    pub fn run(self) -> Result<()> {
        let model = load_model(&self.model)?;
        let bytes = std::fs::read(&self.file)?;
        let audio = decode_wav(&bytes, &AudioLimits::default())?;
        let embedding = model.embed(&audio.samples)?;
        if self.json {
            println!(
                "{}",
                json!({
                    "model": model.id().to_string(),
                    "dim": embedding.len(),
                    "speech_millis": audio.speech_millis,
                    "duration_millis": audio.duration_millis,
                    "embedding": embedding,
                })
            );
        } else {
            let text: Vec<String> = embedding.iter().map(|v| format!("{v:.6}")).collect();
            println!("{}", text.join(" "));
        }
        Ok(())
    }
}

/// `timbre compare A B`.
#[derive(clap::Args)]
pub struct CompareCmd {
    /// First WAV file.
    a: PathBuf,
    /// Second WAV file.
    b: PathBuf,
    /// Cosine threshold for "same speaker".
    #[arg(long, default_value_t = DEFAULT_COMPARE_THRESHOLD)]
    threshold: f32,
    #[command(flatten)]
    model: ModelArgs,
}

impl CompareCmd {
    pub fn run(self) -> Result<()> {
        let model = load_model(&self.model)?;
        let a = model.embed(&read_audio(&self.a)?)?;
        let b = model.embed(&read_audio(&self.b)?)?;
        let score = cosine(&a, &b);
        let decision = if score >= self.threshold {
            "same_speaker"
        } else {
            "different_speaker"
        };
        println!(
            "{}",
            json!({
                "score": score,
                "threshold": self.threshold,
                "decision": decision,
                "model": model.id().to_string(),
            })
        );
        Ok(())
    }
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Protocol {
    /// Every same- and different-speaker pair of utterances.
    Pairs,
    /// Synthetic 4-digit codes made of single-digit recordings.
    Codes,
    /// The phrase check on prompted codes of single-digit recordings
    /// (needs a `text` column).
    Phrase,
    /// Replayed copies of each utterance against its speaker's stored
    /// recordings, and genuine utterances against them.
    Replay,
    /// The synthetic-speech check: `--manifest` is real speech, `--spoof`
    /// synthetic speech (speaker `engine:voice`).
    Spoof,
    /// The product path: voiceprints from `--enroll` recordings, probes cut
    /// to `--probe-seconds`, scores normalised and calibrated as the engine
    /// does, the policy's accept threshold.
    Product,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Norm {
    /// Raw cosine scores.
    None,
    /// AS-norm against the model's cohort, then calibrated to an LLR.
    AsNorm,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Span {
    /// The encoder runs on the audio's own length.
    Own,
    /// The audio is zero-padded to 30 s, as Whisper was trained.
    Padded,
}

/// `timbre eval --manifest M.tsv`.
#[derive(clap::Args)]
pub struct EvalCmd {
    /// TSV manifest with `speaker` and `file` columns.
    #[arg(long)]
    manifest: PathBuf,
    #[arg(long, value_enum, default_value = "pairs")]
    protocol: Protocol,
    /// Cap on trials of each kind for `pairs` (sampled with the seed).
    #[arg(long, default_value_t = 1_000_000)]
    max_trials: usize,
    /// Codes per speaker for enrollment and for test (`codes`).
    #[arg(long, default_value_t = 50)]
    codes_per_speaker: usize,
    /// Digits per code (`codes`, `phrase`).
    #[arg(long, default_value_t = 4)]
    digits: usize,
    /// TSV (`file`, `source`) of externally made replays (`replay`).
    #[arg(long)]
    replays: Option<PathBuf>,
    /// Synthetic speech manifest (`spoof`): `speaker` is `engine:voice`.
    #[arg(long)]
    spoof: Option<PathBuf>,
    /// Write every score and feature vector (`spoof`) or trial (`product`:
    /// led by its composition's seed) to this TSV.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Fit the synthetic-speech back-end on all the data and write it here
    /// (`spoof`; the engine bundles processor/src/liveness/synthetic_backend.json).
    #[arg(long)]
    fit_backend: Option<PathBuf>,
    /// Shortest utterance used (`replay`).
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
    /// Encoder input length of the phrase recogniser (`phrase`).
    #[arg(long, value_enum, default_value = "own")]
    span: Span,
    /// Recordings per voiceprint (`product`).
    #[arg(long, default_value_t = 1)]
    enroll: usize,
    /// Probe length in seconds; the whole recording when absent (`product`).
    #[arg(long)]
    probe_seconds: Option<f64>,
    /// Recordings of a speaker joined into one utterance, e.g. 4 single
    /// digits into a code (`product`; 1: as they are).
    #[arg(long, default_value_t = 1)]
    join: usize,
    /// How enrollment recordings make a voiceprint (`product`).
    #[arg(long, value_enum, default_value = "mean")]
    enroll_mode: super::eval_product::EnrollMode,
    /// Score normalisation (`pairs`: none by default; `product`: as-norm).
    #[arg(long, value_enum)]
    norm: Option<Norm>,
    /// AS-norm with the bundled cohort alone, without the other speakers'
    /// voiceprints standing in for the tenant's (`product`).
    #[arg(long)]
    bundled_cohort_only: bool,
    /// Other speakers' voiceprints each probe is scored against for the
    /// tenant's impostor tail, which tightens the bundled lines (`product`;
    /// 0: the bundled lines alone; default: all of them).
    #[arg(long)]
    tail_samples: Option<usize>,
    /// Score normalisation file made by `timbre calibrate` (default: the
    /// one bundled for the model).
    #[arg(long)]
    score_norm: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Compositions pooled, seeds `seed` onwards (`product` with `--join`:
    /// each joins other recordings into codes).
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Embedding threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl EvalCmd {
    pub fn run(self) -> Result<()> {
        if let Protocol::Phrase = self.protocol {
            let dir = self
                .model
                .model_dir
                .clone()
                .unwrap_or_else(default_model_dir);
            let opts = super::eval_phrase::PhraseEval {
                manifest: &self.manifest,
                model_dir: &dir,
                digits: self.digits,
                per_speaker: self.codes_per_speaker,
                seed: self.seed,
                threads: self.threads,
                span: match self.span {
                    Span::Own => EncoderSpan::OwnLength,
                    Span::Padded => EncoderSpan::Padded,
                },
            };
            return super::eval_phrase::run(opts, self.json);
        }
        if let Protocol::Replay = self.protocol {
            let opts = super::eval_replay::ReplayEval {
                manifest: &self.manifest,
                replays: self.replays.as_deref(),
                seed: self.seed,
                threads: self.threads,
                min_seconds: self.min_seconds,
            };
            return super::eval_replay::run(opts, self.json);
        }
        if let Protocol::Spoof = self.protocol {
            let dir = self
                .model
                .model_dir
                .clone()
                .unwrap_or_else(default_model_dir);
            let opts = super::eval_spoof::SpoofEval {
                bona_fide: &self.manifest,
                spoof: self
                    .spoof
                    .as_deref()
                    .context("--protocol spoof needs --spoof")?,
                model_dir: &dir,
                threads: self.threads,
                dump: self.dump.as_deref(),
                fit_backend: self.fit_backend.as_deref(),
            };
            return super::eval_spoof::run(opts, self.json);
        }
        let model = load_model(&self.model)?;
        let default_norm = match self.protocol {
            Protocol::Product => Norm::AsNorm,
            _ => Norm::None,
        };
        let norm = match self.norm.unwrap_or(default_norm) {
            Norm::None => None,
            Norm::AsNorm => Some(score_norm(self.score_norm.as_deref(), &model)?),
        };
        if let Protocol::Product = self.protocol {
            let opts = super::eval_product::ProductEval {
                manifest: &self.manifest,
                model: &model,
                vad: &super::net_speech::NetSpeech::load(&self.model)?,
                norm: norm.as_ref(),
                enroll: self.enroll.max(1),
                probe_seconds: self.probe_seconds,
                join: self.join,
                per_speaker: self.codes_per_speaker,
                mode: self.enroll_mode,
                seed: self.seed,
                threads: self.threads,
                dump: self.dump.as_deref(),
                bundled_cohort_only: self.bundled_cohort_only,
                tail_samples: self.tail_samples.unwrap_or(usize::MAX),
                seeds: self.seeds,
            };
            return super::eval_product::run(opts, self.json);
        }
        let utterances = read_manifest(&self.manifest)?;
        if utterances.is_empty() {
            bail!("manifest {} has no utterances", self.manifest.display());
        }
        let pool = pool(self.threads)?;
        let trials = match self.protocol {
            Protocol::Pairs => {
                // Lengths are the calibration's quality: measured as the
                // engine measures them, and only when scores are calibrated.
                let vad = match norm {
                    Some(_) => Some(super::net_speech::NetSpeech::load(&self.model)?),
                    None => None,
                };
                let band = timbre::domain::calibration::Band::Wide;
                let bar = progress(utterances.len(), "embedding");
                let embedded: Vec<(Vec<f32>, u64)> = pool.install(|| {
                    utterances
                        .par_iter()
                        .map(|u| {
                            let audio = read_audio(&u.path)?;
                            let e = model.embed(&audio)?;
                            bar.inc(1);
                            let speech = match &vad {
                                Some(v) => v.millis(&audio, band)?,
                                None => 0,
                            };
                            Ok((e, speech))
                        })
                        .collect::<Result<_>>()
                })?;
                bar.finish_and_clear();
                let (embeddings, lengths): (Vec<_>, Vec<_>) = embedded.into_iter().unzip();
                let speakers: Vec<String> = utterances.iter().map(|u| u.speaker.clone()).collect();
                pair_trials(&speakers, self.max_trials, self.seed)
                    .into_iter()
                    .map(|(a, b, target)| Trial {
                        score: match &norm {
                            // Both sides are recordings: each one's own
                            // length is its quality.
                            Some(n) => {
                                n.score(
                                    band,
                                    &embeddings[a],
                                    lengths[a],
                                    &embeddings[b],
                                    lengths[b],
                                    &[],
                                )
                                .llr
                            }
                            None => cosine(&embeddings[a], &embeddings[b]),
                        },
                        target,
                    })
                    .collect::<Vec<_>>()
            }
            Protocol::Phrase | Protocol::Replay | Protocol::Spoof | Protocol::Product => {
                unreachable!("handled above")
            }
            Protocol::Codes => {
                let (enroll, test) =
                    code_sets(&utterances, self.digits, self.codes_per_speaker, self.seed);
                // A single digit may be shorter than the minimum for a request;
                // only the joined code has to be long enough.
                let part_limits = AudioLimits {
                    min_millis: 0,
                    ..AudioLimits::default()
                };
                let decoded: Vec<Vec<f32>> = pool.install(|| {
                    utterances
                        .par_iter()
                        .map(|u| read_audio_with(&u.path, &part_limits))
                        .collect::<Result<_>>()
                })?;
                let bar = progress(enroll.len() + test.len(), "embedding codes");
                let embed_codes = |codes: &[timbre::eval::Code]| -> Result<Vec<Vec<f32>>> {
                    codes
                        .par_iter()
                        .map(|code| {
                            let audio = join_with_pauses(
                                code.parts.iter().map(|&part| decoded[part].as_slice()),
                            );
                            let e = model.embed(&audio);
                            bar.inc(1);
                            Ok(e?)
                        })
                        .collect()
                };
                let (enroll_emb, test_emb) = pool.install(|| -> Result<_> {
                    Ok((embed_codes(&enroll)?, embed_codes(&test)?))
                })?;
                bar.finish_and_clear();
                let mut trials = Vec::with_capacity(enroll.len() * test.len());
                for (e, ee) in enroll.iter().zip(&enroll_emb) {
                    for (t, te) in test.iter().zip(&test_emb) {
                        trials.push(Trial {
                            score: cosine(ee, te),
                            target: e.speaker == t.speaker,
                        });
                    }
                }
                trials
            }
        };
        let m = metrics(&trials);
        if self.json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            println!(
                "EER {:.3}%  minDCF(0.01) {:.4}  threshold {:.4}  trials {} target / {} non-target  model {}",
                m.eer * 100.0,
                m.min_dcf,
                m.threshold,
                m.target_trials,
                m.nontarget_trials,
                model.id()
            );
        }
        Ok(())
    }
}

/// The score normalisation in `path`, or the one bundled for `model`.
fn score_norm(path: Option<&Path>, model: &SpeakerModel) -> Result<ScoreNorm> {
    let norm: ScoreNorm = match path {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => timbre::scoring::bundled_score_norm(&model.id().to_string())
            .context("no score normalisation is bundled for this model; pass --score-norm")?,
    };
    norm.validate()
        .map_err(|e| anyhow::anyhow!("unusable score normalisation: {e}"))?;
    if norm.model_id != model.id().to_string() {
        bail!(
            "the score normalisation is for {}, not {}",
            norm.model_id,
            model.id()
        );
    }
    Ok(norm)
}

/// `timbre bench …`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Embedding real-time factor (features + network, decoding excluded).
    Embed(BenchEmbed),
    /// Bulk re-scoring through the pipeline: audio seconds per wall second.
    Rescore(super::bench_rescore::BenchRescore),
    /// A tenant of many enrolled users with retained clips, written straight
    /// to the configured store (for re-scoring at scale).
    Seed(super::bench_seed::BenchSeed),
    /// Net speech by the speech detector against the energy estimate, and
    /// its cost.
    Vad(super::bench_vad::BenchVad),
}

impl BenchCmd {
    pub fn run(self) -> Result<()> {
        match self {
            BenchCmd::Embed(cmd) => cmd.run(),
            BenchCmd::Rescore(cmd) => cmd.run(),
            BenchCmd::Seed(cmd) => cmd.run(),
            BenchCmd::Vad(cmd) => cmd.run(),
        }
    }
}

/// `timbre bench embed`.
#[derive(clap::Args)]
pub struct BenchEmbed {
    /// Worker threads embedding utterances side by side.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Corpus manifest (defaults to the bundled fixtures).
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    manifest: PathBuf,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl BenchEmbed {
    pub fn run(self) -> Result<()> {
        let model = load_model(&self.model)?;
        let utterances = read_manifest(&self.manifest)?;
        let audio: Vec<Vec<f32>> = utterances
            .iter()
            .map(|u| read_audio(&u.path))
            .collect::<Result<_>>()?;
        let pool = pool(self.threads)?;
        // Warm-up: page in weights and allocator arenas.
        pool.install(|| model.embed(&audio[0]))?;
        let per_pass: usize = audio.iter().map(Vec::len).sum();
        let audio_seconds = (per_pass * self.repeat) as f64 / f64::from(MODEL_SAMPLE_RATE);
        let start = Instant::now();
        for _ in 0..self.repeat {
            pool.install(|| audio.par_iter().try_for_each(|a| model.embed(a).map(drop)))?;
        }
        let wall = start.elapsed().as_secs_f64();
        let rtf = wall / audio_seconds;
        let replay_ms = replay_check_ms_per_3s(&audio);
        let dir = self
            .model
            .model_dir
            .clone()
            .unwrap_or_else(default_model_dir);
        let synthetic_ms = synthetic_check_ms(&Aasist::load_from_dir(&dir)?, &audio)?;
        let vad_ms = vad_ms_per_3s(&SileroVad::load_from_dir(&dir)?, &audio)?;
        let (calibration_us, impostor_tail_us) =
            match timbre::scoring::bundled_score_norm(&model.id().to_string()) {
                Some(n) => {
                    let (c, t) = scoring_costs_us(&n, &model, &audio)?;
                    (Some(c), Some(t))
                }
                None => (None, None),
            };
        let rss = peak_rss_mib();
        if self.json {
            println!(
                "{}",
                json!({"rtf": rtf, "audio_seconds": audio_seconds, "wall_seconds": wall,
                       "threads": self.threads, "peak_rss_mib": rss, "model": model.id().to_string(),
                       "matmul": format!("{:?}", model.matmul()).to_lowercase(),
                       "replay_check_ms_per_3s": replay_ms, "synthetic_check_ms": synthetic_ms,
                       "vad_ms_per_3s": vad_ms,
                       "calibration_us": calibration_us, "impostor_tail_us": impostor_tail_us})
            );
        } else {
            println!(
                "rtf {rtf:.4} ({:.1}x real time)  audio {audio_seconds:.1} s  wall {wall:.2} s  threads {}  peak rss {} MiB  replay check {replay_ms:.2} ms per 3 s  synthetic-speech check {synthetic_ms:.1} ms  vad {vad_ms:.2} ms per 3 s  calibration {} µs  impostor tail {} µs",
                1.0 / rtf,
                self.threads,
                rss.map_or("?".into(), |r| r.to_string()),
                calibration_us.map_or("-".into(), |c| format!("{c:.0}")),
                impostor_tail_us.map_or("-".into(), |c| format!("{c:.0}"))
            );
        }
        Ok(())
    }
}

/// One core's cost of the replay check per 3 s of audio: fingerprinting
/// each utterance and comparing it with 20 stored fingerprints (the other
/// utterances, as a user's memory), as a verification does.
fn replay_check_ms_per_3s(audio: &[Vec<f32>]) -> f64 {
    let printer = Fingerprinter::new();
    let stored: Vec<Fingerprint> = audio.iter().map(|a| printer.fingerprint(a)).collect();
    let start = Instant::now();
    for (i, a) in audio.iter().enumerate() {
        let probe = printer.fingerprint(a);
        let memory = (1..=20).map(|k| &stored[(i + k) % stored.len()]);
        std::hint::black_box(best_overlap(memory, &probe));
    }
    let seconds: usize = audio.iter().map(Vec::len).sum();
    let seconds = seconds as f64 / f64::from(MODEL_SAMPLE_RATE);
    start.elapsed().as_secs_f64() * 1e3 / (seconds / 3.0).max(1e-9)
}

/// One core's cost of the speech detector per 3 s of audio, over the
/// whole corpus.
fn vad_ms_per_3s(vad: &SileroVad, audio: &[Vec<f32>]) -> Result<f64> {
    let start = Instant::now();
    for a in audio {
        std::hint::black_box(vad.speech_millis(a, MODEL_SAMPLE_RATE)?);
    }
    let samples: usize = audio.iter().map(Vec::len).sum();
    let seconds = samples as f64 / f64::from(MODEL_SAMPLE_RATE);
    Ok(start.elapsed().as_secs_f64() * 1e3 / (seconds / 3.0).max(1e-9))
}

/// One core's median cost of the synthetic-speech check (AASIST on one
/// 4.04 s input, whatever the audio's length), over up to 9 utterances.
fn synthetic_check_ms(model: &Aasist, audio: &[Vec<f32>]) -> Result<f64> {
    let mut times = Vec::new();
    for a in audio.iter().take(9) {
        let input = prepare_input(a).context("silent utterance")?;
        let start = Instant::now();
        std::hint::black_box(model.forward(&input)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median costs, in µs, of normalising and calibrating one verification's
/// score (the decision rule does it on the async runtime), and of scoring
/// an accepted probe against 20 of the tenant's voiceprints for its
/// impostor tail (on a blocking thread): the bundled cohort plus 200 tenant
/// voiceprints (seeded random directions, so none is left out as the
/// claimed voice), on real embeddings.
fn scoring_costs_us(
    norm: &ScoreNorm,
    model: &SpeakerModel,
    audio: &[Vec<f32>],
) -> Result<(f64, f64)> {
    use rand::{Rng, SeedableRng};
    let embeddings: Vec<Vec<f32>> = audio
        .iter()
        .take(8)
        .map(|a| model.embed(a))
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dim = embeddings.first().map_or(0, Vec::len);
    let tenant: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let tenant: Vec<&[f32]> = tenant.iter().map(Vec::as_slice).collect();
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let n = embeddings.len();
    let (mut scoring, mut tail) = (Vec::new(), Vec::new());
    let picked: Vec<usize> = (0..20).map(|i| i * 10).collect();
    for i in 0..101 {
        let (a, b) = (&embeddings[i % n], &embeddings[(i + 1) % n]);
        let start = Instant::now();
        std::hint::black_box(norm.score(Band::Wide, a, 0, b, 3_000, &tenant));
        scoring.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        std::hint::black_box(norm.impostor_llrs(Band::Wide, a, b, 3_000, &tenant, &picked));
        tail.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok((median(scoring), median(tail)))
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
