//! Speaker-verification evaluation: manifests, trial lists and the standard
//! detection metrics (EER, minDCF).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use thiserror::Error;

use crate::phrase::challenge_code;

/// Errors reading a manifest.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// Manifest path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A required column is missing.
    #[error("manifest {0} lacks a `{1}` column")]
    MissingColumn(PathBuf, &'static str),
}

/// One utterance of a manifest.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// Speaker label.
    pub speaker: String,
    /// Absolute (or manifest-relative resolved) path of the WAV file.
    pub path: PathBuf,
    /// What is said, when the manifest has a `text` column.
    pub text: Option<String>,
}

/// Reads a TSV manifest with at least `speaker` and `file` columns; file paths
/// are relative to the manifest's folder.
pub fn read_manifest(path: &Path) -> Result<Vec<Utterance>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.into(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| ManifestError::MissingColumn(path.into(), name))
    };
    let (speaker, file) = (col("speaker")?, col("file")?);
    let said = col("text").ok();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            Some(Utterance {
                speaker: (*cells.get(speaker)?).to_string(),
                path: base.join(cells.get(file)?),
                text: said.and_then(|c| cells.get(c)).map(|t| t.to_string()),
            })
        })
        .collect())
}

/// A scored trial.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Similarity score (higher = more likely the same speaker).
    pub score: f32,
    /// Whether both sides are the same speaker.
    pub target: bool,
}

/// Detection metrics over a trial list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Metrics {
    /// Equal error rate, as a fraction.
    pub eer: f64,
    /// Normalised minimum detection cost at `p_target = 0.01`.
    pub min_dcf: f64,
    /// Score threshold at the EER.
    pub threshold: f64,
    /// Same-speaker trials.
    pub target_trials: usize,
    /// Different-speaker trials.
    pub nontarget_trials: usize,
}

/// Computes EER and minDCF (`p_target = 0.01`, unit costs) by sweeping every
/// threshold between sorted scores.
pub fn metrics(trials: &[Trial]) -> Metrics {
    const P_TARGET: f64 = 0.01;
    let mut sorted: Vec<Trial> = trials.to_vec();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    let targets = sorted.iter().filter(|t| t.target).count();
    let nontargets = sorted.len() - targets;
    let (nt, nn) = (targets.max(1) as f64, nontargets.max(1) as f64);
    // Threshold below sorted[i]: trials [0, i) are rejected.
    let (mut misses, mut false_alarms) = (0usize, nontargets);
    let mut best_gap = f64::INFINITY;
    let (mut eer, mut threshold) = (1.0, 0.0);
    let mut min_dcf = f64::INFINITY;
    for i in 0..=sorted.len() {
        let p_miss = misses as f64 / nt;
        let p_fa = false_alarms as f64 / nn;
        let gap = (p_miss - p_fa).abs();
        if gap < best_gap {
            best_gap = gap;
            eer = (p_miss + p_fa) / 2.0;
            threshold = match (i.checked_sub(1).map(|j| sorted[j].score), sorted.get(i)) {
                (Some(lo), Some(hi)) => f64::from((lo + hi.score) / 2.0),
                (None, Some(hi)) => f64::from(hi.score),
                (Some(lo), None) => f64::from(lo),
                (None, None) => 0.0,
            };
        }
        let dcf = (p_miss * P_TARGET + p_fa * (1.0 - P_TARGET)) / P_TARGET.min(1.0 - P_TARGET);
        min_dcf = min_dcf.min(dcf);
        if let Some(t) = sorted.get(i) {
            if t.target {
                misses += 1;
            } else {
                false_alarms -= 1;
            }
        }
    }
    Metrics {
        eer,
        min_dcf: min_dcf.min(1.0),
        threshold,
        target_trials: targets,
        nontarget_trials: nontargets,
    }
}

