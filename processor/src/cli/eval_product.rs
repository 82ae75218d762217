//! `timbre eval --protocol product`: accuracy as users meet it. Each
//! speaker enrolls with N recordings through the engine's own voiceprint
//! arithmetic; the speaker's other recordings, and every other speaker's,
//! probe it cut to S seconds; trials are scored as the engine scores them
//! (raw cosine, or AS-norm and calibration with the bundled or a given
//! score normalisation), and the accept threshold is the one a tenant's
//! policy gives.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav};
use timbre::domain::Policy;
use timbre::domain::calibration::{Band, ScoreNorm, VoiceScore};
use timbre::domain::impostor_tail::TenantTails;
use timbre::domain::policy::{cosine, merge_embedding};
use timbre::eval::{Trial, metrics, read_manifest};
use timbre::model::SpeakerModel;

use super::net_speech::NetSpeech;
use super::speech::{join_with_pauses, pool};

/// How enrollment recordings become a voiceprint.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollMode {
    /// The engine's running mean of unit embeddings, one weight per sample.
    Mean,
    /// The same, each sample weighted by its net speech.
    Weighted,
    /// Every sample kept; a probe scores against its best match.
    Best,
}

/// Options of the product protocol.
pub struct ProductEval<'a> {
    pub manifest: &'a Path,
    pub model: &'a SpeakerModel,
    /// Net speech as the engine measures it (the calibration's quality).
    pub vad: &'a NetSpeech,
    /// `None`: raw cosine against the policy's cosine thresholds.
    pub norm: Option<&'a ScoreNorm>,
    pub enroll: usize,
    /// Probe length; `None`: the whole recording.
    pub probe_seconds: Option<f64>,
    /// Recordings joined into one utterance (1: as they are).
    pub join: usize,
    /// Utterances per speaker when joining.
    pub per_speaker: usize,
    pub mode: EnrollMode,
    pub seed: u64,
    pub threads: usize,
    /// Where to write every trial (TSV).
    pub dump: Option<&'a Path>,
    /// Normalise with the bundled cohort alone (no tenant voiceprints).
    pub bundled_cohort_only: bool,
    /// Impostor scores of each probe counted in the tenant's tail (0: none).
    pub tail_samples: usize,
}

#[derive(Debug, Serialize)]
struct ProductMetrics {
    eer: f64,
    min_dcf: f64,
    /// Impostor trials accepted at the policy's accept threshold.
    far_at_threshold: f64,
    /// Target trials not accepted at it.
    frr_at_threshold: f64,
    /// False-accept and false-reject rates at the bundled line alone,
    /// without the tenant's impostor tail (calibrated scoring).
    far_frr_bundled_line: Option<[f64; 2]>,
    /// Impostor trials in the tenant's tail at the end, wide and narrow.
    tail_trials: [u64; 2],
    /// The false-accept rate the threshold was set for (calibrated scoring).
    target_far: Option<f64>,
    /// The accept line of wideband and narrowband probes at the end.
    thresholds: [f32; 2],
    /// `cosine` or `llr`.
    scale: &'static str,
    trials: usize,
    target_trials: usize,
    nontarget_trials: usize,
    enroll: usize,
    probe_seconds: Option<f64>,
    enroll_mode: EnrollMode,
    model: String,
}

/// One utterance: samples at the model rate, its band, its net speech.
struct Item {
    speaker: String,
    samples: Vec<f32>,
    band: Band,
}

/// Enrolled and probe embeddings of one utterance.
struct Embedded {
    full: Vec<f32>,
    full_speech: u64,
    probe: Vec<f32>,
    probe_speech: u64,
}

