//! `timbre calibrate`: builds a model's score normalisation — the impostor
//! cohort of each band and the calibration from normalised scores to LLRs —
//! from a corpus with one recording per speaker, as the engine bundles it
//! (`processor/src/scoring/score_norm.json`).
//!
//! Speakers, sorted by label, alternate between the cohort and the
//! calibration set, so no calibration voice is in the cohort. A calibration
//! speaker's recording is cut in two: the first half enrolls, the second,
//! cut to several probe lengths, probes. Every enrollment meets every probe
//! (one target trial per speaker and length, the rest impostors), in each
//! band: as recorded (wideband) and sent through an 8 kHz channel.
//! Same inputs, same bytes: every step is deterministic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde_json::json;
use timbre::audio::{MODEL_SAMPLE_RATE, through_narrowband};
use timbre::domain::Policy;
use timbre::domain::calibration::{
    Band, BandNorm, LinearCalibration, SAME_VOICE_COSINE, ScoreNorm, as_norm, far_curve, quality,
    top_k_stats,
};
use timbre::domain::policy::{cosine, unit};
use timbre::eval::{Trial, metrics, read_manifest};
use timbre::model::SpeakerModel;

use super::ModelArgs;
use super::net_speech::NetSpeech;
use super::speech::{load_model, pool, read_audio};

/// Probe lengths of the calibration trials (seconds of audio).
const PROBE_SECONDS: [f64; 4] = [1.5, 2.0, 3.0, 4.0];

/// False-accept rates listed in the bundled curve.
const FAR_RATES: [f64; 9] = [0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005];

/// `timbre calibrate --manifest M --out F`.
#[derive(clap::Args)]
pub struct CalibrateCmd {
    /// TSV manifest (`speaker`, `file`): the first recording of each
    /// speaker is used; recordings of at least 6 s.
    #[arg(long)]
    manifest: PathBuf,
    /// Where to write the score normalisation (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Cohort scores averaged per side of a trial.
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Embedding threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(flatten)]
    model: ModelArgs,
}

/// One calibration speaker's embeddings in one band.
struct Halves {
    enrolled: Vec<f32>,
    /// Per probe length: embedding and net speech.
    probes: Vec<(Vec<f32>, u64)>,
}

impl CalibrateCmd {
    pub fn run(self) -> Result<()> {
        let model = load_model(&self.model)?;
        let vad = NetSpeech::load(&self.model)?;
        let mut first: BTreeMap<String, PathBuf> = BTreeMap::new();
        for u in read_manifest(&self.manifest)? {
            first.entry(u.speaker).or_insert(u.path);
        }
        let audio: Vec<Vec<f32>> = first
            .values()
            .map(|p| read_audio(p))
            .collect::<Result<_>>()?;
        let min_len = (6.0 * f64::from(MODEL_SAMPLE_RATE)) as usize;
        let (mut cohort_audio, mut calib_audio) = (Vec::new(), Vec::new());
        for (i, a) in audio.into_iter().enumerate() {
            if a.len() < min_len {
                continue;
            }
            if i % 2 == 0 {
                cohort_audio.push(a);
            } else {
                calib_audio.push(a);
            }
        }
        if cohort_audio.len() < self.top_k || calib_audio.len() < 2 {
            bail!(
                "{} cohort and {} calibration speakers: need at least top-k ({}) and 2",
                cohort_audio.len(),
                calib_audio.len(),
                self.top_k
            );
        }
        let pool = pool(self.threads)?;
        let mut embedded = Vec::new();
        for band in [Band::Wide, Band::Narrow] {
            let channel = |a: &[f32]| match band {
                Band::Wide => a.to_vec(),
                Band::Narrow => through_narrowband(a),
            };
            let cohort: Vec<Vec<f32>> = pool.install(|| {
                cohort_audio
                    .par_iter()
                    .map(|a| Ok(unit(&model.embed(&channel(a))?)))
                    .collect::<Result<_>>()
            })?;
            let halves: Vec<Halves> = pool.install(|| {
                calib_audio
                    .par_iter()
                    .map(|a| embed_halves(&model, &vad, &channel(a), band))
                    .collect::<Result<_>>()
            })?;
            embedded.push((band, cohort, halves));
        }
        let speech = embedded
            .iter()
            .flat_map(|(_, _, halves)| halves.iter().flat_map(|h| h.probes.iter().map(|p| p.1)));
        let range = [
            speech.clone().min().unwrap_or(1).max(1),
            speech.max().unwrap_or(1).max(1),
        ];
        let mut bands = Vec::new();
        let mut report = serde_json::Map::new();
        for (band, cohort, halves) in embedded {
            let trials = calibration_trials(&cohort, &halves, self.top_k, range);
            let calibration =
                LinearCalibration::fit(&trials).context("the calibration fit did not converge")?;
            let scored: Vec<Trial> = trials
                .iter()
                .map(|&(norm, q, target)| Trial {
                    score: calibration.llr(norm, q),
                    target,
                })
                .collect();
            let impostors: Vec<f32> = scored
                .iter()
                .filter(|t| !t.target)
                .map(|t| t.score)
                .collect();
            let far_curve = far_curve(&impostors, &FAR_RATES);
            let m = metrics(&scored);
            report.insert(
                band.as_str().into(),
                json!({"eer": m.eer, "target_trials": m.target_trials,
                       "nontarget_trials": m.nontarget_trials, "weights": calibration.weights,
                       "far_curve": far_curve}),
            );
            bands.push(BandNorm {
                cohort,
                calibration,
                far_curve,
            });
        }
        let narrow = bands.pop().expect("two bands");
        let wide = bands.pop().expect("two bands");
        let norm = ScoreNorm {
            model_id: model.id().to_string(),
            top_k: self.top_k,
            wide,
            narrow,
            probe_speech_millis: range,
        };
        norm.validate()
            .map_err(|e| anyhow::anyhow!("the fitted normalisation is unusable: {e}"))?;
        let mut text = serde_json::to_string_pretty(&norm)?;
        text.push('\n');
        std::fs::write(&self.out, text)
            .with_context(|| format!("writing {}", self.out.display()))?;
        report.insert("cohort_speakers".into(), cohort_audio.len().into());
        report.insert("calibration_speakers".into(), calib_audio.len().into());
        report.insert("probe_speech_millis".into(), json!(range));
        println!("{}", serde_json::Value::Object(report));
        Ok(())
    }
}

