//! AASIST's front end and encoder: a fixed sinc filterbank on the raw
//! waveform, `|x|` max-pooled into a (band x time) map, then six residual
//! blocks of `2 x 3` convolutions, each max-pooling time by 3.
//! Activations are channel-major `[channels][height][width]`.

use candle_core::Device;

use super::super::ModelError;
use super::super::kernels::{im2col_1d, im2col_tile_kx3, selu_in_place};
use super::super::layers::{Affine, Linear, Weights};

/// Sinc filters of the front end (`first_conv`, made odd as the reference does).
const SINC_TAPS: usize = 129;
/// Band-pass filters (`filts[0]`).
const SINC_BANDS: usize = 70;
const SAMPLE_RATE: f64 = 16_000.0;
/// Output samples of the sinc stage filtered per matrix product (a multiple
/// of the pooling width, 3).
const SINC_CHUNK: usize = 3 * 2048;

/// The fixed (not learned) band-pass filters: mel-spaced edges between 0 Hz
/// and Nyquist, ideal band-pass impulse responses under a Hamming window.
fn sinc_filters() -> Vec<f32> {
    let to_mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let to_hz = |mel: f64| 700.0 * (10f64.powf(mel / 2595.0) - 1.0);
    let mel_max = to_mel(SAMPLE_RATE / 2.0);
    let edges: Vec<f64> = (0..=SINC_BANDS)
        .map(|i| to_hz(mel_max * i as f64 / SINC_BANDS as f64))
        .collect();
    let half = (SINC_TAPS - 1) / 2;
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
        }
    };
    let mut filters = Vec::with_capacity(SINC_BANDS * SINC_TAPS);
    for band in edges.windows(2) {
        let (low, high) = (band[0], band[1]);
        for n in 0..SINC_TAPS {
            let t = n as f64 - half as f64;
            let ideal = 2.0 * high / SAMPLE_RATE * sinc(2.0 * high * t / SAMPLE_RATE)
                - 2.0 * low / SAMPLE_RATE * sinc(2.0 * low * t / SAMPLE_RATE);
            let hamming = 0.54
                - 0.46 * (2.0 * std::f64::consts::PI * n as f64 / (SINC_TAPS - 1) as f64).cos();
            filters.push((ideal * hamming) as f32);
        }
    }
    filters
}

/// A `kh x 3` convolution applied to tiles that carry their own
/// neighbouring columns (see [`im2col_tile_kx3`]).
struct Conv {
    linear: Linear,
    kh: usize,
    pad_h: usize,
}

impl Conv {
    fn load(
        w: &Weights,
        prefix: &str,
        (kh, pad_h): (usize, usize),
        bn: Option<Affine>,
        dev: &Device,
    ) -> Result<Self, ModelError> {
        let linear = Linear::load(
            w,
            &format!("{prefix}.weight"),
            Some(&format!("{prefix}.bias")),
            bn,
            dev,
        )?;
        Ok(Self { linear, kh, pad_h })
    }

    /// `[cin][h][w]` tile → `[cout][out_h][out_w]`, bias added.
    fn tile(
        &self,
        x: &[f32],
        shape: (usize, usize, usize),
        offset: usize,
        out_w: usize,
    ) -> Result<(Vec<f32>, usize), ModelError> {
        let (cols, out_h) = im2col_tile_kx3(x, shape, self.kh, self.pad_h, offset, out_w);
        Ok((self.linear.apply(cols, out_h * out_w)?, out_h))
    }
}

/// Columns `first .. first + len` of every row of `[c][h][w]`, zero where
/// they fall outside `0..w`, appended to `tile`.
fn gather_columns(tile: &mut Vec<f32>, x: &[f32], w: usize, first: isize, len: usize) {
    let lo = first.clamp(0, w as isize) as usize;
    let hi = (first + len as isize).clamp(0, w as isize) as usize;
    let before = (lo as isize - first) as usize;
    let after = len - before - (hi - lo);
    for row in x.chunks_exact(w) {
        tile.resize(tile.len() + before, 0.0);
        tile.extend_from_slice(&row[lo..hi]);
        tile.resize(tile.len() + after, 0.0);
    }
}

/// One residual block. The reference computes `selu(bn1(x))` and then
/// convolves `x` itself (the checkpoint was trained that way), so `bn1` has
/// no effect and is not loaded.
///
/// The block runs on tiles of [`TILE`] time steps: both convolutions, the
/// shortcut, the sum and the pooling of a tile stay in cache, where whole
/// planes (60+ MB in the first block) would not.
struct ResidualBlock {
    /// `conv1` with `bn2` folded in (SELU after).
    conv1: Conv,
    conv2: Conv,
    downsample: Option<Conv>,
}

/// Time steps per tile (a multiple of the pooling width, 3).
const TILE: usize = 96;

