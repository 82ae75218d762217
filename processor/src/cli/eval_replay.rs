//! `timbre eval --protocol replay`: how often a replayed recording of a
//! user's earlier submission is recognised, and how often another genuine
//! utterance of the same speaker is mistaken for one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Serialize;
use timbre::audio::AudioLimits;
use timbre::eval::read_manifest;
use timbre::liveness::replays::replays;
use timbre::liveness::{Fingerprint, Fingerprinter, Overlap, ReplayThresholds, best_overlap};

use super::speech::{pool, read_audio_with};

/// Options of the replay protocol.
pub struct ReplayEval<'a> {
    pub manifest: &'a Path,
    /// TSV with `file` and `source` columns: externally made replays.
    pub replays: Option<&'a Path>,
    pub seed: u64,
    pub threads: usize,
    /// Utterances shorter than this are left out: verification needs a
    /// second of speech, and a sub-second clip has too few landmarks.
    pub min_seconds: f64,
}

#[derive(Debug, Serialize)]
struct ReplayMetrics {
    /// Replays flagged, over all replays.
    detection_rate: f64,
    /// Genuine pairs (another utterance of the speaker against a stored
    /// original) flagged, over all such pairs.
    false_flag_rate: f64,
    replays: usize,
    genuine_pairs: usize,
    /// Utterances left out as shorter than `--min-seconds`.
    skipped: usize,
    /// Detection rate per transform (`external` for `--replays`).
    per_transform: BTreeMap<String, f64>,
    min_ratio: f32,
    min_aligned: u32,
    /// Median landmarks per second of audio (storage cost: 8 bytes each).
    landmarks_per_second: f64,
    /// Median time to fingerprint one second of audio.
    ms_per_audio_second: f64,
    /// Mean CPU time of one comparison of a probe with a stored fingerprint.
    us_per_comparison: f64,
    /// Highest aligned share of any genuine pair, and its aligned count.
    genuine_max_ratio: f32,
    genuine_max_aligned: u32,
    /// 1st percentile of the replays' best aligned share.
    replay_ratio_p01: f32,
    /// `[min_ratio, detection_rate, false_flag_rate]` at other ratios.
    sweep: Vec<[f64; 3]>,
}

/// A probe's best overlap with the stored originals of its speaker.
struct Probe {
    transform: String,
    best: Overlap,
}

