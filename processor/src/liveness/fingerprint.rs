//! Landmark fingerprints of audio: pairs of spectral peaks hashed with their
//! frequency gap and time distance (the scheme of audio-identification
//! systems). A recording played again — resampled, re-encoded, trimmed,
//! louder, noisier, through a telephone band or a room — keeps enough of its
//! strongest peaks, at the same distances, to be recognised; another take of
//! the same words by the same voice does not put them at the same places.
//!
//! Only the telephone band (300–3400 Hz) is used, so audio that went through
//! an 8 kHz channel and audio that did not hash alike.

use std::collections::HashMap;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::audio::MODEL_SAMPLE_RATE;

const FFT: usize = 512;
const HOP: usize = 160;
/// 31.25 Hz per bin at 16 kHz: 300 Hz … 3400 Hz.
const LOW_BIN: usize = 10;
const HIGH_BIN: usize = 109;
/// A peak is the largest value within ± these frames and bins.
const PEAK_FRAMES: usize = 4;
const PEAK_BINS: usize = 5;
/// Peaks kept per second of audio (the strongest), and how far below the
/// loudest frame a peak may lie.
const PEAKS_PER_SECOND: usize = 40;
const PEAK_FLOOR_DB: f32 = 50.0;
/// Each anchor pairs with the nearest peaks of its target zone.
const FAN_OUT: usize = 6;
const MAX_DT: usize = 40;
const MAX_DF: i32 = 31;

/// One landmark: its hash and the frame of its anchor peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Landmark {
    /// Anchor bin, bin gap and frame distance, packed.
    pub hash: u32,
    /// Frame (10 ms) of the anchor.
    pub frame: u32,
}

/// The fingerprint of one recording: its landmarks, sorted by hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    landmarks: Vec<Landmark>,
}

/// How much of a probe lines up with a stored fingerprint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Landmarks of the probe found at one common time offset.
    pub aligned: u32,
    /// Landmarks of the probe.
    pub probe: u32,
}

impl Overlap {
    /// `aligned` over the probe's landmarks (0 for an empty probe).
    pub fn ratio(&self) -> f32 {
        if self.probe == 0 {
            0.0
        } else {
            self.aligned as f32 / self.probe as f32
        }
    }
}

/// When a probe counts as a replay of a stored recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayThresholds {
    /// Least share of the probe's landmarks aligned with one recording.
    pub min_ratio: f32,
    /// Least number of aligned landmarks (short probes have few).
    pub min_aligned: u32,
}

impl Default for ReplayThresholds {
    fn default() -> Self {
        // On LibriSpeech (`timbre eval --protocol replay`) no genuine pair
        // of one speaker's utterances went above a share of 0.013 or 6
        // aligned landmarks; 1% of replays fall below 0.037.
        Self {
            min_ratio: 0.025,
            min_aligned: 10,
        }
    }
}

impl ReplayThresholds {
    /// Whether `overlap` is a replay.
    pub fn is_replay(&self, overlap: &Overlap) -> bool {
        overlap.aligned >= self.min_aligned && overlap.ratio() >= self.min_ratio
    }
}

impl Fingerprint {
    /// The landmarks, sorted by hash.
    pub fn landmarks(&self) -> &[Landmark] {
        &self.landmarks
    }

    /// Number of landmarks.
    pub fn len(&self) -> usize {
        self.landmarks.len()
    }

    /// Whether there are none (silence, or audio shorter than a frame).
    pub fn is_empty(&self) -> bool {
        self.landmarks.is_empty()
    }

