//! `timbre eval --protocol spoof`: how well the synthetic-speech check
//! separates real speech from text-to-speech — the raw network, the
//! back-end refitted with each engine held out, and the shipped check at
//! its production thresholds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav, through_narrowband};
use timbre::eval::{Trial, metrics, read_manifest};
use timbre::liveness::{SyntheticBackend, SyntheticSpeechCheck};

use super::speech::pool;

/// Options of the spoof protocol.
pub struct SpoofEval<'a> {
    pub bona_fide: &'a Path,
    pub spoof: &'a Path,
    pub model_dir: &'a Path,
    pub threads: usize,
    /// Where to write every score and feature vector (TSV).
    pub dump: Option<&'a Path>,
    /// Fit the production back-end on all the data and write it here.
    pub fit_backend: Option<&'a Path>,
}

#[derive(Debug, Serialize)]
struct SpoofMetrics {
    /// Worst equal error rate over the engines, each held out of the
    /// back-end's fit (bona fide: speakers not in the fit either).
    eer: f64,
    /// The same with both sides sent through an 8 kHz channel.
    eer_8k: f64,
    /// Production threshold (bona fide at or above passes), wideband.
    threshold: f32,
    /// Production threshold for audio sent at 8 kHz.
    threshold_8k: f32,
    /// Bona fide 16 kHz inputs passing the shipped check.
    bona_fide_pass_rate: f64,
    /// Bona fide 8 kHz inputs (native, and every wideband one sent through
    /// an 8 kHz channel) passing the shipped check.
    bona_fide_pass_rate_8k: f64,
    /// Spoofs passing the shipped check (its back-end saw these engines:
    /// see `held_out` for engines it did not).
    spoof_pass_rate: f64,
    spoof_pass_rate_8k: f64,
    spoof_trials: usize,
    bona_fide_trials: usize,
    bona_fide_trials_8k: usize,
    /// Per engine, held out of the back-end's fit.
    held_out: BTreeMap<String, HeldOut>,
    /// Per engine, the network's raw bona fide logit (no back-end).
    raw: BTreeMap<String, HeldOut>,
}

#[derive(Debug, Serialize)]
struct HeldOut {
    eer: f64,
    eer_8k: f64,
    trials: usize,
}

/// One scored input.
struct Scored {
    /// The network's bona fide logit.
    logit: f32,
    /// The network's 160 features.
    features: Vec<f32>,
    /// `None` for bona fide speech.
    engine: Option<String>,
    speaker: String,
    narrowband: bool,
}