pub fn run(opts: ReplayEval<'_>, json: bool) -> Result<()> {
    let listed = read_manifest(opts.manifest)?;
    let limits = AudioLimits {
        min_millis: 0,
        ..AudioLimits::default()
    };
    let pool = pool(opts.threads)?;
    let printer = Fingerprinter::new();
    let decoded: Vec<Vec<f32>> = pool.install(|| {
        listed
            .par_iter()
            .map(|u| read_audio_with(&u.path, &limits))
            .collect::<Result<_>>()
    })?;
    let long_enough = |a: &Vec<f32>| a.len() as f64 >= opts.min_seconds * 16_000.0;
    let skipped = decoded.iter().filter(|a| !long_enough(a)).count();
    let (utterances, audio): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .zip(decoded)
        .filter(|(_, a)| long_enough(a))
        .unzip();
    if utterances.is_empty() {
        bail!(
            "manifest {} has no utterance of {} s or more",
            opts.manifest.display(),
            opts.min_seconds
        );
    }
    let timed: Vec<(Fingerprint, f64)> = pool.install(|| {
        audio
            .par_iter()
            .map(|a| {
                let start = Instant::now();
                let fp = printer.fingerprint(a);
                let seconds = a.len() as f64 / 16_000.0;
                (fp, start.elapsed().as_secs_f64() * 1e3 / seconds.max(1e-3))
            })
            .collect()
    });
    let stored: Vec<&Fingerprint> = timed.iter().map(|(fp, _)| fp).collect();
    let speaker_of: Vec<&str> = utterances.iter().map(|u| u.speaker.as_str()).collect();
    let best_against = |speaker: &str, probe: &Fingerprint| {
        let own = (0..stored.len())
            .filter(|&i| speaker_of[i] == speaker)
            .map(|i| stored[i]);
        best_overlap(own, probe).unwrap_or(Overlap {
            aligned: 0,
            probe: probe.len() as u32,
        })
    };

    // Replays made here from every original.
    let mut probes: Vec<Probe> = pool.install(|| {
        audio
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, a)| {
                replays(a, opts.seed ^ i as u64)
                    .into_iter()
                    .map(move |r| (i, r))
            })
            .map(|(i, r)| Probe {
                transform: r.transform.to_string(),
                best: best_against(speaker_of[i], &printer.fingerprint(&r.samples)),
            })
            .collect()
    });
    if let Some(list) = opts.replays {
        for (file, source) in external_replays(list)? {
            let i = utterances
                .iter()
                .position(|u| same_file(&u.path, &source))
                .with_context(|| format!("{} is no utterance of the manifest", source.display()))?;
            let samples = read_audio_with(&file, &limits)?;
            probes.push(Probe {
                transform: "external".into(),
                best: best_against(speaker_of[i], &printer.fingerprint(&samples)),
            });
        }
    }
    // Genuine: each other utterance of a speaker against each stored one.
    let (stored, speaker_of) = (&stored, &speaker_of);
    let started = Instant::now();
    let genuine: Vec<Overlap> = pool.install(|| {
        (0..stored.len())
            .into_par_iter()
            .flat_map_iter(|a| {
                (0..stored.len())
                    .filter(move |&b| b != a && speaker_of[b] == speaker_of[a])
                    .map(move |b| stored[a].overlap(stored[b]))
            })
            .collect()
    });

    // Wall time over the pool's threads: a CPU cost per comparison.
    let us_per_comparison = started.elapsed().as_secs_f64() * 1e6 * opts.threads.max(1) as f64
        / genuine.len().max(1) as f64;
    let thresholds = ReplayThresholds::default();
    let rates = |t: &ReplayThresholds| {
        let flagged = |o: &Overlap| t.is_replay(o);
        (
            share(
                probes.iter().filter(|p| flagged(&p.best)).count(),
                probes.len(),
            ),
            share(genuine.iter().filter(|o| flagged(o)).count(), genuine.len()),
        )
    };
    let (detection_rate, false_flag_rate) = rates(&thresholds);
    let mut per_transform: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in &probes {
        let e = per_transform.entry(p.transform.clone()).or_default();
        e.0 += usize::from(thresholds.is_replay(&p.best));
        e.1 += 1;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let m = ReplayMetrics {
        detection_rate,
        false_flag_rate,
        replays: probes.len(),
        genuine_pairs: genuine.len(),
        skipped,
        per_transform: per_transform
            .into_iter()
            .map(|(k, (hit, n))| (k, share(hit, n)))
            .collect(),
        min_ratio: thresholds.min_ratio,
        min_aligned: thresholds.min_aligned,
        landmarks_per_second: median(
            stored
                .iter()
                .zip(&audio)
                .map(|(fp, a)| fp.len() as f64 / (a.len() as f64 / 16_000.0).max(1e-3))
                .collect(),
        ),
        ms_per_audio_second: median(timed.iter().map(|(_, ms)| *ms).collect()),
        us_per_comparison,
        genuine_max_ratio: genuine.iter().map(Overlap::ratio).fold(0.0, f32::max),
        genuine_max_aligned: genuine.iter().map(|o| o.aligned).max().unwrap_or(0),
        replay_ratio_p01: {
            let mut r: Vec<f32> = probes.iter().map(|p| p.best.ratio()).collect();
            r.sort_by(f32::total_cmp);
            r.get(r.len() / 100).copied().unwrap_or(0.0)
        },
        sweep: [0.02f32, 0.03, 0.05, 0.08, 0.12, 0.2]
            .into_iter()
            .map(|r| {
                let (d, f) = rates(&ReplayThresholds {
                    min_ratio: r,
                    ..thresholds
                });
                [f64::from(r), d, f]
            })
            .collect(),
    };
    if json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        for [r, d, f] in &m.sweep {
            println!(
                "min ratio {r:.2}: detection {:.2}%  false flags {:.3}%",
                d * 100.0,
                f * 100.0
            );
        }
        for (t, d) in &m.per_transform {
            println!("{t}: detection {:.2}%", d * 100.0);
        }
        println!(
            "genuine pairs: max share {:.4}, max aligned {}; replays: share p01 {:.4}",
            m.genuine_max_ratio, m.genuine_max_aligned, m.replay_ratio_p01
        );
        println!(
            "detection {:.2}% of {} replays  false flags {:.3}% of {} genuine pairs ({} short utterances left out)  {:.0} landmarks/s  {:.2} ms per audio second  {:.0} µs per comparison",
            m.detection_rate * 100.0,
            m.replays,
            m.false_flag_rate * 100.0,
            m.genuine_pairs,
            m.skipped,
            m.landmarks_per_second,
            m.ms_per_audio_second,
            m.us_per_comparison
        );
    }
    Ok(())
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `(file, source)` rows of a replay list, resolved against its folder.
fn external_replays(list: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{} has no `{name}` column", list.display()))
    };
    let (file, source) = (col("file")?, col("source")?);
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            match (cells.get(file), cells.get(source)) {
                (Some(f), Some(s)) => Ok((base.join(f), base.join(s))),
                _ => bail!("short row in {}: {l}", list.display()),
            }
        })
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
