//! Matrix products in bfloat16 on AVX-512 (`avx512_bf16`): weights and
//! activations are rounded to bfloat16 (round to nearest even), products
//! accumulate in f32 (`vdpbf16ps`, two multiply-adds per f32 lane). Twice the
//! multiply-adds per instruction of an f32 FMA, for 8 bits of mantissa in the
//! inputs; the parity tests bound what that costs the embeddings.
//!
//! Layout: `out[m][n] = sum_k w[m][k] * cols[k][n]`, all row-major, the shape
//! of a convolution over channel-major activations. Weights are packed once,
//! in blocks of [`MR`] rows holding each row's `(k, k+1)` pair as one 32-bit
//! word; activations are packed per call, one panel of [`NR`] columns at a
//! time, each word a `(k, k+1)` pair of one column, so one broadcast weight
//! pair times one panel vector is one `vdpbf16ps`. The activations come from
//! a [`Columns`] source, so a convolution's patches are gathered straight
//! into the panel instead of through a full patch matrix in memory.

// The SIMD intrinsics need `unsafe` (target features, raw loads and stores);
// it stays inside this module, behind the bounds checks of `matmul`.
#![allow(unsafe_code)]

use super::columns::Columns;

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_add_ps, _mm512_cvtne2ps_pbh, _mm512_dpbf16_ps,
    _mm512_loadu_si512, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps,
    _mm512_permutexvar_epi16, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_si512,
};

/// Weight rows per block (one broadcast each).
const MR: usize = 8;
/// Columns per panel: three 16-lane vectors.
const NR: usize = 48;
const VECS: usize = NR / 16;

/// True when this CPU runs the bfloat16 kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}

/// Rounds to the nearest bfloat16, ties to even (what `vcvtne2ps2bf16` does
/// for finite values).
pub fn round_bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        // Quiet, sign and payload top kept, as the instruction does.
        return (b >> 16) as u16 | 0x40;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A `[m][k]` weight matrix packed for [`PackedWeights::matmul`].
pub struct PackedWeights {
    m: usize,
    k: usize,
    /// `[m / MR][k / 2][MR]` pairs; rows past `m` and the odd `k` are zero.
    words: Vec<u32>,
}

impl PackedWeights {
    /// Packs a row-major `[m][k]` matrix.
    pub fn pack(w: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(w.len(), m * k, "weight shape");
        let pairs = k.div_ceil(2);
        let blocks = m.div_ceil(MR);
        let mut words = vec![0u32; blocks * pairs * MR];
        for row in 0..m {
            let (block, r) = (row / MR, row % MR);
            for p in 0..pairs {
                let lo = round_bf16_bits(w[row * k + 2 * p]);
                let hi = if 2 * p + 1 < k {
                    round_bf16_bits(w[row * k + 2 * p + 1])
                } else {
                    0
                };
                words[(block * pairs + p) * MR + r] = u32::from(lo) | (u32::from(hi) << 16);
            }
        }
        Self { m, k, words }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// `out = relu?(self @ cols + bias + residual)`, `cols` `[k][n]`,
    /// `residual` and the result `[m][n]`.
    ///
    /// # Panics
    /// When the shapes disagree, or on a CPU without the kernels
    /// ([`supported`]): callers check once when they pack.
    pub fn matmul(
        &self,
        cols: &impl Columns,
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f32> {
        assert!(supported(), "bfloat16 kernels need avx512_bf16");
        let n = cols.width();
        assert_eq!(cols.depth(), self.k, "activation shape");
        assert!(bias.is_none_or(|b| b.len() == self.m), "bias length");
        assert!(
            residual.is_none_or(|r| r.len() == self.m * n),
            "residual shape"
        );
        let mut out = vec![0f32; self.m * n];
        // SAFETY: the features were checked above; every pointer offset below
        // stays inside the buffers sized here and in `pack`.
        unsafe { self.matmul_avx512(cols, n, bias, residual, relu, &mut out) };
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn matmul_avx512(
        &self,
        cols: &impl Columns,
        n: usize,
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let pairs = self.k.div_ceil(2);
        let mut panel = vec![0u32; pairs * NR];
        for n0 in (0..n).step_by(NR) {
            let width = NR.min(n - n0);
            unsafe { pack_panel(cols, self.k, n0, width, &mut panel) };
            for block in 0..self.m.div_ceil(MR) {
                let a = &self.words[block * pairs * MR..][..pairs * MR];
                let acc = unsafe { micro_kernel(a, &panel, pairs) };
                let rows = MR.min(self.m - block * MR);
                for (r, lanes) in acc.iter().enumerate().take(rows) {
                    let row = block * MR + r;
                    let add = bias.map_or(0.0, |b| b[row]);
                    for (v, lane) in lanes.iter().enumerate() {
                        let col = n0 + 16 * v;
                        if col >= n0 + width {
                            break;
                        }
                        let live = (n0 + width - col).min(16);
                        let mask = if live == 16 {
                            u16::MAX
                        } else {
                            (1u16 << live) - 1
                        };
                        let at = row * n + col;
                        let mut y = _mm512_add_ps(*lane, _mm512_set1_ps(add));
                        if let Some(res) = residual {
                            let r = unsafe { _mm512_maskz_loadu_ps(mask, res.as_ptr().add(at)) };
                            y = _mm512_add_ps(y, r);
                        }
                        if relu {
                            y = _mm512_max_ps(y, _mm512_setzero_ps());
                        }
                        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, y) };
                    }
                }
            }
        }
    }
}

/// Columns `n0 .. n0 + width` of `cols` as `[k / 2][NR]` pairs, zero past
/// `width` and past `k`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_panel(cols: &impl Columns, k: usize, n0: usize, width: usize, panel: &mut [u32]) {
    // vcvtne2ps2bf16 puts row k in words 0..16 and row k+1 in 16..32 of the
    // result; this permutation interleaves them column by column.
    let mut index = [0u16; 32];
    for (i, v) in index.iter_mut().enumerate() {
        *v = if i % 2 == 0 {
            (i / 2) as u16
        } else {
            16 + (i / 2) as u16
        };
    }
    let interleave = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
    let mut scratch = [[0f32; NR]; 2];
    let zeros = [0f32; NR];
    for p in 0..k.div_ceil(2) {
        let [lo_scratch, hi_scratch] = &mut scratch;
        let lo = cols.segment(2 * p, n0, &mut lo_scratch[..width]);
        let hi = if 2 * p + 1 < k {
            cols.segment(2 * p + 1, n0, &mut hi_scratch[..width])
        } else {
            &zeros[..width]
        };
        // The loads below read `width` values through these pointers; a
        // source is safe code, so its answer is checked, not trusted.
        assert!(
            lo.len() == width && hi.len() == width,
            "column segment length"
        );
        for v in 0..VECS {
            // Lanes past `width` are zero (masked loads read nothing there).
            let live = width.saturating_sub(16 * v).min(16);
            let mask = if live == 16 {
                u16::MAX
            } else {
                (1u16 << live) - 1
            };
            let (lo, hi) = if live == 0 {
                (_mm512_setzero_ps(), _mm512_setzero_ps())
            } else {
                unsafe {
                    (
                        _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(16 * v)),
                        _mm512_maskz_loadu_ps(mask, hi.as_ptr().add(16 * v)),
                    )
                }
            };
            let both: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) };
            let pairs = _mm512_permutexvar_epi16(interleave, both);
            let dst = unsafe { panel.as_mut_ptr().add(p * NR + 16 * v) };
            unsafe { _mm512_storeu_si512(dst.cast(), pairs) };
        }
    }
}

