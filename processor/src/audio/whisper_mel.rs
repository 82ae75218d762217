//! Whisper's 80-bin log-mel spectrogram: 400-point periodic Hann window,
//! 160-sample hop, centred frames with reflect padding, power spectrum,
//! Slaney-normalised mel filters (as `librosa.filters.mel` builds them),
//! `log10` with a floor, dynamic range clipped to 8 (×10 dB), then scaled
//! to about [-1, 1].

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Mel bins Whisper expects.
pub const WHISPER_MEL_BINS: usize = 80;
const SAMPLE_RATE: f64 = 16_000.0;
const N_FFT: usize = 400;
const HOP: usize = 160;

/// A reusable extractor (FFT plan, window and filters computed once).
pub struct WhisperMel {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// Sparse filters: (first fft bin, weights).
    filters: Vec<(usize, Vec<f64>)>,
}

impl Default for WhisperMel {
    fn default() -> Self {
        Self::new()
    }
}

// Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic
// above (a factor 6.4 per 27 mels).
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// The filter matrix, `[mel][fft bin]`, as librosa builds it with
/// `htk=False, norm="slaney"`, 0 Hz to Nyquist.
pub fn slaney_filters() -> Vec<Vec<f64>> {
    let bins = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| k as f64 * SAMPLE_RATE / N_FFT as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let points: Vec<f64> = (0..WHISPER_MEL_BINS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (WHISPER_MEL_BINS + 1) as f64))
        .collect();
    (0..WHISPER_MEL_BINS)
        .map(|m| {
            let (left, centre, right) = (points[m], points[m + 1], points[m + 2]);
            // Slaney normalisation: each filter has unit area.
            let norm = 2.0 / (right - left);
            fft_freqs
                .iter()
                .map(|&f| {
                    let up = (f - left) / (centre - left);
                    let down = (right - f) / (right - centre);
                    up.min(down).max(0.0) * norm
                })
                .collect()
        })
        .collect()
}

impl WhisperMel {
    /// Builds the extractor.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
            .collect();
        let filters = slaney_filters()
            .into_iter()
            .map(|w| {
                let first = w.iter().position(|x| *x > 0.0).unwrap_or(0);
                let last = w.iter().rposition(|x| *x > 0.0).unwrap_or(first);
                (first, w[first..=last.max(first)].to_vec())
            })
            .collect();
        Self {
            fft,
            window,
            filters,
        }
    }

    /// Frames produced for `len` samples (Whisper drops the last STFT frame).
    pub fn frames(len: usize) -> usize {
        len / HOP
    }

    /// Features of 16 kHz samples, bin-major (`[bin][frame]`, the layout of
    /// the encoder's input).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let frames = Self::frames(samples.len());
        if frames == 0 {
            return Vec::new();
        }
        let padded = reflect_pad(samples, N_FFT / 2);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; N_FFT / 2 + 1];
        let mut log_mel = vec![0f64; WHISPER_MEL_BINS * frames];
        for t in 0..frames {
            let frame = &padded[t * HOP..t * HOP + N_FFT];
            for ((x, s), w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = f64::from(*s) * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers come from the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let energy: f64 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                log_mel[m * frames + t] = energy.max(1e-10).log10();
            }
        }
        let ceiling = log_mel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        log_mel
            .into_iter()
            .map(|v| ((v.max(ceiling - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }
}

/// `numpy.pad(x, pad, mode="reflect")`: mirrors without repeating the edge.
/// Inputs shorter than the pad are mirrored back and forth.
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f32> {
    let n = x.len() as isize;
    let period = (2 * (n - 1)).max(1);
    let at = |i: isize| -> f32 {
        if n == 1 {
            return x[0];
        }
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    (-(pad as isize)..n + pad as isize).map(at).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_mirrors_without_the_edge() {
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0, 4.0], 2),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
        );
    }

    #[test]
    fn filters_have_unit_area_in_hz() {
        // Slaney normalisation: the triangle's area (height × base / 2) is 1,
        // so height = 2 / base; check the peak of a low and a high filter.
        let filters = slaney_filters();
        assert_eq!(filters.len(), WHISPER_MEL_BINS);
        assert_eq!(filters[0].len(), N_FFT / 2 + 1);
        assert!(filters.iter().all(|f| f.iter().any(|w| *w > 0.0)));
        // Below 1 kHz the mel scale is linear: equal bandwidths, equal peaks.
        let peak = |f: &Vec<f64>| f.iter().copied().fold(0.0, f64::max);
        assert!(peak(&filters[5]) > peak(&filters[70]));
    }

    #[test]
    fn a_tone_lights_its_own_bin() {
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.5)
            .collect();
        let mel = WhisperMel::new().compute(&tone);
        let frames = WhisperMel::frames(tone.len());
        assert_eq!(mel.len(), WHISPER_MEL_BINS * frames);
        let mid = frames / 2;
        let loudest = (0..WHISPER_MEL_BINS)
            .max_by(|&a, &b| mel[a * frames + mid].total_cmp(&mel[b * frames + mid]))
            .unwrap();
        // 440 Hz is 6.6 Slaney mels; 80 filters over 0–45.2 mels put
        // centres 0.56 mels apart, the first at 0.56: bin 10.8.
        assert!((10..=12).contains(&loudest), "loudest bin {loudest}");
    }
}