pub fn run(opts: SpoofEval<'_>, json: bool) -> Result<()> {
    let check = SyntheticSpeechCheck::load(opts.model_dir, Default::default())?;
    let pool = pool(opts.threads)?;
    let limits = AudioLimits {
        min_millis: 0,
        ..AudioLimits::default()
    };
    let bona_fide = read_manifest(opts.bona_fide)?;
    let spoof = read_manifest(opts.spoof)?;
    if bona_fide.is_empty() || spoof.is_empty() {
        bail!("both manifests need utterances");
    }
    let listed: Vec<(&timbre::eval::Utterance, bool)> = bona_fide
        .iter()
        .map(|u| (u, false))
        .chain(spoof.iter().map(|u| (u, true)))
        .collect();
    let scored: Vec<Scored> = pool
        .install(|| {
            listed
                .par_iter()
                .map(|(u, is_spoof)| -> Result<Vec<Scored>> {
                    let audio = decode_wav(&std::fs::read(&u.path)?, &limits)?;
                    let engine = is_spoof
                        .then(|| u.speaker.split(':').next().unwrap_or_default().to_owned());
                    let mut out = Vec::new();
                    for (samples, narrowband) in
                        with_narrowband_copy(audio.samples, audio.source_rate)
                    {
                        let Some(output) = check.output(&samples)? else {
                            continue;
                        };
                        out.push(Scored {
                            logit: output.bona_fide(),
                            features: output.hidden,
                            engine: engine.clone(),
                            speaker: u.speaker.clone(),
                            narrowband,
                        });
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
    if let Some(path) = opts.dump {
        dump(path, &scored)?;
    }

    let engines: BTreeSet<String> = scored.iter().filter_map(|s| s.engine.clone()).collect();
    // Bona fide speakers split in two: the back-end of a held-out run is
    // fitted on one half and measured on the other.
    let speakers: Vec<&str> = scored
        .iter()
        .filter(|s| s.engine.is_none())
        .map(|s| s.speaker.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let in_fit_half = |s: &Scored| {
        speakers
            .iter()
            .position(|p| *p == s.speaker)
            .is_some_and(|i| i % 2 == 0)
    };
    let mut held_out = BTreeMap::new();
    let mut raw = BTreeMap::new();
    for engine in &engines {
        let is_engine = |s: &Scored| s.engine.as_ref() == Some(engine);
        let fit_set: Vec<&Scored> = scored
            .iter()
            .filter(|s| {
                if s.engine.is_none() {
                    in_fit_half(s)
                } else {
                    !is_engine(s)
                }
            })
            .collect();
        let backend = fit(&fit_set);
        let test_bona: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.engine.is_none() && !in_fit_half(s))
            .collect();
        let test_spoof: Vec<&Scored> = scored.iter().filter(|s| is_engine(s)).collect();
        let by = |score: &dyn Fn(&Scored) -> f32| HeldOut {
            eer: eer(&test_bona, &test_spoof, false, score),
            eer_8k: eer(&test_bona, &test_spoof, true, score),
            trials: test_spoof.iter().filter(|s| !s.narrowband).count(),
        };
        held_out.insert(
            engine.clone(),
            by(&|s: &Scored| backend.score(&s.features, s.logit)),
        );
        let all_bona: Vec<&Scored> = scored.iter().filter(|s| s.engine.is_none()).collect();
        raw.insert(
            engine.clone(),
            HeldOut {
                eer: eer(&all_bona, &test_spoof, false, &|s: &Scored| s.logit),
                eer_8k: eer(&all_bona, &test_spoof, true, &|s: &Scored| s.logit),
                trials: test_spoof.iter().filter(|s| !s.narrowband).count(),
            },
        );
    }

    let thresholds = check.thresholds();
    let bundled = SyntheticBackend::bundled();
    let passes = |s: &&Scored| {
        let rate = if s.narrowband {
            8_000
        } else {
            MODEL_SAMPLE_RATE
        };
        bundled.score(&s.features, s.logit) >= thresholds.for_rate(rate)
    };
    let select = |spoof: bool, narrowband: bool| -> Vec<&Scored> {
        scored
            .iter()
            .filter(|s| s.engine.is_some() == spoof && s.narrowband == narrowband)
            .collect()
    };
    let pass_rate = |set: &[&Scored]| share(set.iter().filter(|s| passes(s)).count(), set.len());
    let (wide, narrow) = (select(false, false), select(false, true));
    let (spoof_wide, spoof_narrow) = (select(true, false), select(true, true));
    let worst = |f: fn(&HeldOut) -> f64| held_out.values().map(f).fold(0.0, f64::max);
    let m = SpoofMetrics {
        eer: worst(|h| h.eer),
        eer_8k: worst(|h| h.eer_8k),
        threshold: thresholds.threshold,
        threshold_8k: thresholds.narrowband_threshold,
        bona_fide_pass_rate: pass_rate(&wide),
        bona_fide_pass_rate_8k: pass_rate(&narrow),
        spoof_pass_rate: pass_rate(&spoof_wide),
        spoof_pass_rate_8k: pass_rate(&spoof_narrow),
        spoof_trials: spoof_wide.len(),
        bona_fide_trials: wide.len(),
        bona_fide_trials_8k: narrow.len(),
        held_out,
        raw,
    };
    if let Some(path) = opts.fit_backend {
        let all: Vec<&Scored> = scored.iter().collect();
        let backend = fit(&all);
        std::fs::write(path, serde_json::to_string(&backend)? + "\n")?;
        let percentile = |set: &[&Scored], p: f64| {
            let mut v: Vec<f32> = set
                .iter()
                .map(|s| backend.score(&s.features, s.logit))
                .collect();
            v.sort_by(f32::total_cmp);
            v[((v.len() - 1) as f64 * p) as usize]
        };
        eprintln!(
            "back-end written to {}; bona fide score percentiles 1%/2%: wideband {:.3}/{:.3}, 8 kHz {:.3}/{:.3}",
            path.display(),
            percentile(&wide, 0.01),
            percentile(&wide, 0.02),
            percentile(&narrow, 0.01),
            percentile(&narrow, 0.02)
        );
    }
    if json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(())
}

fn fit(set: &[&Scored]) -> SyntheticBackend {
    let features: Vec<&[f32]> = set.iter().map(|s| s.features.as_slice()).collect();
    let logits: Vec<f32> = set.iter().map(|s| s.logit).collect();
    let labels: Vec<bool> = set.iter().map(|s| s.engine.is_none()).collect();
    SyntheticBackend::fit(&features, &logits, &labels)
}

/// EER of bona fide against spoofs of one channel under a score.
fn eer(
    bona_fide: &[&Scored],
    spoofs: &[&Scored],
    narrowband: bool,
    score: &dyn Fn(&Scored) -> f32,
) -> f64 {
    let trials: Vec<Trial> = bona_fide
        .iter()
        .map(|s| (s, true))
        .chain(spoofs.iter().map(|s| (s, false)))
        .filter(|(s, _)| s.narrowband == narrowband)
        .map(|(s, target)| Trial {
            score: score(s),
            target,
        })
        .collect();
    metrics(&trials).eer
}

fn dump(path: &Path, scored: &[Scored]) -> Result<()> {
    let mut tsv = String::from("speaker\tengine\tnarrowband\tlogit\tfeatures\n");
    for s in scored {
        let features: Vec<String> = s.features.iter().map(f32::to_string).collect();
        tsv.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            s.speaker,
            s.engine.as_deref().unwrap_or("-"),
            s.narrowband,
            s.logit,
            features.join(",")
        ));
    }
    Ok(std::fs::write(path, tsv)?)
}

/// The audio as submitted, and (for wideband audio) the same sent through
/// an 8 kHz channel, each with whether it is narrowband.
fn with_narrowband_copy(samples: Vec<f32>, source_rate: u32) -> Vec<(Vec<f32>, bool)> {
    if source_rate < MODEL_SAMPLE_RATE {
        return vec![(samples, true)];
    }
    let narrow = through_narrowband(&samples);
    vec![(samples, false), (narrow, true)]
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
