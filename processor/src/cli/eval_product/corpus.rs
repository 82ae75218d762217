//! The corpus of the product protocol: utterances (recordings as they are,
//! or joined into spoken codes) and their enrolled and probe embeddings.

use std::collections::BTreeMap;

use anyhow::Result;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav};
use timbre::domain::calibration::Band;
use timbre::eval::read_manifest;
use timbre::model::SpeakerModel;

use super::ProductEval;
use crate::cli::net_speech::NetSpeech;
use crate::cli::speech::join_with_pauses;

/// One utterance: samples at the model rate, its band, its net speech.
pub(super) struct Item {
    pub(super) speaker: String,
    pub(super) samples: Vec<f32>,
    pub(super) band: Band,
}

/// Enrolled and probe embeddings of one utterance.
pub(super) struct Embedded {
    pub(super) full: Vec<f32>,
    pub(super) full_speech: u64,
    pub(super) probe: Vec<f32>,
    pub(super) probe_speech: u64,
}

pub(super) fn embed_item(
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
pub(super) fn load_items(opts: &ProductEval<'_>, seed: u64) -> Result<Vec<Item>> {
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
    let mut rng = StdRng::seed_from_u64(seed);
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
