//! The right-hand side of a layer's product, `[k][n]`, described rather than
//! built: a convolution's patches, or a batch-norm + ReLU of the activations.
//! The bfloat16 kernels read it one short row segment at a time, straight
//! into their panels (most segments are borrowed from the input as they
//! are); the f32 path builds the whole matrix with [`Columns::materialise`]
//! (the plain builders of `kernels`, which the segments are tested against).

use super::kernels::{affine_relu, im2col_1d, im2col_3x3};

/// A `[k][n]` matrix read one row segment at a time.
pub trait Columns {
    /// Rows (`k`).
    fn depth(&self) -> usize;
    /// Columns (`n`).
    fn width(&self) -> usize;
    /// Row `k`, columns `n0 .. n0 + len`, when it lies in the source as it
    /// is (no padding, no arithmetic).
    fn borrow(&self, k: usize, n0: usize, len: usize) -> Option<&[f32]>;
    /// Row `k`, columns `n0 .. n0 + out.len()`, written into `out`.
    fn write(&self, k: usize, n0: usize, out: &mut [f32]);

    /// Row `k`, columns `n0 .. n0 + scratch.len()`: borrowed where it can
    /// be, else written into `scratch`.
    fn segment<'a>(&'a self, k: usize, n0: usize, scratch: &'a mut [f32]) -> &'a [f32] {
        match self.borrow(k, n0, scratch.len()) {
            Some(row) => row,
            None => {
                self.write(k, n0, scratch);
                scratch
            }
        }
    }

    /// The whole matrix, row-major (each source builds it with its plain
    /// builder in `kernels`).
    fn materialise(&self) -> Vec<f32>;
}

/// A matrix already in memory, row-major.
pub struct Dense<'a> {
    /// `[k][n]` values.
    pub values: &'a [f32],
    /// Columns.
    pub n: usize,
}

impl Columns for Dense<'_> {
    fn depth(&self) -> usize {
        assert_eq!(self.values.len() % self.n, 0, "dense matrix shape");
        self.values.len() / self.n
    }

    fn width(&self) -> usize {
        self.n
    }

    fn borrow(&self, k: usize, n0: usize, len: usize) -> Option<&[f32]> {
        Some(&self.values[k * self.n + n0..][..len])
    }

    fn write(&self, k: usize, n0: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.values[k * self.n + n0..][..out.len()]);
    }

    fn materialise(&self) -> Vec<f32> {
        self.values.to_vec()
    }
}

/// `max(0, x[c][i] * scale[c] + shift[c])`: an inference-mode batch-norm and
/// ReLU in front of a 1x1 convolution.
pub struct AffineRelu<'a> {
    /// `[c][n]` activations.
    pub x: &'a [f32],
    /// Time steps.
    pub n: usize,
    /// Per-channel scale and shift.
    pub scale: &'a [f32],
    /// See `scale`.
    pub shift: &'a [f32],
}

impl Columns for AffineRelu<'_> {
    fn depth(&self) -> usize {
        self.x.len() / self.n
    }

    fn width(&self) -> usize {
        self.n
    }

    fn borrow(&self, _: usize, _: usize, _: usize) -> Option<&[f32]> {
        None
    }

    fn materialise(&self) -> Vec<f32> {
        affine_relu(self.x, self.scale, self.shift)
    }

    fn write(&self, k: usize, n0: usize, out: &mut [f32]) {
        let (s, b) = (self.scale[k], self.shift[k]);
        let src = &self.x[k * self.n + n0..][..out.len()];
        for (d, v) in out.iter_mut().zip(src) {
            *d = (v * s + b).max(0.0);
        }
    }
}

/// 1-D patches of `[cin][t]` for a `k`-tap kernel, stride 1, dilation `d`,
/// padding `d * (k - 1) / 2` (same length out): a `[cin * k][t]` matrix.
pub struct Taps1d<'a> {
    /// `[cin][t]` activations.
    pub x: &'a [f32],
    /// Time steps.
    pub t: usize,
    /// Kernel taps (odd).
    pub taps: usize,
    /// Dilation.
    pub dilation: usize,
}

