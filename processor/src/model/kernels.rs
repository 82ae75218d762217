//! Slice kernels around the matrix products: patch extraction (im2col) and the
//! fused epilogues (bias, residual, ReLU) that keep activations to one pass.
//! Activations are channel-major: `[channels][height][width]` or `[channels][time]`.

/// 3x3 patches with padding 1 and stride `(stride_h, 1)`, as a
/// `[cin * 9][out_h * w]` matrix matching a `[cout][cin][3][3]` kernel.
pub fn im2col_3x3(x: &[f32], cin: usize, h: usize, w: usize, stride_h: usize) -> (Vec<f32>, usize) {
    let out_h = (h + 2 - 3) / stride_h + 1;
    let mut cols = Vec::with_capacity(cin * 9 * out_h * w);
    for ci in 0..cin {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for kh in 0..3 {
            for kw in 0..3 {
                for ho in 0..out_h {
                    let hi = (ho * stride_h + kh) as isize - 1;
                    if hi < 0 || hi as usize >= h {
                        cols.resize(cols.len() + w, 0.0);
                        continue;
                    }
                    let src = &plane[hi as usize * w..][..w];
                    match kw {
                        0 => {
                            cols.push(0.0);
                            cols.extend_from_slice(&src[..w - 1]);
                        }
                        1 => cols.extend_from_slice(src),
                        _ => {
                            cols.extend_from_slice(&src[1..]);
                            cols.push(0.0);
                        }
                    }
                }
            }
        }
    }
    (cols, out_h)
}

/// Patches of a `kh x 3` kernel over a tile of `[cin][h][w]` that already
/// holds its neighbours' columns: no width padding, output column `o` reads
/// input columns `offset + o .. offset + o + 3`; `pad_h` zero rows above and
/// below. A `[cin * kh * 3][out_h * out_w]` matrix.
#[allow(clippy::too_many_arguments)]
pub fn im2col_tile_kx3(
    x: &[f32],
    (cin, h, w): (usize, usize, usize),
    kh: usize,
    pad_h: usize,
    offset: usize,
    out_w: usize,
) -> (Vec<f32>, usize) {
    let out_h = h + 2 * pad_h + 1 - kh;
    let mut cols = Vec::with_capacity(cin * kh * 3 * out_h * out_w);
    for ci in 0..cin {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for k in 0..kh {
            for kw in 0..3 {
                for ho in 0..out_h {
                    let hi = (ho + k) as isize - pad_h as isize;
                    if hi < 0 || hi as usize >= h {
                        cols.resize(cols.len() + out_w, 0.0);
                    } else {
                        cols.extend_from_slice(&plane[hi as usize * w + offset + kw..][..out_w]);
                    }
                }
            }
        }
    }
    (cols, out_h)
}

/// Dot product in 16 running sums: the compiler keeps them in one vector
/// register (a single running sum is one dependent add per element, which
/// it may not reorder).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
    let mut lanes = [0f32; 16];
    let (a_tail, b_tail) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_tail
        .remainder()
        .iter()
        .zip(b_tail.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_tail.zip(b_tail) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_SCALE: f32 = 1.050_701;

/// SELU in place. `exp` is a Cephes-style polynomial the compiler can
/// vectorise (a libm call per element cost more than the convolutions'
/// epilogue should); absolute error below 1e-7 against `f32::exp_m1`.
pub fn selu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        let neg = v.min(0.0);
        *v = SELU_SCALE * (v.max(0.0) + SELU_ALPHA * (exp_non_positive(neg) - 1.0));
    }
}

/// `e^x` for `x <= 0` (exactly 1 at 0), branch-free.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Every `stride_h`-th row of each channel plane (the input of a strided 1x1 conv).
pub fn subsample_rows(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    stride_h: usize,
) -> (Vec<f32>, usize) {
    let out_h = (h - 1) / stride_h + 1;
    let mut out = Vec::with_capacity(c * out_h * w);
    for ci in 0..c {
        for ho in 0..out_h {
            out.extend_from_slice(&x[(ci * h + ho * stride_h) * w..][..w]);
        }
    }
    (out, out_h)
}