pub fn run(opts: ProductEval<'_>, json: bool) -> Result<()> {
    let items = load_items(&opts)?;
    let mut by_speaker: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_speaker.entry(&item.speaker).or_default().push(i);
    }
    by_speaker.retain(|_, v| v.len() > opts.enroll);
    if by_speaker.len() < 2 {
        bail!(
            "need two speakers with more than {} utterances each",
            opts.enroll
        );
    }
    let pool = pool(opts.threads)?;
    let embedded: Vec<Option<Embedded>> = pool.install(|| {
        items
            .par_iter()
            .map(|item| {
                if !by_speaker.contains_key(item.speaker.as_str()) {
                    return Ok(None);
                }
                embed_item(opts.model, opts.vad, item, opts.probe_seconds).map(Some)
            })
            .collect::<Result<_>>()
    })?;
    let policy = Policy::default();
    let (target_far, scale) = match opts.norm {
        Some(_) => (Some(policy.accept_far), "llr"),
        None => (None, "cosine"),
    };
    let models = enrolled_models(&by_speaker, &embedded, opts.enroll, opts.mode);
    let scored = score_trials(&opts, &models, &by_speaker, &items, &embedded, &pool);
    // Probes arrive in a seeded random order; each is judged by the lines
    // of the tenant's tail as the probes before it left it, then its
    // scores against other speakers' voiceprints join the tail, as the
    // engine does after each verification.
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&p| embedded[p].is_some())
        .collect();
    order.shuffle(&mut StdRng::seed_from_u64(opts.seed ^ 0x7a11));
    let mut by_probe: BTreeMap<usize, Vec<&Scored>> = BTreeMap::new();
    for s in &scored {
        by_probe.entry(s.probe).or_default().push(s);
    }
    let mut tails = TenantTails::default();
    let line = |band: Band, tails: &TenantTails, tightened: bool| match opts.norm {
        Some(n) => {
            let shift = match tightened {
                true => n.tail_shift(band, policy.accept_far, tails.band(band)),
                false => 0.0,
            };
            n.threshold(band, policy.accept_far) + shift
        }
        None => policy.accept_threshold,
    };
    let mut trials = Vec::new();
    let mut accepted = Vec::new();
    let mut accepted_bundled = Vec::new();
    for p in order {
        let Some(probe_trials) = by_probe.get(&p) else {
            continue;
        };
        let band = items[p].band;
        let (accept_line, bundled_line) = (line(band, &tails, true), line(band, &tails, false));
        for s in probe_trials {
            trials.push(Trial {
                score: s.score.llr,
                target: s.target,
            });
            accepted.push(s.score.llr >= accept_line);
            accepted_bundled.push(s.score.llr >= bundled_line);
        }
        // As the engine does, only a probe accepted as its own speaker
        // counts: the speaker of a rejected probe is not known.
        let accepted_as_itself = probe_trials
            .iter()
            .any(|s| s.target && s.score.llr >= accept_line);
        if opts.norm.is_some() && accepted_as_itself {
            let impostors: Vec<f32> = probe_trials
                .iter()
                .filter(|s| !s.target)
                .map(|s| s.score.llr)
                .collect();
            let step = impostors.len().div_ceil(opts.tail_samples.max(1)).max(1);
            if opts.tail_samples > 0 {
                for llr in impostors.iter().step_by(step) {
                    tails.band_mut(band).record(*llr);
                }
            }
        }
    }
    if let Some(path) = opts.dump {
        let mut dump = String::from("enrolled\tprobe\tprobe_speech_millis\tband\traw\tnorm\tllr\n");
        for s in &scored {
            let probe = embedded[s.probe].as_ref().expect("embedded");
            dump.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                models[s.model].speaker,
                items[s.probe].speaker,
                probe.probe_speech,
                items[s.probe].band.as_str(),
                s.score.raw,
                s.score.norm,
                s.score.llr
            ));
        }
        std::fs::write(path, dump)?;
    }
    let m = metrics(&trials);
    let rate = |accepted: &[bool], target: bool, accept: bool| {
        let of: Vec<bool> = trials
            .iter()
            .zip(accepted)
            .filter(|(t, _)| t.target == target)
            .map(|(_, a)| *a)
            .collect();
        let n = of.iter().filter(|a| **a == accept).count();
        n as f64 / of.len().max(1) as f64
    };
    let (far_at_threshold, frr_at_threshold) =
        (rate(&accepted, false, true), rate(&accepted, true, false));
    let bundled_line = opts.norm.is_some().then(|| {
        [
            rate(&accepted_bundled, false, true),
            rate(&accepted_bundled, true, false),
        ]
    });
    let thresholds = [
        line(Band::Wide, &tails, true),
        line(Band::Narrow, &tails, true),
    ];
    let out = ProductMetrics {
        eer: m.eer,
        min_dcf: m.min_dcf,
        far_at_threshold,
        frr_at_threshold,
        far_frr_bundled_line: bundled_line,
        tail_trials: [tails.wide.total(), tails.narrow.total()],
        target_far,
        thresholds,
        scale,
        trials: trials.len(),
        target_trials: m.target_trials,
        nontarget_trials: m.nontarget_trials,
        enroll: opts.enroll,
        probe_seconds: opts.probe_seconds,
        enroll_mode: opts.mode,
        model: opts.model.id().to_string(),
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "EER {:.3}%  minDCF(0.01) {:.4}  at thresholds {:.3} / {:.3} ({}, wide / narrow): FAR {:.3}% FRR {:.3}%  trials {} target / {} non-target",
            out.eer * 100.0,
            out.min_dcf,
            out.thresholds[0],
            out.thresholds[1],
            out.scale,
            out.far_at_threshold * 100.0,
            out.frr_at_threshold * 100.0,
            out.target_trials,
            out.nontarget_trials
        );
    }
    Ok(())
}

