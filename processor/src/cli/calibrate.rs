//! `timbre calibrate`: builds a model's score normalisation — the impostor
//! cohort of each band and the calibration from normalised scores to LLRs —
//! from a corpus with one recording per speaker, as the engine bundles it
//! (`processor/src/scoring/score_norm.json`).
//!
//! Speakers, sorted by label, alternate between the cohort and the
//! calibration set, so no calibration voice is in the cohort. A calibration
//! speaker's recording is cut in two: the first half, whole and cut to
//! shorter lengths, enrolls; the second, cut to several probe lengths,
//! probes. Every enrollment meets every probe (one target trial per speaker
//! and pair of lengths, the rest impostors), in each band: as recorded
//! (wideband) and sent through an 8 kHz channel.
//! Same inputs, same bytes: every step is deterministic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde_json::json;
use timbre::audio::{MODEL_SAMPLE_RATE, through_narrowband};
use timbre::domain::Policy;
use timbre::domain::calibration::{
    Band, BandNorm, CalibrationTrial, CohortSide, LinearCalibration, ScoreNorm, cohort_scores,
    far_curve, quality, tenant_as_norm,
};
use timbre::domain::policy::{cosine, unit};
use timbre::eval::{Trial, metrics, read_manifest};
use timbre::model::SpeakerModel;

use super::ModelArgs;
use super::net_speech::NetSpeech;
use super::speech::{load_model, pool, read_audio};

/// Probe lengths of the calibration trials (seconds of audio).
const PROBE_SECONDS: [f64; 4] = [1.5, 2.0, 3.0, 4.0];

/// Enrollment lengths shorter than the whole first half (seconds of audio):
/// a tenant may enroll from a few seconds, and a short enrollment scores
/// differently.
const SHORT_ENROLL_SECONDS: [f64; 3] = [1.5, 2.0, 3.0];

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
    /// The whole first half: the speaker's voiceprint in other speakers'
    /// tenant cohorts.
    whole: Vec<f32>,
    /// Per enrollment length (the shorter cuts, then the whole half):
    /// embedding and net speech.
    enrollments: Vec<(Vec<f32>, u64)>,
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
        let range_of = |speech: Vec<u64>| {
            [
                speech.iter().copied().min().unwrap_or(1).max(1),
                speech.iter().copied().max().unwrap_or(1).max(1),
            ]
        };
        let all_halves = || embedded.iter().flat_map(|(_, _, halves)| halves.iter());
        let range = range_of(
            all_halves()
                .flat_map(|h| h.probes.iter().map(|p| p.1))
                .collect(),
        );
        let enroll_range = range_of(
            all_halves()
                .flat_map(|h| h.enrollments.iter().map(|e| e.1))
                .collect(),
        );
        let mut bands = Vec::new();
        let mut report = serde_json::Map::new();
        for (band, cohort, halves) in embedded {
            let trials = calibration_trials(&cohort, &halves, self.top_k, [range, enroll_range]);
            let calibration =
                LinearCalibration::fit(&trials).context("the calibration fit did not converge")?;
            let scored: Vec<Trial> = trials
                .iter()
                .map(|t| Trial {
                    score: calibration.llr(t.norm, t.quality, t.enrollment),
                    target: t.target,
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
                       "enrollment_weight": calibration.enrollment,
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
            enroll_speech_millis: enroll_range,
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
        report.insert("enroll_speech_millis".into(), json!(enroll_range));
        println!("{}", serde_json::Value::Object(report));
        Ok(())
    }
}

/// Every enrollment (whole and short) against every probe, normalised as
/// the engine normalises ([`tenant_as_norm`]). The cohort of a trial is the
/// bundled one plus the other calibration speakers' whole enrollments, as
/// the engine adds a tenant's other voiceprints; the probe's own speaker is
/// left out of it, as an impostor from outside the tenant would be.
/// `ranges`: probe and enrollment net speech, for the quality measures.
fn calibration_trials(
    cohort: &[Vec<f32>],
    halves: &[Halves],
    top_k: usize,
    ranges: [[u64; 2]; 2],
) -> Vec<CalibrationTrial> {
    let against = |e: &[f32], others: &[Vec<f32>]| -> Vec<f64> {
        cohort_scores(others.iter().map(Vec::as_slice), e)
    };
    let whole: Vec<Vec<f32>> = halves.iter().map(|h| h.whole.clone()).collect();
    // Per speaker, each of its enrollments with its side of the trials.
    let enrollments: Vec<Vec<EnrolledSide<'_>>> = halves
        .iter()
        .map(|h| {
            h.enrollments
                .iter()
                .map(|(e, s)| EnrolledSide {
                    embedding: e,
                    vs_cohort: against(e, cohort),
                    vs_whole: against(e, &whole),
                    quality: quality(*s, ranges[1]),
                })
                .collect()
        })
        .collect();
    let mut trials = Vec::new();
    for (j, probe) in halves.iter().enumerate() {
        for (embedding, speech) in &probe.probes {
            let vs_cohort = against(embedding, cohort);
            let vs_whole = against(embedding, &whole);
            let probe_quality = quality(*speech, ranges[0]);
            for (i, sides) in enrollments.iter().enumerate() {
                for side in sides {
                    let norm = tenant_as_norm(
                        cosine(side.embedding, embedding),
                        CohortSide {
                            vs_bundled: &side.vs_cohort,
                            vs_tenant: &side.vs_whole,
                        },
                        CohortSide {
                            vs_bundled: &vs_cohort,
                            vs_tenant: &vs_whole,
                        },
                        |m| m == i || m == j,
                        top_k,
                    );
                    trials.push(CalibrationTrial {
                        norm,
                        quality: probe_quality,
                        enrollment: side.quality,
                        target: i == j,
                    });
                }
            }
        }
    }
    trials
}

/// One enrollment's side of its trials.
struct EnrolledSide<'a> {
    embedding: &'a [f32],
    vs_cohort: Vec<f64>,
    /// Cosines against every speaker's whole enrollment.
    vs_whole: Vec<f64>,
    /// Enrollment quality.
    quality: f64,
}

/// The first half of a recording enrolled, whole and cut to shorter
/// lengths, the second half probing at each probe length; cuts with less
/// speech than the engine accepts in a sample are left out.
fn embed_halves(
    model: &SpeakerModel,
    vad: &NetSpeech,
    audio: &[f32],
    band: Band,
) -> Result<Halves> {
    let (first, second) = audio.split_at(audio.len() / 2);
    // A sample the engine would refuse (`not_enough_speech`) never reaches
    // calibration either.
    let min_speech = Policy::default().min_speech_millis;
    let cuts = |half: &[f32], seconds: &[f64]| -> Result<Vec<(Vec<f32>, u64)>> {
        let mut out = Vec::new();
        for &s in seconds {
            let len = ((s * f64::from(MODEL_SAMPLE_RATE)) as usize).min(half.len());
            let cut = &half[..len];
            let speech = vad.millis(cut, band)?;
            if speech >= min_speech {
                out.push((model.embed(cut)?, speech));
            }
        }
        Ok(out)
    };
    let mut enrollments = cuts(first, &SHORT_ENROLL_SECONDS)?;
    // The whole half is in every other speaker's tenant cohort; as an
    // enrollment of its own it needs the speech the engine asks of one.
    let whole = model.embed(first)?;
    let whole_speech = vad.millis(first, band)?;
    if whole_speech >= min_speech {
        enrollments.push((whole.clone(), whole_speech));
    }
    Ok(Halves {
        whole,
        enrollments,
        probes: cuts(second, &PROBE_SECONDS)?,
    })
}