/// 1-D patches for a `[cout][cin][k]` kernel with the given padding, stride and
/// dilation, as a `[cin * k][out_t]` matrix.
pub fn im2col_1d(
    x: &[f32],
    cin: usize,
    t: usize,
    k: usize,
    pad: usize,
    stride: usize,
    dilation: usize,
) -> (Vec<f32>, usize) {
    let out_t = (t + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
    let mut cols = vec![0f32; cin * k * out_t];
    for ci in 0..cin {
        let src = &x[ci * t..(ci + 1) * t];
        for j in 0..k {
            let row = &mut cols[(ci * k + j) * out_t..][..out_t];
            let shift = (j * dilation) as isize - pad as isize;
            if stride == 1 {
                // Contiguous copy of the valid range.
                let lo = (-shift).max(0) as usize;
                let hi = ((t as isize - shift).min(out_t as isize)).max(lo as isize) as usize;
                if hi > lo {
                    let s0 = (lo as isize + shift) as usize;
                    row[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                }
            } else {
                for (o, dst) in row.iter_mut().enumerate() {
                    let i = (o * stride) as isize + shift;
                    if i >= 0 && (i as usize) < t {
                        *dst = src[i as usize];
                    }
                }
            }
        }
    }
    (cols, out_t)
}

/// `out[c][i] = max(0, x[c][i] * scale[c] + shift[c])`: an inference-mode
/// batch-norm followed by ReLU, in one pass.
pub fn affine_relu(x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let len = x.len() / scale.len();
    let mut out = Vec::with_capacity(x.len());
    for (c, row) in x.chunks_exact(len).enumerate() {
        let (s, b) = (scale[c], shift[c]);
        out.extend(row.iter().map(|v| (v * s + b).max(0.0)));
    }
    out
}

/// Epilogue of a convolution: adds a per-channel bias, an optional residual,
/// then an optional ReLU, writing a new activation in one pass.
pub fn bias_residual_relu(
    y: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    relu: bool,
    channels: usize,
) -> Vec<f32> {
    let len = y.len() / channels;
    let mut out = Vec::with_capacity(y.len());
    for (c, row) in y.chunks_exact(len).enumerate() {
        let b = bias.map_or(0.0, |b| b[c]);
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        match residual {
            Some(r) => out.extend(
                row.iter()
                    .zip(&r[c * len..(c + 1) * len])
                    .map(|(v, r)| (v + b + r).max(floor)),
            ),
            None => out.extend(row.iter().map(|v| (v + b).max(floor))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 1-D convolution for checking the patch layout.
    fn conv1d_direct(
        x: &[f32],
        w: &[f32],
        (cin, cout, t): (usize, usize, usize),
        (k, pad, stride, dilation): (usize, usize, usize, usize),
    ) -> Vec<f32> {
        let out_t = (t + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
        let mut out = vec![0f32; cout * out_t];
        for co in 0..cout {
            for o in 0..out_t {
                let mut acc = 0f32;
                for ci in 0..cin {
                    for j in 0..k {
                        let i = (o * stride + j * dilation) as isize - pad as isize;
                        if i >= 0 && (i as usize) < t {
                            acc += w[(co * cin + ci) * k + j] * x[ci * t + i as usize];
                        }
                    }
                }
                out[co * out_t + o] = acc;
            }
        }
        out
    }

    fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    out[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        out
    }

    #[test]
    fn im2col_1d_matches_direct_convolution() {
        let (cin, cout, t) = (3, 2, 11);
        let x: Vec<f32> = (0..cin * t).map(|i| (i as f32 * 0.37).sin()).collect();
        for (k, pad, stride, dilation) in [(3, 1, 1, 1), (3, 2, 1, 2), (5, 2, 2, 1), (1, 0, 1, 1)] {
            let w: Vec<f32> = (0..cout * cin * k)
                .map(|i| (i as f32 * 0.11).cos())
                .collect();
            let (cols, out_t) = im2col_1d(&x, cin, t, k, pad, stride, dilation);
            let got = matmul(&w, &cols, cout, cin * k, out_t);
            let want = conv1d_direct(&x, &w, (cin, cout, t), (k, pad, stride, dilation));
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-5, "k{k} p{pad} s{stride} d{dilation}");
            }
        }
    }

    #[test]
    fn dot_matches_a_double_precision_sum() {
        for len in [0, 1, 15, 16, 17, 128, 250] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let got = dot(&a, &b);
            assert!(
                (f64::from(got) - want).abs() < 1e-4,
                "{len}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn selu_matches_the_definition() {
        let xs: Vec<f32> = (-2000..=2000)
            .map(|i| i as f32 * 0.01)
            .chain([-90.0, -1e-9, 0.0])
            .collect();
        let mut got = xs.clone();
        selu_in_place(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = if *x > 0.0 {
                f64::from(SELU_SCALE) * f64::from(*x)
            } else {
                f64::from(SELU_SCALE) * f64::from(SELU_ALPHA) * f64::from(*x).exp_m1()
            };
            assert!(
                (f64::from(*g) - want).abs() <= 2e-7 * want.abs().max(1.0),
                "selu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn tile_patches_match_direct_convolution() {
        let (cin, h, w, kh) = (2, 4, 9, 2);
        let x: Vec<f32> = (0..cin * h * w).map(|i| (i as f32 * 0.31).sin()).collect();
        let kernel: Vec<f32> = (0..cin * kh * 3).map(|i| (i as f32 * 0.7).cos()).collect();
        for (pad_h, offset, out_w) in [(1, 0, 7), (0, 1, 6), (0, 0, 7)] {
            let (cols, out_h) = im2col_tile_kx3(&x, (cin, h, w), kh, pad_h, offset, out_w);
            assert_eq!(out_h, h + 2 * pad_h + 1 - kh);
            let got = matmul(&kernel, &cols, 1, cin * kh * 3, out_h * out_w);
            for ho in 0..out_h {
                for wo in 0..out_w {
                    let mut acc = 0f32;
                    for ci in 0..cin {
                        for k in 0..kh {
                            let hi = (ho + k) as isize - pad_h as isize;
                            if hi < 0 || hi as usize >= h {
                                continue;
                            }
                            for kw in 0..3 {
                                acc += kernel[(ci * kh + k) * 3 + kw]
                                    * x[(ci * h + hi as usize) * w + offset + wo + kw];
                            }
                        }
                    }
                    assert!((got[ho * out_w + wo] - acc).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn im2col_3x3_matches_direct_convolution() {
        let (cin, h, w) = (2, 5, 4);
        let x: Vec<f32> = (0..cin * h * w).map(|i| (i as f32 * 0.23).sin()).collect();
        let kernel: Vec<f32> = (0..cin * 9).map(|i| (i as f32 * 0.5).cos()).collect();
        for stride_h in [1, 2] {
            let (cols, out_h) = im2col_3x3(&x, cin, h, w, stride_h);
            let got = matmul(&kernel, &cols, 1, cin * 9, out_h * w);
            for ho in 0..out_h {
                for wo in 0..w {
                    let mut acc = 0f32;
                    for ci in 0..cin {
                        for kh in 0..3 {
                            for kw in 0..3 {
                                let hi = (ho * stride_h + kh) as isize - 1;
                                let wi = wo as isize + kw as isize - 1;
                                if hi >= 0 && (hi as usize) < h && wi >= 0 && (wi as usize) < w {
                                    acc += kernel[ci * 9 + kh * 3 + kw]
                                        * x[(ci * h + hi as usize) * w + wi as usize];
                                }
                            }
                        }
                    }
                    assert!((got[ho * w + wo] - acc).abs() < 1e-5);
                }
            }
        }
    }
}