/// One trial: a probe against one speaker's model.
struct Scored {
    model: usize,
    probe: usize,
    target: bool,
    score: VoiceScore,
}

/// Every probe against every model it did not enroll, scored as the engine
/// scores (the best of the model's voiceprints). The tenant's other
/// voiceprints join the cohort; an impostor is taken to be from outside the
/// tenant (the hard case): its own voiceprints are left out too.
fn score_trials(
    opts: &ProductEval<'_>,
    models: &[Model<'_>],
    by_speaker: &BTreeMap<&str, Vec<usize>>,
    items: &[Item],
    embedded: &[Option<Embedded>],
    pool: &rayon::ThreadPool,
) -> Vec<Scored> {
    let score = |enrolled: &[f32], probe: &Embedded, band: Band, tenant: &[&[f32]]| match opts.norm
    {
        Some(n) => n.score(band, enrolled, &probe.probe, probe.probe_speech, tenant),
        None => {
            let raw = cosine(enrolled, &probe.probe);
            VoiceScore {
                raw,
                norm: raw,
                llr: raw,
            }
        }
    };
    pool.install(|| {
        models
            .par_iter()
            .enumerate()
            .flat_map_iter(|(m, model)| {
                by_speaker.iter().flat_map(move |(probe_speaker, probes)| {
                    let tenant: Vec<&[f32]> = models
                        .iter()
                        .filter(|_| !opts.bundled_cohort_only)
                        .filter(|o| o.speaker != model.speaker && o.speaker != *probe_speaker)
                        .flat_map(|o| o.voiceprints.iter().map(Vec::as_slice))
                        .collect();
                    probes
                        .iter()
                        .filter(|p| !model.samples.contains(p))
                        .map(|&p| {
                            let probe = embedded[p].as_ref().expect("embedded");
                            let best = model
                                .voiceprints
                                .iter()
                                .map(|v| score(v, probe, items[p].band, &tenant))
                                .max_by(|a, b| a.llr.total_cmp(&b.llr))
                                .expect("a voiceprint");
                            Scored {
                                model: m,
                                probe: p,
                                target: *probe_speaker == model.speaker,
                                score: best,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    })
}

/// One enrolled voiceprint (or set of them, in `best` mode).
struct Model<'a> {
    speaker: &'a str,
    /// Items it was enrolled from.
    samples: Vec<usize>,
    voiceprints: Vec<Vec<f32>>,
}

/// Up to ten voiceprints per speaker, each from N consecutive recordings
/// (wrapping), so every recording enrolls once when there are enough.
fn enrolled_models<'a>(
    by_speaker: &BTreeMap<&'a str, Vec<usize>>,
    embedded: &[Option<Embedded>],
    enroll: usize,
    mode: EnrollMode,
) -> Vec<Model<'a>> {
    let mut models = Vec::new();
    for (speaker, indices) in by_speaker {
        for m in 0..indices.len().min(10) {
            let samples: Vec<usize> = (0..enroll)
                .map(|j| indices[(m * enroll + j) % indices.len()])
                .collect();
            let embedded: Vec<&Embedded> = samples
                .iter()
                .map(|&i| embedded[i].as_ref().expect("embedded"))
                .collect();
            models.push(Model {
                speaker,
                voiceprints: voiceprints(&embedded, mode),
                samples,
            });
        }
    }
    models
}

/// The voiceprints a probe is scored against: one, except in `best` mode.
fn voiceprints(samples: &[&Embedded], mode: EnrollMode) -> Vec<Vec<f32>> {
    match mode {
        EnrollMode::Best => samples.iter().map(|s| s.full.clone()).collect(),
        EnrollMode::Mean | EnrollMode::Weighted => {
            let mut voiceprint: Option<timbre::domain::Voiceprint> = None;
            for s in samples {
                let weight = match mode {
                    EnrollMode::Weighted => s.full_speech.max(1) as f32 / 1000.0,
                    _ => 1.0,
                };
                let (embedding, weight) = merge_embedding(voiceprint.as_ref(), &s.full, weight);
                voiceprint = Some(timbre::domain::Voiceprint {
                    tenant: String::new(),
                    user_id: String::new(),
                    model_id: String::new(),
                    embedding,
                    weight,
                    updated_at: 0,
                });
            }
            vec![voiceprint.expect("at least one sample").embedding]
        }
    }
}

fn embed_item(
    model: &SpeakerModel,
    vad: &NetSpeech,
    item: &Item,
    probe_seconds: Option<f64>,
) -> Result<Embedded> {
    let full = model.embed(&item.samples)?;
    let full_speech = vad.millis(&item.samples, item.band)?;
    let (probe, probe_speech) = match probe_seconds {
        None => (full.clone(), full_speech),
        Some(s) => {
            let len = ((s * f64::from(MODEL_SAMPLE_RATE)) as usize).min(item.samples.len());
            let cut = &item.samples[..len];
            (model.embed(cut)?, vad.millis(cut, item.band)?)
        }
    };
    Ok(Embedded {
        full,
        full_speech,
        probe,
        probe_speech,
    })
}

/// The manifest's recordings, or (with `join` > 1) per speaker up to
/// `per_speaker` utterances of `join` distinct recordings each, joined
/// with short pauses like a spoken code.
fn load_items(opts: &ProductEval<'_>) -> Result<Vec<Item>> {
    let utterances = read_manifest(opts.manifest)?;
    let limits = AudioLimits {
        min_millis: 0,
        ..AudioLimits::default()
    };
    let decoded: Vec<(Vec<f32>, u32)> = utterances
        .par_iter()
        .map(|u| {
            let bytes = std::fs::read(&u.path)?;
            let audio = decode_wav(&bytes, &limits)?;
            Ok((audio.samples, audio.source_rate))
        })
        .collect::<Result<_>>()?;
    if opts.join <= 1 {
        return Ok(utterances
            .into_iter()
            .zip(decoded)
            .map(|(u, (samples, rate))| Item {
                speaker: u.speaker,
                samples,
                band: Band::of(rate, None),
            })
            .collect());
    }
    let mut by_speaker: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, u) in utterances.iter().enumerate() {
        by_speaker.entry(&u.speaker).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut items = Vec::new();
    for (speaker, mut indices) in by_speaker {
        indices.shuffle(&mut rng);
        for parts in indices.chunks_exact(opts.join).take(opts.per_speaker) {
            let rate = parts.iter().map(|&p| decoded[p].1).max().unwrap_or(0);
            items.push(Item {
                speaker: speaker.to_string(),
                samples: join_with_pauses(parts.iter().map(|&p| decoded[p].0.as_slice())),
                band: Band::of(rate, None),
            });
        }
    }
    Ok(items)
}