impl ResidualBlock {
    fn forward(
        &self,
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let cout = self.conv1.linear.cout;
        let out_w = w / 3;
        let used = out_w * 3;
        let mut out = vec![0f32; cout * h * out_w];
        let mut tile = Vec::new();
        for start in (0..used).step_by(TILE) {
            let t = TILE.min(used - start);
            // Input columns start-2 .. start+t+2: two convolutions deep.
            tile.clear();
            gather_columns(&mut tile, x, w, start as isize - 2, t + 4);
            let (mut y, y_h) = self.conv1.tile(&tile, (cin, h, t + 4), 0, t + 2)?;
            selu_in_place(&mut y);
            // conv2 zero-pads conv1's output, so its columns outside the
            // signal are zero, not conv1 of zero-padded input.
            for (j, g) in (start as isize - 1..).take(t + 2).enumerate() {
                if g < 0 || g >= w as isize {
                    y.iter_mut().skip(j).step_by(t + 2).for_each(|v| *v = 0.0);
                }
            }
            let (z, _) = self.conv2.tile(&y, (cout, y_h, t + 2), 0, t)?;
            let identity = match &self.downsample {
                Some(conv) => conv.tile(&tile, (cin, h, t + 4), 1, t)?.0,
                None => {
                    let mut id = Vec::with_capacity(cin * h * t);
                    gather_columns(&mut id, &tile, t + 4, 2, t);
                    id
                }
            };
            // Residual sum and (1, 3) max-pool over time.
            for (r, (row, id)) in z.chunks_exact(t).zip(identity.chunks_exact(t)).enumerate() {
                let dst = &mut out[r * out_w + start / 3..][..t / 3];
                for (o, d) in dst.iter_mut().enumerate() {
                    *d = (0..3)
                        .map(|k| row[3 * o + k] + id[3 * o + k])
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
        }
        Ok((out, h, out_w))
    }
}

/// Sinc front end and residual encoder.
pub(super) struct Encoder {
    filters: Linear,
    first_bn: Affine,
    blocks: Vec<ResidualBlock>,
}

impl Encoder {
    pub(super) fn load(w: &Weights, dev: &Device) -> Result<Self, ModelError> {
        let filters = Linear::from_matrix(sinc_filters(), SINC_BANDS, dev)?;
        let mut blocks = Vec::new();
        for i in 0..6 {
            let p = format!("encoder.{i}.0");
            let downsample = if w.contains_key(&format!("{p}.conv_downsample.weight")) {
                Some(Conv::load(
                    w,
                    &format!("{p}.conv_downsample"),
                    (1, 0),
                    None,
                    dev,
                )?)
            } else {
                None
            };
            let bn2 = Affine::load(w, &format!("{p}.bn2"), true)?;
            blocks.push(ResidualBlock {
                conv1: Conv::load(w, &format!("{p}.conv1"), (2, 1), Some(bn2), dev)?,
                conv2: Conv::load(w, &format!("{p}.conv2"), (2, 0), None, dev)?,
                downsample,
            });
        }
        Ok(Self {
            filters,
            first_bn: Affine::load(w, "first_bn", true)?,
            blocks,
        })
    }

    /// 64,600 samples → `[64][23][29]` (channels, bands, time).
    pub(super) fn forward(
        &self,
        samples: &[f32],
    ) -> Result<(Vec<f32>, usize, usize, usize), ModelError> {
        let (mut x, mut h, mut w) = self.front_end(samples)?;
        let mut c = 1;
        for block in &self.blocks {
            let (y, out_h, out_w) = block.forward(&x, c, h, w)?;
            (x, h, w, c) = (y, out_h, out_w, block.conv1.linear.cout);
        }
        Ok((x, c, h, w))
    }

    /// Sinc filtering, `|x|`, 3x3 max-pool, batch-norm and SELU: `[bands/3][time/3]`.
    fn front_end(&self, samples: &[f32]) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let filtered = samples.len() + 1 - SINC_TAPS;
        let (h, w) = (SINC_BANDS / 3, filtered / 3);
        let mut out = vec![0f32; h * w];
        let mut start = 0;
        while start < 3 * w {
            let len = SINC_CHUNK.min(3 * w - start);
            let input = &samples[start..start + len + SINC_TAPS - 1];
            let (cols, n) = im2col_1d(input, 1, input.len(), SINC_TAPS, 0, 1, 1);
            let y = self.filters.apply(cols, n)?;
            for band in 0..h {
                for o in 0..len / 3 {
                    let mut m = 0f32;
                    for r in 0..3 {
                        let row = &y[(3 * band + r) * n..];
                        for k in 0..3 {
                            m = m.max(row[3 * o + k].abs());
                        }
                    }
                    out[band * w + start / 3 + o] = m;
                }
            }
            start += len;
        }
        let (scale, shift) = (self.first_bn.scale[0], self.first_bn.shift[0]);
        out.iter_mut().for_each(|v| *v = *v * scale + shift);
        selu_in_place(&mut out);
        Ok((out, h, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinc_filters_are_symmetric_band_passes_covering_the_spectrum() {
        let filters = sinc_filters();
        assert_eq!(filters.len(), SINC_BANDS * SINC_TAPS);
        for band in filters.chunks_exact(SINC_TAPS) {
            for n in 0..SINC_TAPS / 2 {
                assert!((band[n] - band[SINC_TAPS - 1 - n]).abs() < 1e-7);
            }
        }
        // The bands tile 0..Nyquist: their sum is a unit impulse (times the
        // window) apart from the band edges' ripple, so its centre tap is ~1.
        let centre: f32 = filters
            .chunks_exact(SINC_TAPS)
            .map(|b| b[SINC_TAPS / 2])
            .sum();
        assert!((centre - 1.0).abs() < 1e-3, "centre tap sum {centre}");
    }
}