impl Taps1d<'_> {
    /// Input row of patch row `k`, and the input column of output column 0.
    fn source(&self, k: usize) -> (&[f32], isize) {
        let (ci, j) = (k / self.taps, k % self.taps);
        let shift = (j * self.dilation) as isize - (self.dilation * (self.taps - 1) / 2) as isize;
        (&self.x[ci * self.t..][..self.t], shift)
    }
}

impl Columns for Taps1d<'_> {
    fn depth(&self) -> usize {
        self.x.len() / self.t * self.taps
    }

    fn width(&self) -> usize {
        self.t
    }

    fn borrow(&self, k: usize, n0: usize, len: usize) -> Option<&[f32]> {
        let (row, shift) = self.source(k);
        inside(row, n0 as isize + shift, len)
    }

    fn write(&self, k: usize, n0: usize, out: &mut [f32]) {
        let (row, shift) = self.source(k);
        write_shifted(row, n0 as isize + shift, out);
    }

    fn materialise(&self) -> Vec<f32> {
        let pad = self.dilation * (self.taps - 1) / 2;
        let cin = self.x.len() / self.t;
        im2col_1d(self.x, cin, self.t, self.taps, pad, 1, self.dilation).0
    }
}

/// The 3x3 patches (padding 1, stride `(stride_h, 1)`) of `[cin][h][w]`, as
/// the `[cin * 9][out_h * w]` matrix `kernels::im2col_3x3` builds.
pub struct Patches3x3<'a> {
    /// The input planes.
    pub x: &'a [f32],
    /// Input channels, height and width.
    pub shape: (usize, usize, usize),
    /// Stride over the height.
    pub stride_h: usize,
}

impl Patches3x3<'_> {
    /// Output rows.
    pub fn out_h(&self) -> usize {
        (self.shape.1 + 2 - 3) / self.stride_h + 1
    }

    /// Output column `j` of patch row `k` reads input row
    /// `ho * stride + kh - 1` (None: padding), column `wo + kw - 1`, where
    /// `(ho, wo) = (j / w, j % w)`; this returns that row and column.
    fn source(&self, k: usize, j: usize) -> (Option<&[f32]>, isize) {
        let (_, h, w) = self.shape;
        let (ci, kh, kw) = (k / 9, k % 9 / 3, k % 3);
        let (ho, wo) = (j / w, j % w);
        let hi = (ho * self.stride_h + kh) as isize - 1;
        let row =
            (hi >= 0 && (hi as usize) < h).then(|| &self.x[(ci * h + hi as usize) * w..][..w]);
        (row, (wo + kw) as isize - 1)
    }
}

impl Columns for Patches3x3<'_> {
    fn depth(&self) -> usize {
        self.shape.0 * 9
    }

    fn width(&self) -> usize {
        self.out_h() * self.shape.2
    }

    fn borrow(&self, k: usize, n0: usize, len: usize) -> Option<&[f32]> {
        let w = self.shape.2;
        if n0 % w + len > w {
            return None;
        }
        match self.source(k, n0) {
            (Some(row), first) => inside(row, first, len),
            (None, _) => None,
        }
    }

    fn write(&self, k: usize, n0: usize, out: &mut [f32]) {
        let w = self.shape.2;
        let mut done = 0;
        while done < out.len() {
            let j = n0 + done;
            let run = (w - j % w).min(out.len() - done);
            let part = &mut out[done..done + run];
            match self.source(k, j) {
                (Some(row), first) => write_shifted(row, first, part),
                (None, _) => part.fill(0.0),
            }
            done += run;
        }
    }

    fn materialise(&self) -> Vec<f32> {
        let (cin, h, w) = self.shape;
        im2col_3x3(self.x, cin, h, w, self.stride_h).0
    }
}

