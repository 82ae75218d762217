//! Replayed copies of a recording, as an attacker would submit them: the
//! transforms `timbre eval --protocol replay` applies to every stored
//! original (no external tools needed), seeded so runs repeat.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::audio::{
    AudioError, AudioLimits, MODEL_SAMPLE_RATE, decode_wav, encode_wav, resample_to,
};

/// A named replay of an original.
pub struct Replay {
    /// Which transforms made it.
    pub transform: &'static str,
    /// 16 kHz samples.
    pub samples: Vec<f32>,
}

/// Every replay of `original` (16 kHz): through an 8 kHz channel, G.711
/// µ-law, trimmed, quieter, louder and clipped, with noise at 15 dB SNR,
/// through a telephone band-pass and a room, and all of these at once.
pub fn replays(original: &[f32], seed: u64) -> Vec<Replay> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rate = MODEL_SAMPLE_RATE;
    let narrow = |x: &[f32]| resample_to(&resample_to(x, rate, 8_000), 8_000, rate);
    let mulaw = |x: &[f32]| {
        let eight = resample_to(x, rate, 8_000);
        let coded: Vec<f32> = eight.iter().map(|&s| mulaw_round_trip(s)).collect();
        resample_to(&coded, 8_000, rate)
    };
    let room_and_line = |x: &[f32], rng: &mut StdRng| telephone_band(&room(x, rng));
    let mut out = vec![
        Replay {
            transform: "resampled_8k",
            samples: narrow(original),
        },
        Replay {
            transform: "mulaw_8k",
            samples: mulaw(original),
        },
        Replay {
            transform: "trimmed",
            samples: trim(original),
        },
        Replay {
            transform: "gain_minus_12db",
            samples: original.iter().map(|s| s * 0.25).collect(),
        },
        Replay {
            transform: "gain_plus_6db_clipped",
            samples: original
                .iter()
                .map(|s| (s * 2.0).clamp(-1.0, 1.0))
                .collect(),
        },
        Replay {
            transform: "noise_15db",
            samples: with_noise(original, 15.0, &mut rng),
        },
        Replay {
            transform: "room_and_telephone_band",
            samples: room_and_line(original, &mut rng),
        },
    ];
    let all = room_and_line(&trim(original), &mut rng);
    let all: Vec<f32> = mulaw(&all).iter().map(|s| s * 0.5).collect();
    out.push(Replay {
        transform: "all",
        samples: with_noise(&all, 20.0, &mut rng),
    });
    out
}

/// `transform` (one of [`replays`]' names) of a WAV recording, as a
/// 16-bit 16 kHz WAV: a replay to submit. Panics on an unknown name.
pub fn replayed_wav(wav: &[u8], transform: &str) -> Result<Vec<u8>, AudioError> {
    let audio = decode_wav(wav, &AudioLimits::default())?;
    let samples = replays(&audio.samples, 1)
        .into_iter()
        .find(|r| r.transform == transform)
        .map(|r| r.samples)
        .unwrap_or_else(|| panic!("no replay transform {transform}"));
    Ok(encode_wav(&samples, MODEL_SAMPLE_RATE))
}

/// Drops 300 ms at the start and 200 ms at the end (when there is that much).
fn trim(x: &[f32]) -> Vec<f32> {
    let (head, tail) = (4_800, 3_200);
    if x.len() > head + tail + 16_000 {
        x[head..x.len() - tail].to_vec()
    } else {
        x.to_vec()
    }
}

/// G.711 µ-law: compand, quantise to 8 bits, expand.
fn mulaw_round_trip(s: f32) -> f32 {
    const MU: f32 = 255.0;
    let s = s.clamp(-1.0, 1.0);
    let companded = s.signum() * (1.0 + MU * s.abs()).ln() / (1.0 + MU).ln();
    let q = (companded * 127.0).round() / 127.0;
    q.signum() * ((1.0 + MU).powf(q.abs()) - 1.0) / MU
}