/// Index pairs `(a, b)` for the pairs protocol: every same- and
/// different-speaker pair, or a seeded sample of `max` pairs of each kind.
pub fn pair_trials(speakers: &[String], max: usize, seed: u64) -> Vec<(usize, usize, bool)> {
    let mut same = Vec::new();
    let mut diff = Vec::new();
    for a in 0..speakers.len() {
        for b in a + 1..speakers.len() {
            if speakers[a] == speakers[b] {
                same.push((a, b, true));
            } else {
                diff.push((a, b, false));
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for list in [&mut same, &mut diff] {
        if list.len() > max {
            list.shuffle(&mut rng);
            list.truncate(max);
        }
    }
    same.extend(diff);
    same
}

/// A synthetic "spoken code": several single-utterance recordings of one
/// speaker, to be joined with short silences.
#[derive(Debug, Clone)]
pub struct Code {
    /// Speaker label.
    pub speaker: String,
    /// Indices into the manifest of the utterances, in order.
    pub parts: Vec<usize>,
}

/// Builds enrollment and test codes per speaker from disjoint halves of each
/// speaker's recordings, so a test code never reuses an enrollment recording.
pub fn code_sets(
    utterances: &[Utterance],
    digits: usize,
    codes_per_speaker: usize,
    seed: u64,
) -> (Vec<Code>, Vec<Code>) {
    let mut by_speaker: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, u) in utterances.iter().enumerate() {
        by_speaker.entry(&u.speaker).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut enroll, mut test) = (Vec::new(), Vec::new());
    for (speaker, mut indices) in by_speaker {
        if indices.len() < 2 {
            continue;
        }
        indices.shuffle(&mut rng);
        let (a, b) = indices.split_at(indices.len() / 2);
        for (half, out) in [(a, &mut enroll), (b, &mut test)] {
            for _ in 0..codes_per_speaker {
                let parts = (0..digits)
                    .map(|_| *half.choose(&mut rng).expect("non-empty half"))
                    .collect();
                out.push(Code {
                    speaker: speaker.to_string(),
                    parts,
                });
            }
        }
    }
    (enroll, test)
}

/// A prompted-code trial of the phrase protocol: recordings of single
/// digits joined into the code said, and the codes it is checked against.
#[derive(Debug, Clone)]
pub struct PromptedCode {
    /// Indices into the manifest of the digits said, in order.
    pub parts: Vec<usize>,
    /// The code said.
    pub said: String,
    /// A random code of the same length that differs from it.
    pub wrong: String,
    /// The code said with exactly one digit changed.
    pub near_miss: String,
}

/// Builds `per_speaker` prompted codes of `digits` digits per speaker from
/// utterances whose label is one digit (`labels[i]`, `None` to skip). Like
/// the product's challenges ([`crate::phrase::challenge_code`]), no code has
/// a digit twice in a row; a speaker with fewer than two digits is skipped.
pub fn prompted_codes(
    utterances: &[Utterance],
    labels: &[Option<char>],
    digits: usize,
    per_speaker: usize,
    seed: u64,
) -> Vec<PromptedCode> {
    let mut by_speaker: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, u) in utterances.iter().enumerate() {
        if labels[i].is_some() {
            by_speaker.entry(&u.speaker).or_default().push(i);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for indices in by_speaker.values() {
        let first = labels[indices[0]];
        if indices.iter().all(|&i| labels[i] == first) {
            continue;
        }
        for _ in 0..per_speaker {
            let mut parts: Vec<usize> = Vec::with_capacity(digits);
            for _ in 0..digits {
                let previous = parts.last().map(|&p| labels[p]);
                let next: Vec<usize> = indices
                    .iter()
                    .copied()
                    .filter(|&i| Some(labels[i]) != previous)
                    .collect();
                parts.push(*next.choose(&mut rng).expect("two digits at least"));
            }
            let said: String = parts
                .iter()
                .map(|&i| labels[i].expect("labelled"))
                .collect();
            let wrong = loop {
                let code = digits_of(&challenge_code(&mut rng, digits));
                if code != said {
                    break code;
                }
            };
            let mut near: Vec<char> = said.chars().collect();
            let at = rand::Rng::random_range(&mut rng, 0..digits);
            let taken = |near: &[char], d: char| {
                d == near[at] || (at > 0 && near[at - 1] == d) || near.get(at + 1) == Some(&d)
            };
            let replacement = loop {
                let d = char::from(b'0' + rand::Rng::random_range(&mut rng, 0..10u8));
                if !taken(&near, d) {
                    break d;
                }
            };
            near[at] = replacement;
            out.push(PromptedCode {
                parts,
                said,
                wrong,
                near_miss: near.into_iter().collect(),
            });
        }
    }
    out
}

fn digits_of(code: &str) -> String {
    code.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(score: f32, target: bool) -> Trial {
        Trial { score, target }
    }

    #[test]
    fn perfect_separation_has_zero_eer() {
        let trials = [
            trial(0.9, true),
            trial(0.8, true),
            trial(0.1, false),
            trial(0.2, false),
        ];
        let m = metrics(&trials);
        assert_eq!(m.eer, 0.0);
        assert_eq!(m.min_dcf, 0.0);
        assert!(m.threshold > 0.2 && m.threshold < 0.8);
    }

    #[test]
    fn overlapping_scores_give_the_crossing_rate() {
        // 4 targets, 4 non-targets; one of each on the wrong side.
        let trials = [
            trial(0.9, true),
            trial(0.8, true),
            trial(0.7, true),
            trial(0.3, true),
            trial(0.6, false),
            trial(0.2, false),
            trial(0.1, false),
            trial(0.05, false),
        ];
        let m = metrics(&trials);
        assert!((m.eer - 0.25).abs() < 1e-9, "eer {}", m.eer);
        assert_eq!((m.target_trials, m.nontarget_trials), (4, 4));
    }

    #[test]
    fn pairs_cover_every_pair_and_sample_when_capped() {
        let speakers: Vec<String> = ["a", "a", "b", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let all = pair_trials(&speakers, usize::MAX, 1);
        assert_eq!(all.iter().filter(|t| t.2).count(), 2);
        assert_eq!(all.iter().filter(|t| !t.2).count(), 8);
        let capped = pair_trials(&speakers, 3, 1);
        assert_eq!(capped.iter().filter(|t| !t.2).count(), 3);
        assert_eq!(
            capped,
            pair_trials(&speakers, 3, 1),
            "seeded sampling is reproducible"
        );
    }

    #[test]
    fn codes_use_disjoint_recordings_for_enrollment_and_test() {
        let utterances: Vec<Utterance> = (0..20)
            .map(|i| Utterance {
                text: None,
                speaker: if i < 10 { "x".into() } else { "y".into() },
                path: PathBuf::from(format!("{i}.wav")),
            })
            .collect();
        let (enroll, test) = code_sets(&utterances, 4, 5, 7);
        assert_eq!(enroll.len(), 10);
        for e in &enroll {
            for t in test.iter().filter(|t| t.speaker == e.speaker) {
                assert!(e.parts.iter().all(|p| !t.parts.contains(p)));
            }
        }
    }

    #[test]
    fn prompted_codes_say_their_labels_and_differ_as_promised() {
        let utterances: Vec<Utterance> = (0..20)
            .map(|i| Utterance {
                text: None,
                speaker: if i % 2 == 0 { "x".into() } else { "y".into() },
                path: PathBuf::from(format!("{i}.wav")),
            })
            .collect();
        let labels: Vec<Option<char>> = (0..20)
            .map(|i| (i != 3).then(|| char::from(b'0' + (i % 10) as u8)))
            .collect();
        let codes = prompted_codes(&utterances, &labels, 6, 30, 7);
        assert_eq!(codes.len(), 60);
        for c in &codes {
            let said: String = c.parts.iter().map(|&i| labels[i].unwrap()).collect();
            assert_eq!(c.said, said);
            assert!(!c.parts.contains(&3), "unlabelled utterance used");
            let speakers: Vec<&str> = c
                .parts
                .iter()
                .map(|&i| utterances[i].speaker.as_str())
                .collect();
            assert!(
                speakers.windows(2).all(|w| w[0] == w[1]),
                "one speaker per code"
            );
            assert_ne!(c.wrong, c.said);
            assert_eq!(c.wrong.len(), 6);
            for code in [&c.said, &c.wrong, &c.near_miss] {
                let b = code.as_bytes();
                assert!(b.windows(2).all(|w| w[0] != w[1]), "repeat in {code}");
            }
            let differing = c
                .said
                .chars()
                .zip(c.near_miss.chars())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!((differing, c.near_miss.len()), (1, 6));
        }
    }
}
