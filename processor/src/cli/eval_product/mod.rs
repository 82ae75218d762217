//! `timbre eval --protocol product`: accuracy as users meet it. Each
//! speaker enrolls with N recordings through the engine's own voiceprint
//! arithmetic; the speaker's other recordings, and every other speaker's,
//! probe it cut to S seconds; trials are scored as the engine scores them
//! (raw cosine, or AS-norm and calibration with the bundled or a given
//! score normalisation), and the accept threshold is the one a tenant's
//! policy gives.

mod corpus;
mod trials;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;
use timbre::domain::Policy;
use timbre::domain::calibration::{Band, ScoreNorm};
use timbre::domain::fnv1a;
use timbre::domain::impostor_tail::{TenantTails, spread};
use timbre::eval::{Trial, metrics};
use timbre::model::SpeakerModel;

use self::corpus::{Embedded, embed_item, load_items};
use self::trials::{Scored, enrolled_models, score_trials};
use super::net_speech::NetSpeech;
use super::speech::pool;

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
    /// Compositions pooled (seeds `seed`, `seed + 1`, …): with `join`, each
    /// joins other recordings into codes, so a small corpus's trials stop
    /// hanging on one draw.
    pub seeds: usize,
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
    /// The same trials scored by raw cosine against the policy's cosine
    /// line: the baseline the product path is measured against.
    raw_cosine: RawCosine,
    /// Impostor trials in the tenant's tail at the end of the last
    /// composition (the one `thresholds` come from), wide and narrow.
    tail_trials: [u64; 2],
    /// The false-accept rate the threshold was set for (calibrated scoring).
    target_far: Option<f64>,
    /// The accept line of wideband and narrowband probes at the end of the
    /// last composition.
    thresholds: [f32; 2],
    /// `cosine` or `llr`.
    scale: &'static str,
    trials: usize,
    target_trials: usize,
    nontarget_trials: usize,
    /// Compositions pooled.
    compositions: usize,
    enroll: usize,
    probe_seconds: Option<f64>,
    enroll_mode: EnrollMode,
    model: String,
}

/// Raw cosine's figures on the product protocol's trials.
#[derive(Debug, Serialize)]
struct RawCosine {
    eer: f64,
    far_at_threshold: f64,
    frr_at_threshold: f64,
}

/// The trials of every composition in the order their probes arrived, and
/// what each line made of them.
#[derive(Default)]
struct Replay {
    /// Scores as the engine decides on them (LLR, or cosine without a
    /// calibration).
    trials: Vec<Trial>,
    /// Raw cosine of the same trials (the best of a model's voiceprints).
    raw: Vec<Trial>,
    /// Accepted at the line the tenant's tail left at the probe's arrival.
    accepted: Vec<bool>,
    /// Accepted at the bundled line alone.
    accepted_bundled: Vec<bool>,
    /// The size of the last composition's tail.
    tail_trials: [u64; 2],
    /// The lines the last composition's tail left.
    thresholds: [f32; 2],
    /// Every trial as TSV rows (with `--dump`).
    dump: Option<String>,
}