/// Every enrollment against every probe: `(normalised score, quality, is
/// target)`. The cohort of a trial is the bundled one plus the other
/// calibration speakers' enrollments, as the engine adds a tenant's other
/// voiceprints (without those it takes for the claimed voice); the probe's
/// own speaker is left out of it, as an impostor from outside the tenant
/// would be.
fn calibration_trials(
    cohort: &[Vec<f32>],
    halves: &[Halves],
    top_k: usize,
    range: [u64; 2],
) -> Vec<(f32, f64, bool)> {
    let against = |e: &[f32], others: &[Vec<f32>]| -> Vec<f64> {
        others.iter().map(|c| f64::from(cosine(c, e))).collect()
    };
    let enrolled: Vec<Vec<f32>> = halves.iter().map(|h| h.enrolled.clone()).collect();
    let enrolled_vs_cohort: Vec<Vec<f64>> = enrolled.iter().map(|e| against(e, cohort)).collect();
    let enrolled_vs_enrolled: Vec<Vec<f64>> =
        enrolled.iter().map(|e| against(e, &enrolled)).collect();
    let stats = |vs_cohort: &[f64], vs_enrolled: &[f64], i: usize, j: usize| {
        let tenant = vs_enrolled
            .iter()
            .enumerate()
            .filter(|&(m, _)| {
                m != i && m != j && enrolled_vs_enrolled[i][m] < f64::from(SAME_VOICE_COSINE)
            })
            .map(|(_, s)| *s);
        top_k_stats(vs_cohort.iter().copied().chain(tenant).collect(), top_k)
    };
    let mut trials = Vec::new();
    for (j, probe) in halves.iter().enumerate() {
        for (embedding, speech) in &probe.probes {
            let vs_cohort = against(embedding, cohort);
            let vs_enrolled = against(embedding, &enrolled);
            for i in 0..halves.len() {
                let norm = as_norm(
                    vs_enrolled[i] as f32,
                    stats(&enrolled_vs_cohort[i], &enrolled_vs_enrolled[i], i, j),
                    stats(&vs_cohort, &vs_enrolled, i, j),
                );
                trials.push((norm, quality(*speech, range), i == j));
            }
        }
    }
    trials
}

/// The first half of a recording enrolled, the second half probing at each
/// probe length (with enough speech).
fn embed_halves(
    model: &SpeakerModel,
    vad: &NetSpeech,
    audio: &[f32],
    band: Band,
) -> Result<Halves> {
    let (first, second) = audio.split_at(audio.len() / 2);
    let enrolled = model.embed(first)?;
    // A probe the engine would refuse (`not_enough_speech`) never reaches
    // calibration either.
    let min_speech = Policy::default().min_speech_millis;
    let mut probes = Vec::new();
    for &s in &PROBE_SECONDS {
        let len = ((s * f64::from(MODEL_SAMPLE_RATE)) as usize).min(second.len());
        let cut = &second[..len];
        let speech = vad.millis(cut, band)?;
        if speech >= min_speech {
            probes.push((model.embed(cut)?, speech));
        }
    }
    Ok(Halves { enrolled, probes })
}
