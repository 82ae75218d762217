//! 80-bin log-mel filterbank, numerically matching
//! `torchaudio.compliance.kaldi.fbank(num_mel_bins=80, sample_frequency=16000, dither=0.0)`:
//! 25 ms povey window, 10 ms shift, snip edges, DC removal, pre-emphasis 0.97,
//! 512-point power spectrum, Kaldi mel banks (20 Hz to Nyquist), log with an
//! epsilon floor.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Number of mel bins the speaker model expects.
pub const NUM_MEL_BINS: usize = 80;
const SAMPLE_RATE: f64 = 16_000.0;
const FRAME_LEN: usize = 400;
const FRAME_SHIFT: usize = 160;
const FFT_LEN: usize = 512;
const PREEMPHASIS: f64 = 0.97;
const LOW_FREQ: f64 = 20.0;

/// A reusable filterbank extractor (FFT plan, window and mel matrix computed once).
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// Sparse mel filters: (first fft bin, weights).
    filters: Vec<(usize, Vec<f64>)>,
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

fn mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

impl Fbank {
    /// Builds the extractor.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT_LEN);
        // Povey window: a symmetric Hann window raised to 0.85.
        let window = (0..FRAME_LEN)
            .map(|i| {
                let hann = 0.5
                    - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (FRAME_LEN - 1) as f64).cos();
                hann.powf(0.85)
            })
            .collect();
        let num_fft_bins = FFT_LEN / 2;
        let bin_width = SAMPLE_RATE / FFT_LEN as f64;
        let mel_low = mel(LOW_FREQ);
        let mel_high = mel(SAMPLE_RATE / 2.0);
        let delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1) as f64;
        let filters = (0..NUM_MEL_BINS)
            .map(|b| {
                let left = mel_low + b as f64 * delta;
                let center = left + delta;
                let right = center + delta;
                let weights: Vec<f64> = (0..num_fft_bins)
                    .map(|i| {
                        let m = mel(bin_width * i as f64);
                        let up = (m - left) / (center - left);
                        let down = (right - m) / (right - center);
                        up.min(down).max(0.0)
                    })
                    .collect();
                let first = weights.iter().position(|w| *w > 0.0).unwrap_or(0);
                let last = weights.iter().rposition(|w| *w > 0.0).unwrap_or(0);
                (first, weights[first..=last.max(first)].to_vec())
            })
            .collect();
        Self {
            fft,
            window,
            filters,
        }
    }

    /// Number of frames Kaldi produces for `len` samples (snip edges).
    pub fn num_frames(len: usize) -> usize {
        if len < FRAME_LEN {
            0
        } else {
            1 + (len - FRAME_LEN) / FRAME_SHIFT
        }
    }

    /// Raw log-mel features, row-major `[frames][NUM_MEL_BINS]`.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let frames = Self::num_frames(samples.len());
        let mut out = Vec::with_capacity(frames * NUM_MEL_BINS);
        let mut frame = vec![0f64; FFT_LEN];
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; FFT_LEN / 2 + 1];
        let floor = f64::from(f32::EPSILON);
        for f in 0..frames {
            let chunk = &samples[f * FRAME_SHIFT..f * FRAME_SHIFT + FRAME_LEN];
            let mean = chunk.iter().map(|s| f64::from(*s)).sum::<f64>() / FRAME_LEN as f64;
            for (dst, src) in frame.iter_mut().zip(chunk) {
                *dst = f64::from(*src) - mean;
            }
            // Pre-emphasis, with the first sample emphasised against itself as
            // torchaudio's replicate padding does.
            for i in (1..FRAME_LEN).rev() {
                frame[i] -= PREEMPHASIS * frame[i - 1];
            }
            frame[0] -= PREEMPHASIS * frame[0];
            for (s, w) in frame.iter_mut().zip(&self.window) {
                *s *= w;
            }
            frame[FRAME_LEN..].fill(0.0);
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .expect("buffers come from the same plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (first, weights) in &self.filters {
                let energy: f64 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                out.push(energy.max(floor).ln() as f32);
            }
        }
        out
    }
}

/// Subtracts each bin's mean over the utterance (in place).
pub fn subtract_mean(features: &mut [f32], bins: usize) {
    let frames = features.len() / bins;
    if frames == 0 {
        return;
    }
    let mut mean = vec![0f64; bins];
    for row in features.chunks_exact(bins) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    for m in &mut mean {
        *m /= frames as f64;
    }
    for row in features.chunks_exact_mut(bins) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v = (f64::from(*v) - m) as f32;
        }
    }
}
