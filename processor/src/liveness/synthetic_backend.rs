//! A logistic-regression back-end on AASIST's 160 features. The network was
//! trained on ASVspoof 2019 voices; this layer, fitted on real speech
//! against local text-to-speech (both wideband and through an 8 kHz
//! channel), moves it towards the audio the product meets. It corrects the
//! network's own bona fide logit rather than replacing it (the logit is the
//! fit's offset, the penalty keeps the correction small), so what the
//! network knows about engines outside the fit is kept — and the score is the
//! lower of the corrected one and the network's own logit (shifted onto the
//! same scale at the bona fide 2nd percentile): audio must pass both. Held
//! out of the fit, an engine the network already caught stays caught (the
//! correction alone let 7% of one through) while the others gain.
//!
//! The bundled fit (`synthetic_backend.json`) comes from
//! `timbre eval --protocol spoof --fit-backend` (README, "The liveness check").

use serde::{Deserialize, Serialize};

/// Standardisation and weights of the fitted back-end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticBackend {
    /// Per-feature mean of the training inputs.
    pub mean: Vec<f32>,
    /// Per-feature scale (standard deviation) of the training inputs.
    pub scale: Vec<f32>,
    /// Weights on the standardised features.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
    /// Added to the network's logit before taking the lower score.
    pub raw_shift: f32,
}

/// L2 penalty and plain gradient-descent schedule: small, fixed and
/// deterministic, so a re-fit on the same data gives the same file.
const L2: f64 = 1e-2;
const STEPS: usize = 3_000;
const RATE: f64 = 0.1;

impl SyntheticBackend {
    /// The fit shipped with the engine.
    pub fn bundled() -> Self {
        serde_json::from_str(include_str!("synthetic_backend.json"))
            .expect("the bundled back-end is valid JSON (checked by its unit test)")
    }

    /// The synthetic-speech score: the lower of the corrected log-odds and
    /// the shifted network logit.
    pub fn score(&self, features: &[f32], logit: f32) -> f32 {
        self.corrected(features, logit).min(logit + self.raw_shift)
    }

    /// Log-odds of bona fide speech: the network's bona fide `logit`
    /// corrected by its features.
    fn corrected(&self, features: &[f32], logit: f32) -> f32 {
        let mut z = logit + self.bias;
        for (((x, m), s), w) in features
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
        {
            z += (x - m) / s * w;
        }
        z
    }

    /// Fits bona fide (`true`) against spoofed (`false`) feature vectors
    /// with the network's logits as offsets, each class weighted to half the
    /// total so the score's zero is an equal-prior boundary.
    pub fn fit(features: &[&[f32]], logits: &[f32], bona_fide: &[bool]) -> Self {
        let dim = features.first().map_or(0, |f| f.len());
        let n = features.len() as f64;
        let mut mean = vec![0f64; dim];
        for f in features {
            mean.iter_mut()
                .zip(*f)
                .for_each(|(m, x)| *m += f64::from(*x) / n);
        }
        let mut scale = vec![0f64; dim];
        for f in features {
            for ((s, x), m) in scale.iter_mut().zip(*f).zip(&mean) {
                *s += (f64::from(*x) - m).powi(2) / n;
            }
        }
        scale.iter_mut().for_each(|s| *s = s.sqrt() + 1e-6);
        let z: Vec<Vec<f64>> = features
            .iter()
            .map(|f| {
                f.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((x, m), s)| (f64::from(*x) - m) / s)
                    .collect()
            })
            .collect();
        let positives = bona_fide.iter().filter(|b| **b).count().max(1) as f64;
        let negatives = (bona_fide.len() as f64 - positives).max(1.0);
        let sample_weight: Vec<f64> = bona_fide
            .iter()
            .map(|b| if *b { 0.5 / positives } else { 0.5 / negatives })
            .collect();
        let (mut w, mut b) = (vec![0f64; dim], 0f64);
        for _ in 0..STEPS {
            let mut grad = vec![0f64; dim];
            let mut grad_b = 0f64;
            for (((row, label), weight), offset) in
                z.iter().zip(bona_fide).zip(&sample_weight).zip(logits)
            {
                let logit =
                    f64::from(*offset) + b + row.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>();
                let err = (1.0 / (1.0 + (-logit).exp()) - f64::from(u8::from(*label))) * weight;
                grad.iter_mut().zip(row).for_each(|(g, x)| *g += err * x);
                grad_b += err;
            }
            for (wi, g) in w.iter_mut().zip(&grad) {
                *wi -= RATE * (g + L2 * *wi);
            }
            b -= RATE * grad_b;
        }
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        let mut fitted = Self {
            mean: f32s(mean),
            scale: f32s(scale),
            weights: f32s(w),
            bias: b as f32,
            raw_shift: 0.0,
        };
        let bona: Vec<usize> = (0..features.len()).filter(|&i| bona_fide[i]).collect();
        let corrected = percentile(
            bona.iter()
                .map(|&i| fitted.corrected(features[i], logits[i])),
        );
        let raw = percentile(bona.iter().map(|&i| logits[i]));
        fitted.raw_shift = corrected - raw;
        fitted
    }
}

/// The 2nd percentile: where both scores are put on one scale.
fn percentile(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.collect();
    v.sort_by(f32::total_cmp);
    v.get((v.len().saturating_sub(1)) * 2 / 100)
        .copied()
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_fit_reads_every_feature() {
        let backend = SyntheticBackend::bundled();
        let dim = crate::model::aasist::HIDDEN_DIM;
        assert_eq!(backend.mean.len(), dim);
        assert_eq!(backend.scale.len(), dim);
        assert_eq!(backend.weights.len(), dim);
        assert!(backend.scale.iter().all(|s| *s > 0.0));
    }

    #[test]
    fn a_fit_separates_separable_classes() {
        // Bona fide: feature 0 high; spoofed: low; feature 1 is noise.
        let rows: Vec<Vec<f32>> = (0..40)
            .map(|i| {
                vec![
                    if i % 2 == 0 { 2.0 } else { -2.0 } + (i as f32 * 0.37).sin() * 0.5,
                    (i as f32 * 1.7).cos(),
                ]
            })
            .collect();
        let labels: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let offsets = vec![0.0; rows.len()];
        let backend = SyntheticBackend::fit(&refs, &offsets, &labels);
        for (row, label) in rows.iter().zip(&labels) {
            assert_eq!(backend.corrected(row, 0.0) > 0.0, *label, "{row:?}");
        }
        assert!(backend.weights[0].abs() > 4.0 * backend.weights[1].abs());
    }
}
