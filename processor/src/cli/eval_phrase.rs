//! `timbre eval --protocol phrase`: the phrase check on prompted codes made
//! of real single-digit recordings.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE};
use timbre::eval::{prompted_codes, read_manifest};

use super::speech::{join_with_pauses, pool, read_audio_with};
use timbre::phrase::{EncoderSpan, Heard, PhraseThresholds, expected_digits, load_recogniser};

/// What the phrase protocol prints.
#[derive(Debug, Serialize)]
struct PhraseMetrics {
    /// The right code said and refused.
    frr: f64,
    /// A random other code expected, and accepted.
    wrong_code_acceptance: f64,
    /// A code one digit off expected, and accepted.
    near_miss_acceptance: f64,
    trials_right: usize,
    trials_wrong: usize,
    digits: usize,
    /// Median wall time of one check (features, encoder, decoder).
    ms_per_check: f64,
    /// Median length of the checked audio.
    audio_seconds: f64,
    /// The right code was the recogniser's best reading, regardless of
    /// confidence.
    exact_rate: f64,
    /// 1st percentile of the right codes' digit mass (the least probability
    /// that a digit is said at any position; words score near 0).
    right_digit_mass_p01: f64,
    span: &'static str,
    threshold: f32,
    /// The same rates at other pass thresholds: `[threshold, frr,
    /// wrong_code_acceptance, near_miss_acceptance]`.
    sweep: Vec<[f64; 4]>,
}

/// Options of the phrase protocol.
pub struct PhraseEval<'a> {
    pub manifest: &'a Path,
    pub model_dir: &'a Path,
    pub digits: usize,
    pub per_speaker: usize,
    pub seed: u64,
    pub threads: usize,
    pub span: EncoderSpan,
}

/// Scores of one prompted code against the three expectations.
struct Check {
    right: Heard,
    wrong: Heard,
    near_miss: Heard,
    exact: bool,
    ms: f64,
    seconds: f64,
}

pub fn run(opts: PhraseEval<'_>, json: bool) -> Result<()> {
    let recogniser = load_recogniser(opts.model_dir, opts.span)?;
    let utterances = read_manifest(opts.manifest)?;
    let labels: Vec<Option<char>> = utterances
        .iter()
        .map(|u| {
            let digits = expected_digits(u.text.as_deref()?)?;
            let mut chars = digits.chars();
            match (chars.next(), chars.next()) {
                (Some(d), None) => Some(d),
                _ => None,
            }
        })
        .collect();
    if labels.iter().all(Option::is_none) {
        bail!(
            "manifest {} has no single-digit `text` labels",
            opts.manifest.display()
        );
    }
    let codes = prompted_codes(
        &utterances,
        &labels,
        opts.digits,
        opts.per_speaker,
        opts.seed,
    );
    // Single digits may be shorter than a request's minimum.
    let limits = AudioLimits {
        min_millis: 0,
        ..AudioLimits::default()
    };
    let pool = pool(opts.threads)?;
    let decoded: Vec<Option<Vec<f32>>> = pool.install(|| {
        utterances
            .par_iter()
            .zip(&labels)
            .map(|(u, label)| label.map(|_| read_audio_with(&u.path, &limits)).transpose())
            .collect::<Result<_>>()
    })?;
    let thresholds = PhraseThresholds::default();
    let checks: Vec<Check> = pool.install(|| {
        codes
            .par_iter()
            .map(|code| -> Result<_> {
                let audio = join_with_pauses(
                    code.parts
                        .iter()
                        .map(|&part| decoded[part].as_deref().unwrap_or_default()),
                );
                let start = Instant::now();
                let right = recogniser.check(&audio, &code.said)?;
                let ms = start.elapsed().as_secs_f64() * 1e3;
                Ok(Check {
                    exact: right.is_exact(),
                    right,
                    wrong: recogniser.check(&audio, &code.wrong)?,
                    near_miss: recogniser.check(&audio, &code.near_miss)?,
                    ms,
                    seconds: audio.len() as f64 / f64::from(MODEL_SAMPLE_RATE),
                })
            })
            .collect::<Result<_>>()
    })?;
    let n = checks.len().max(1) as f64;
    let rate = |f: &dyn Fn(&Check) -> bool| checks.iter().filter(|c| f(c)).count() as f64 / n;
    let at = |t: f32| {
        let at_t = PhraseThresholds {
            pass: t,
            ..thresholds
        };
        [
            f64::from(t),
            rate(&|c| !at_t.passes(&c.right)),
            rate(&|c| at_t.passes(&c.wrong)),
            rate(&|c| at_t.passes(&c.near_miss)),
        ]
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let m = PhraseMetrics {
        frr: at(thresholds.pass)[1],
        wrong_code_acceptance: at(thresholds.pass)[2],
        near_miss_acceptance: at(thresholds.pass)[3],
        trials_right: checks.len(),
        trials_wrong: checks.len(),
        digits: opts.digits,
        ms_per_check: median(checks.iter().map(|c| c.ms).collect()),
        audio_seconds: median(checks.iter().map(|c| c.seconds).collect()),
        exact_rate: rate(&|c| c.exact),
        right_digit_mass_p01: {
            let mut m: Vec<f64> = checks
                .iter()
                .map(|c| f64::from(c.right.digit_mass))
                .collect();
            m.sort_by(f64::total_cmp);
            m.get(m.len() / 100).copied().unwrap_or(0.0)
        },
        span: match opts.span {
            EncoderSpan::OwnLength => "own_length",
            EncoderSpan::Padded => "padded_30s",
        },
        threshold: thresholds.pass,
        sweep: [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
            .into_iter()
            .map(at)
            .collect(),
    };
    if json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        for [t, frr, wrong, near] in &m.sweep {
            println!(
                "threshold {t:.2}: FRR {:.2}%  wrong {:.2}%  near miss {:.2}%",
                frr * 100.0,
                wrong * 100.0,
                near * 100.0
            );
        }
        println!(
            "FRR {:.2}%  wrong-code acceptance {:.2}%  near-miss acceptance {:.2}%  exact {:.2}%  {} codes of {} digits  {:.1} ms/check on {:.2} s (medians, {})",
            m.frr * 100.0,
            m.wrong_code_acceptance * 100.0,
            m.near_miss_acceptance * 100.0,
            m.exact_rate * 100.0,
            m.trials_right,
            m.digits,
            m.ms_per_check,
            m.audio_seconds,
            m.span
        );
    }
    Ok(())
}