/// `row[first .. first + len]` when it lies inside the row.
fn inside(row: &[f32], first: isize, len: usize) -> Option<&[f32]> {
    (first >= 0 && first as usize + len <= row.len()).then(|| &row[first as usize..][..len])
}

/// `out = row[first .. first + out.len()]`, zero outside the row.
fn write_shifted(row: &[f32], first: isize, out: &mut [f32]) {
    let len = out.len() as isize;
    let lo = first.clamp(0, row.len() as isize);
    let end = (first + len).clamp(lo, row.len() as isize);
    let before = (lo - first).clamp(0, len) as usize;
    let (lo, end) = (lo as usize, end as usize);
    out.fill(0.0);
    out[before..before + end - lo].copy_from_slice(&row[lo..end]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Seeded values in [-0.5, 0.5) for kernel tests.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every segment a panel reader asks for (starts mid-row, crossing rows,
    /// short tails) equals the same part of the whole matrix.
    fn assert_segments(cols: &impl Columns, want: &[f32], what: &str) {
        let (k, n) = (cols.depth(), cols.width());
        assert_eq!(want.len(), k * n, "{what}: shape");
        let mut written = vec![f32::NAN; n];
        for row in 0..k {
            cols.write(row, 0, &mut written);
            assert_eq!(
                written,
                want[row * n..][..n],
                "{what}: row {row} written whole"
            );
        }
        for row in 0..k {
            for n0 in (0..n).step_by(7) {
                for len in [1, 16, 48] {
                    let len = len.min(n - n0);
                    let want = &want[row * n + n0..][..len];
                    let mut scratch = vec![f32::NAN; len];
                    let got = cols.segment(row, n0, &mut scratch);
                    assert_eq!(got, want, "{what}: k {row} n0 {n0}");
                    // Borrowing is an optimisation, never a different answer.
                    if let Some(borrowed) = cols.borrow(row, n0, len) {
                        assert_eq!(borrowed, want, "{what}: borrowed k {row} n0 {n0}");
                    }
                }
            }
        }
    }

    #[test]
    fn patches_3x3_are_the_patch_matrix() {
        for (cin, h, w, stride) in [(2, 5, 7, 1), (3, 9, 50, 2), (1, 4, 48, 1), (2, 7, 100, 2)] {
            let x = values(cin * h * w, 5);
            let (want, out_h) = im2col_3x3(&x, cin, h, w, stride);
            let patches = Patches3x3 {
                x: &x,
                shape: (cin, h, w),
                stride_h: stride,
            };
            assert_eq!(patches.out_h(), out_h);
            assert_segments(&patches, &want, &format!("3x3 {cin}x{h}x{w}/{stride}"));
        }
    }

    #[test]
    fn taps_1d_are_the_patch_matrix() {
        for (cin, t, taps, dilation) in [(3, 60, 3, 1), (2, 100, 3, 2), (2, 9, 5, 3)] {
            let x = values(cin * t, 6);
            let pad = dilation * (taps - 1) / 2;
            let (want, out_t) = im2col_1d(&x, cin, t, taps, pad, 1, dilation);
            assert_eq!(out_t, t);
            let cols = Taps1d {
                x: &x,
                t,
                taps,
                dilation,
            };
            assert_segments(&cols, &want, &format!("1d {cin}x{t} k{taps} d{dilation}"));
        }
    }

    #[test]
    fn affine_relu_is_the_batch_norm_and_relu() {
        let x = values(4 * 70, 7);
        let (scale, shift) = (values(4, 8), values(4, 9));
        let want = affine_relu(&x, &scale, &shift);
        let cols = AffineRelu {
            x: &x,
            n: 70,
            scale: &scale,
            shift: &shift,
        };
        assert_segments(&cols, &want, "affine relu");
        assert_segments(&Dense { values: &x, n: 70 }, &x, "dense");
    }
}
