//! Enrolled models and their trials, scored as the engine scores them.

use std::collections::BTreeMap;

use rayon::prelude::*;
use timbre::domain::calibration::{Band, VoiceScore};
use timbre::domain::policy::{cosine, merge_embedding};

use super::corpus::{Embedded, Item};
use super::{EnrollMode, ProductEval};

/// One trial: a probe against one speaker's model.
pub(super) struct Scored {
    pub(super) model: usize,
    pub(super) probe: usize,
    pub(super) target: bool,
    pub(super) score: VoiceScore,
    /// Best raw cosine of the model's voiceprints.
    pub(super) raw: f32,
}

/// Every probe against every model it did not enroll, scored as the engine
/// scores (the best of the model's voiceprints). The tenant's other
/// voiceprints join the cohort; an impostor is taken to be from outside the
/// tenant (the hard case): its own voiceprints are left out too.
pub(super) fn score_trials(
    opts: &ProductEval<'_>,
    models: &[Model<'_>],
    by_speaker: &BTreeMap<&str, Vec<usize>>,
    items: &[Item],
    embedded: &[Option<Embedded>],
    pool: &rayon::ThreadPool,
) -> Vec<Scored> {
    let score =
        |enrolled: &[f32], speech: u64, probe: &Embedded, band: Band, tenant: &[&[f32]]| match opts
            .norm
        {
            Some(n) => n.score(
                band,
                enrolled,
                speech,
                &probe.probe,
                probe.probe_speech,
                tenant,
            ),
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
                                .zip(&model.speech)
                                .map(|(v, s)| score(v, *s, probe, items[p].band, &tenant))
                                .max_by(|a, b| a.llr.total_cmp(&b.llr))
                                .expect("a voiceprint");
                            let raw = model
                                .voiceprints
                                .iter()
                                .map(|v| cosine(v, &probe.probe))
                                .fold(f32::NEG_INFINITY, f32::max);
                            Scored {
                                model: m,
                                probe: p,
                                target: *probe_speaker == model.speaker,
                                score: best,
                                raw,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    })
}

/// One enrolled voiceprint (or set of them, in `best` mode).
pub(super) struct Model<'a> {
    pub(super) speaker: &'a str,
    /// Items it was enrolled from.
    pub(super) samples: Vec<usize>,
    pub(super) voiceprints: Vec<Vec<f32>>,
    /// Net speech behind each voiceprint (the profile's, in the engine).
    pub(super) speech: Vec<u64>,
}

/// Up to ten voiceprints per speaker, each from N consecutive recordings
/// (wrapping), so every recording enrolls once when there are enough.
pub(super) fn enrolled_models<'a>(
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
            let speech = match mode {
                EnrollMode::Best => embedded.iter().map(|e| e.full_speech).collect(),
                EnrollMode::Mean | EnrollMode::Weighted => {
                    vec![embedded.iter().map(|e| e.full_speech).sum()]
                }
            };
            models.push(Model {
                speaker,
                voiceprints: voiceprints(&embedded, mode),
                speech,
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