pub fn run(opts: ProductEval<'_>, json: bool) -> Result<()> {
    let pool = pool(opts.threads)?;
    let policy = Policy::default();
    let mut replay = Replay {
        dump: opts.dump.map(|_| {
            "seed\tenrolled\tprobe\tprobe_speech_millis\tband\traw\tnorm\tllr\n".to_string()
        }),
        ..Replay::default()
    };
    if opts.seeds > 1 && opts.join <= 1 {
        bail!("--seeds pools compositions of joined recordings: it needs --join");
    }
    for i in 0..opts.seeds.max(1) {
        let seed = opts.seed.wrapping_add(i as u64);
        replay_composition(&opts, &policy, seed, &pool, &mut replay)?;
    }
    if let (Some(path), Some(dump)) = (opts.dump, &replay.dump) {
        std::fs::write(path, dump)?;
    }
    let (target_far, scale) = match opts.norm {
        Some(_) => (Some(policy.accept_far), "llr"),
        None => (None, "cosine"),
    };
    let rate = |trials: &[Trial], accepted: &[bool], target: bool, accept: bool| {
        let of: Vec<bool> = trials
            .iter()
            .zip(accepted)
            .filter(|(t, _)| t.target == target)
            .map(|(_, a)| *a)
            .collect();
        let n = of.iter().filter(|a| **a == accept).count();
        n as f64 / of.len().max(1) as f64
    };
    let m = metrics(&replay.trials);
    let raw_accepted: Vec<bool> = replay
        .raw
        .iter()
        .map(|t| t.score >= policy.accept_threshold)
        .collect();
    let raw_cosine = RawCosine {
        eer: metrics(&replay.raw).eer,
        far_at_threshold: rate(&replay.raw, &raw_accepted, false, true),
        frr_at_threshold: rate(&replay.raw, &raw_accepted, true, false),
    };
    let trials = &replay.trials;
    let bundled_line = opts.norm.is_some().then(|| {
        [
            rate(trials, &replay.accepted_bundled, false, true),
            rate(trials, &replay.accepted_bundled, true, false),
        ]
    });
    let out = ProductMetrics {
        eer: m.eer,
        min_dcf: m.min_dcf,
        far_at_threshold: rate(trials, &replay.accepted, false, true),
        frr_at_threshold: rate(trials, &replay.accepted, true, false),
        far_frr_bundled_line: bundled_line,
        raw_cosine,
        tail_trials: replay.tail_trials,
        target_far,
        thresholds: replay.thresholds,
        scale,
        trials: trials.len(),
        target_trials: m.target_trials,
        nontarget_trials: m.nontarget_trials,
        compositions: opts.seeds.max(1),
        enroll: opts.enroll,
        probe_seconds: opts.probe_seconds,
        enroll_mode: opts.mode,
        model: opts.model.id().to_string(),
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "EER {:.3}% (raw cosine {:.3}%)  minDCF(0.01) {:.4}  at thresholds {:.3} / {:.3} ({}, wide / narrow): FAR {:.3}% FRR {:.3}%  trials {} target / {} non-target",
            out.eer * 100.0,
            out.raw_cosine.eer * 100.0,
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

/// One composition of the corpus (`seed` picks the recordings joined into
/// each utterance and the order probes arrive in): enrolls, scores every
/// trial and replays the probes through the tenant's impostor tail, adding
/// the trials to `out`.
fn replay_composition(
    opts: &ProductEval<'_>,
    policy: &Policy,
    seed: u64,
    pool: &rayon::ThreadPool,
    out: &mut Replay,
) -> Result<()> {
    let items = load_items(opts, seed)?;
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
    let models = enrolled_models(&by_speaker, &embedded, opts.enroll, opts.mode);
    let scored = score_trials(opts, &models, &by_speaker, &items, &embedded, pool);
    // Probes arrive in a seeded random order; each is judged by the lines
    // of the tenant's tail as the probes before it left it, then its
    // scores against other speakers' voiceprints join the tail, as the
    // engine does after each verification.
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&p| embedded[p].is_some())
        .collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x7a11));
    let mut by_probe: BTreeMap<usize, Vec<&Scored>> = BTreeMap::new();
    for s in &scored {
        by_probe.entry(s.probe).or_default().push(s);
    }
    let mut tails = TenantTails::default();
    // The engine's own lines (the verification rule's), with the tail or
    // without it.
    let line = |band: Band, tails: Option<&TenantTails>| match opts.norm {
        Some(n) => {
            n.voice_thresholds(policy, band, tails.map(|t| t.band(band)))
                .accept
        }
        None => policy.accept_threshold,
    };
    for p in order {
        let Some(probe_trials) = by_probe.get(&p) else {
            continue;
        };
        let band = items[p].band;
        let (accept_line, bundled_line) = (line(band, Some(&tails)), line(band, None));
        for s in probe_trials {
            out.trials.push(Trial {
                score: s.score.llr,
                target: s.target,
            });
            out.raw.push(Trial {
                score: s.raw,
                target: s.target,
            });
            out.accepted.push(s.score.llr >= accept_line);
            out.accepted_bundled.push(s.score.llr >= bundled_line);
        }
        // As the engine does, only a probe accepted as its own speaker
        // counts: the speaker of a rejected probe is not known.
        let accepted_as_itself = probe_trials
            .iter()
            .any(|s| s.target && s.score.llr >= accept_line);
        if opts.norm.is_some() && accepted_as_itself && opts.tail_samples > 0 {
            let impostors: Vec<f32> = probe_trials
                .iter()
                .filter(|s| !s.target)
                .map(|s| s.score.llr)
                .collect();
            // The engine's pick, from a seed per verification as the
            // engine's is (the request id's hash).
            let request = format!("{seed}/{p}");
            let picked = spread(
                impostors.len(),
                opts.tail_samples,
                fnv1a(request.as_bytes()),
            );
            for i in picked {
                tails.band_mut(band).record(impostors[i]);
            }
        }
    }
    if let Some(dump) = out.dump.as_mut() {
        for s in &scored {
            let probe = embedded[s.probe].as_ref().expect("embedded");
            dump.push_str(&format!(
                "{seed}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                models[s.model].speaker,
                items[s.probe].speaker,
                probe.probe_speech,
                items[s.probe].band.as_str(),
                s.score.raw,
                s.score.norm,
                s.score.llr
            ));
        }
    }
    out.tail_trials = [tails.wide.total(), tails.narrow.total()];
    out.thresholds = [
        line(Band::Wide, Some(&tails)),
        line(Band::Narrow, Some(&tails)),
    ];
    Ok(())
}