/// `MR x NR` block of `a @ panel` over all `pairs`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn micro_kernel(a: &[u32], panel: &[u32], pairs: usize) -> [[__m512; VECS]; MR] {
    let mut acc = [[_mm512_setzero_ps(); VECS]; MR];
    for p in 0..pairs {
        let b: [__m512bh; VECS] = std::array::from_fn(|v| unsafe {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                panel.as_ptr().add(p * NR + 16 * v).cast(),
            ))
        });
        for (r, row) in acc.iter_mut().enumerate() {
            let w: __m512bh = unsafe {
                std::mem::transmute(_mm512_set1_epi32(*a.get_unchecked(p * MR + r) as i32))
            };
            for (v, lane) in row.iter_mut().enumerate() {
                *lane = _mm512_dpbf16_ps(*lane, w, b[v]);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::columns::Dense;
    use crate::model::columns::tests::values;

    fn reference(w: &[f32], cols: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let round = |v: f32| f32::from_bits(u32::from(round_bf16_bits(v)) << 16);
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|x| f64::from(round(w[i * k + x])) * f64::from(round(cols[x * n + j])))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(round_bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(round_bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(round_bf16_bits(-2.5), 0xc020);
        assert_eq!(round_bf16_bits(f32::INFINITY), 0x7f80);
        // NaNs stay NaN (quiet), whatever their payload.
        for bits in [0x7f80_0001u32, 0x7fff_ffff, 0xffff_ffff] {
            let back = f32::from_bits(u32::from(round_bf16_bits(f32::from_bits(bits))) << 16);
            assert!(back.is_nan(), "{bits:#x}");
        }
    }

    #[test]
    fn products_match_rounded_inputs_with_every_edge() {
        if !supported() {
            eprintln!("no avx512_bf16 on this CPU: the f32 path serves it");
            return;
        }
        // Odd k, rows not a multiple of MR, columns not a multiple of NR or 16.
        for (m, k, n) in [
            (8, 2, 48),
            (70, 129, 37),
            (32, 288, 100),
            (3, 5, 1),
            (16, 64, 97),
        ] {
            let w = values(m * k, 1);
            let cols = values(k * n, 2);
            let bias = values(m, 3);
            let residual = values(m * n, 4);
            let got = PackedWeights::pack(&w, m, k).matmul(
                &Dense { values: &cols, n },
                Some(&bias),
                Some(&residual),
                true,
            );
            let mut want = reference(&w, &cols, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let v = &mut want[i * n + j];
                    *v = (*v + bias[i] + residual[i * n + j]).max(0.0);
                }
            }
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{m}x{k}x{n} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