/// White noise at `snr_db` below the signal's power.
fn with_noise(x: &[f32], snr_db: f32, rng: &mut StdRng) -> Vec<f32> {
    let power = x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32;
    let sigma = (power / 10f32.powf(snr_db / 10.0)).sqrt();
    // Sum of uniforms: close enough to Gaussian for a noise floor.
    x.iter()
        .map(|s| {
            let n: f32 = (0..4).map(|_| rng.random_range(-1.0..1.0f32)).sum::<f32>() * 0.866;
            s + sigma * n
        })
        .collect()
}

/// A small room: the direct sound plus 40 reflections over 250 ms with an
/// exponentially decaying level (RT60 about 0.4 s).
fn room(x: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let mut taps = vec![(0usize, 1.0f32)];
    for _ in 0..40 {
        let delay = rng.random_range(80..4_000usize);
        let decay = (-6.9 * delay as f32 / (0.4 * 16_000.0)).exp();
        taps.push((delay, decay * rng.random_range(-0.5..0.5f32)));
    }
    let mut out = vec![0f32; x.len()];
    for (delay, gain) in taps {
        for (o, s) in out[delay.min(x.len())..].iter_mut().zip(x) {
            *o += gain * s;
        }
    }
    out
}

/// 300–3400 Hz: two second-order high-pass and two low-pass sections.
fn telephone_band(x: &[f32]) -> Vec<f32> {
    let hp = Biquad::high_pass(300.0);
    let lp = Biquad::low_pass(3_400.0);
    let mut y = x.to_vec();
    for filter in [hp, hp, lp, lp] {
        y = filter.run(&y);
    }
    y
}

/// A second-order section (RBJ cookbook, Q = 1/√2) at 16 kHz.
#[derive(Clone, Copy)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
}

impl Biquad {
    fn coefficients(cutoff: f32, high: bool) -> Self {
        let w = 2.0 * std::f32::consts::PI * cutoff / MODEL_SAMPLE_RATE as f32;
        let alpha = w.sin() / (2.0 * std::f32::consts::FRAC_1_SQRT_2);
        let cos = w.cos();
        let a0 = 1.0 + alpha;
        let b = if high {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Self {
            b: b.map(|v| v / a0),
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
        }
    }

    fn high_pass(cutoff: f32) -> Self {
        Self::coefficients(cutoff, true)
    }

    fn low_pass(cutoff: f32) -> Self {
        Self::coefficients(cutoff, false)
    }

    fn run(&self, x: &[f32]) -> Vec<f32> {
        let (mut x1, mut x2, mut y1, mut y2) = (0f32, 0f32, 0f32, 0f32);
        x.iter()
            .map(|&x0| {
                let y0 = self.b[0] * x0 + self.b[1] * x1 + self.b[2] * x2
                    - self.a[0] * y1
                    - self.a[1] * y2;
                (x2, x1, y2, y1) = (x1, x0, y1, y0);
                y0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32) -> Vec<f32> {
        (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / 16_000.0).sin() * 0.5)
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        let tail = &x[4_000..];
        (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt()
    }

    #[test]
    fn the_telephone_band_passes_speech_and_cuts_the_rest() {
        let pass = rms(&telephone_band(&tone(1_000.0))) / rms(&tone(1_000.0));
        let low = rms(&telephone_band(&tone(60.0))) / rms(&tone(60.0));
        let high = rms(&telephone_band(&tone(6_000.0))) / rms(&tone(6_000.0));
        assert!(pass > 0.9, "1 kHz kept: {pass}");
        assert!(low < 0.01 && high < 0.05, "60 Hz {low}, 6 kHz {high}");
    }

    #[test]
    fn mulaw_keeps_a_sample_within_its_step() {
        for s in [-0.9f32, -0.1, -0.001, 0.0, 0.002, 0.3, 1.0] {
            let back = mulaw_round_trip(s);
            assert!(
                (back - s).abs() <= 0.03 * s.abs().max(0.01),
                "{s} -> {back}"
            );
        }
    }

    #[test]
    fn every_replay_is_made_and_differs_from_the_original() {
        let original = tone(440.0).repeat(3);
        let made = replays(&original, 1);
        assert_eq!(made.len(), 8);
        for r in &made {
            assert!(!r.samples.is_empty(), "{}", r.transform);
            assert_ne!(r.samples, original, "{}", r.transform);
        }
    }
}