    /// Serialised form: 8 bytes per landmark, little endian (hash, frame).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.landmarks.len() * 8);
        for l in &self.landmarks {
            out.extend_from_slice(&l.hash.to_le_bytes());
            out.extend_from_slice(&l.frame.to_le_bytes());
        }
        out
    }

    /// Parses [`Fingerprint::to_bytes`]; `None` when the length is not a
    /// whole number of landmarks.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let mut landmarks: Vec<Landmark> = bytes
            .chunks_exact(8)
            .map(|c| Landmark {
                hash: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                frame: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        landmarks.sort_unstable();
        Some(Self { landmarks })
    }

    /// How many of `probe`'s landmarks sit at one common time offset in
    /// this fingerprint (neighbouring offsets merged: frames may slip by one
    /// under resampling or trimming).
    pub fn overlap(&self, probe: &Fingerprint) -> Overlap {
        let mut offsets: HashMap<i64, u32> = HashMap::new();
        let stored = &self.landmarks;
        for p in &probe.landmarks {
            let start = stored.partition_point(|s| s.hash < p.hash);
            for s in stored[start..].iter().take_while(|s| s.hash == p.hash) {
                *offsets
                    .entry(i64::from(s.frame) - i64::from(p.frame))
                    .or_default() += 1;
            }
        }
        let aligned = offsets
            .iter()
            .map(|(offset, n)| {
                n + offsets.get(&(offset - 1)).copied().unwrap_or(0)
                    + offsets.get(&(offset + 1)).copied().unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        Overlap {
            aligned: aligned.min(probe.len() as u32),
            probe: probe.len() as u32,
        }
    }
}

/// The overlap of `probe` with the stored fingerprint that shares the
/// largest share of it; `None` when nothing is stored.
pub fn best_overlap<'a>(
    stored: impl IntoIterator<Item = &'a Fingerprint>,
    probe: &Fingerprint,
) -> Option<Overlap> {
    stored
        .into_iter()
        .map(|s| s.overlap(probe))
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
}

/// Computes fingerprints; holds the FFT plan (build once, share freely).
pub struct Fingerprinter {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprinter {
    /// A fingerprinter for 16 kHz audio.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT);
        let window = (0..FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FFT as f32).cos())
            .collect();
        Self { fft, window }
    }

    /// The fingerprint of 16 kHz mono `samples`.
    pub fn fingerprint(&self, samples: &[f32]) -> Fingerprint {
        let spectrogram = self.log_spectrogram(samples);
        let peaks = peaks(&spectrogram, samples.len());
        Fingerprint {
            landmarks: landmarks(&peaks),
        }
    }

    /// Log power (dB) of the telephone band, one row per 10 ms frame.
    fn log_spectrogram(&self, samples: &[f32]) -> Vec<[f32; HIGH_BIN - LOW_BIN]> {
        if samples.len() < FFT {
            return Vec::new();
        }
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let frames = (samples.len() - FFT) / HOP + 1;
        let mut rows = Vec::with_capacity(frames);
        for f in 0..frames {
            let frame = &samples[f * HOP..f * HOP + FFT];
            for ((x, s), w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = s * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers come from the plan");
            let mut row = [0f32; HIGH_BIN - LOW_BIN];
            for (r, c) in row.iter_mut().zip(&spectrum[LOW_BIN..HIGH_BIN]) {
                *r = 10.0 * (c.norm_sqr() + 1e-10).log10();
            }
            rows.push(row);
        }
        rows
    }
}

/// A spectral peak: frame and bin (from `LOW_BIN`).
#[derive(Debug, Clone, Copy)]
struct Peak {
    frame: usize,
    bin: usize,
    db: f32,
}

/// Local maxima, no more than `PEAKS_PER_SECOND` per second (the strongest
/// of each second), none far below the loudest frame.
fn peaks(rows: &[[f32; HIGH_BIN - LOW_BIN]], samples: usize) -> Vec<Peak> {
    let bins = HIGH_BIN - LOW_BIN;
    if rows.is_empty() {
        return Vec::new();
    }
    let loudest = rows
        .iter()
        .flat_map(|r| r.iter())
        .fold(f32::MIN, |a, &b| a.max(b));
    // Separable maximum filter: across bins, then across frames.
    let across_bins: Vec<Vec<f32>> = rows
        .iter()
        .map(|row| {
            (0..bins)
                .map(|b| {
                    let lo = b.saturating_sub(PEAK_BINS);
                    let hi = (b + PEAK_BINS + 1).min(bins);
                    row[lo..hi].iter().fold(f32::MIN, |a, &v| a.max(v))
                })
                .collect()
        })
        .collect();
    let mut found = Vec::new();
    for t in 0..rows.len() {
        let lo = t.saturating_sub(PEAK_FRAMES);
        let hi = (t + PEAK_FRAMES + 1).min(rows.len());
        for b in 0..bins {
            let v = rows[t][b];
            if v < loudest - PEAK_FLOOR_DB {
                continue;
            }
            let neighbourhood = across_bins[lo..hi]
                .iter()
                .fold(f32::MIN, |a, r| a.max(r[b]));
            if v >= neighbourhood {
                found.push(Peak {
                    frame: t,
                    bin: b,
                    db: v,
                });
            }
        }
    }
    // The strongest per one-second block, so loud noise in one place does
    // not crowd out speech elsewhere.
    let frames_per_second = MODEL_SAMPLE_RATE as usize / HOP;
    let mut kept = Vec::with_capacity(found.len());
    let seconds = samples.div_ceil(MODEL_SAMPLE_RATE as usize).max(1);
    for second in 0..seconds {
        let mut block: Vec<Peak> = found
            .iter()
            .copied()
            .filter(|p| p.frame / frames_per_second == second)
            .collect();
        block.sort_by(|a, b| b.db.total_cmp(&a.db));
        block.truncate(PEAKS_PER_SECOND);
        kept.extend(block);
    }
    kept.sort_by_key(|p| (p.frame, p.bin));
    kept
}

fn landmarks(peaks: &[Peak]) -> Vec<Landmark> {
    let mut out = Vec::with_capacity(peaks.len() * FAN_OUT);
    for (i, anchor) in peaks.iter().enumerate() {
        let targets = peaks[i + 1..]
            .iter()
            .filter(|p| p.frame > anchor.frame)
            .take_while(|p| p.frame - anchor.frame <= MAX_DT)
            .filter(|p| (p.bin as i32 - anchor.bin as i32).abs() <= MAX_DF)
            .take(FAN_OUT);
        for target in targets {
            let df = (target.bin as i32 - anchor.bin as i32 + MAX_DF) as u32;
            let dt = (target.frame - anchor.frame) as u32;
            out.push(Landmark {
                hash: (anchor.bin as u32) << 12 | df << 6 | dt,
                frame: anchor.frame as u32,
            });
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A second of noise bursts shaped like syllables: random tones with
    /// random onsets, enough structure for peaks.
    fn babble(seed: u64, seconds: f32) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = (seconds * 16_000.0) as usize;
        let mut out = vec![0f32; n];
        for _ in 0..(seconds * 12.0) as usize {
            let start = rng.random_range(0..n - 3_200);
            let len = rng.random_range(800..3_200);
            let f0 = rng.random_range(120.0..260.0f32);
            for k in 1..12 {
                let amp = rng.random_range(0.0..0.1f32) / k as f32;
                for i in 0..len {
                    let t = i as f32 / 16_000.0;
                    let env = (std::f32::consts::PI * i as f32 / len as f32).sin();
                    out[start + i] +=
                        amp * env * (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin();
                }
            }
        }
        out
    }

    #[test]
    fn a_recording_matches_itself_trimmed_and_quieter_but_not_another() {
        let fp = Fingerprinter::new();
        let original = babble(1, 4.0);
        let stored = fp.fingerprint(&original);
        assert!(stored.len() > 200, "{} landmarks", stored.len());
        let replay: Vec<f32> = original[4_000..].iter().map(|s| s * 0.3).collect();
        let same = stored.overlap(&fp.fingerprint(&replay));
        assert!(same.ratio() > 0.5, "{same:?}");
        let other = stored.overlap(&fp.fingerprint(&babble(2, 4.0)));
        assert!(other.ratio() < 0.1, "{other:?}");
    }

    #[test]
    fn bytes_round_trip_and_bad_lengths_are_refused() {
        let fp = Fingerprinter::new().fingerprint(&babble(3, 2.0));
        assert_eq!(Fingerprint::from_bytes(&fp.to_bytes()), Some(fp.clone()));
        assert_eq!(Fingerprint::from_bytes(&[0u8; 7]), None);
        assert!(Fingerprinter::new().fingerprint(&[0.0; 100]).is_empty());
    }
}
