//! CAM++ (3D-Speaker, "campplus_cn_en_common", 192-d) on candle.
//!
//! Batch-norms that follow a convolution are folded into its weights at load
//! time; those that precede one (pre-activation) become a per-channel affine
//! fused with the ReLU. Matrix products run on candle; patch extraction and the
//! epilogues are slice kernels (see `kernels`).

use std::path::Path;

use candle_core::Device;

use super::columns::{AffineRelu, Taps1d};
use super::kernels::{im2col_1d, subsample_rows};
use super::layers::{Affine, Linear, Weights};
use super::{Matmul, ModelError};
use crate::audio::fbank::NUM_MEL_BINS;

/// Segment length of CAM's context pooling, in frames.
const SEG_LEN: usize = 100;
/// Output dimension.
pub const EMBEDDING_DIM: usize = 192;

struct ResBlock {
    conv1: Linear,
    conv2: Linear,
    shortcut: Option<Linear>,
    stride: usize,
}

struct DenseLayer {
    pre: Affine,
    /// 1x1 bottleneck with the following batch-norm folded in (ReLU after).
    bottleneck: Linear,
    /// Dilated k=3 local convolution.
    local: Linear,
    /// Context attention: 1x1 (bias) → ReLU → 1x1 (bias) → sigmoid.
    attn1: Linear,
    attn2: Linear,
}

struct DenseBlock {
    layers: Vec<DenseLayer>,
    dilation: usize,
    transit_pre: Affine,
    /// Transit 1x1; for the last block the output batch-norm is folded in.
    transit: Linear,
}

/// The CAM++ network with folded weights, ready for inference on the CPU.
pub struct CamPlusPlus {
    head_conv1: Linear,
    head_blocks: Vec<ResBlock>,
    head_conv2: Linear,
    tdnn: Linear,
    blocks: Vec<DenseBlock>,
    dense: Linear,
}

impl CamPlusPlus {
    /// Loads a zip-format PyTorch state dict.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let dev = Device::Cpu;
        let w: Weights = candle_core::pickle::read_all(path)?.into_iter().collect();
        let bn = |p: &str| Affine::load(&w, p, true);
        let head_conv1 = Linear::load(&w, "head.conv1.weight", None, Some(bn("head.bn1")?), &dev)?;
        let mut head_blocks = Vec::new();
        for layer in 1..=2 {
            for i in 0..2 {
                let p = format!("head.layer{layer}.{i}");
                let stride = if i == 0 { 2 } else { 1 };
                let shortcut = if w.contains_key(&format!("{p}.shortcut.0.weight")) {
                    Some(Linear::load(
                        &w,
                        &format!("{p}.shortcut.0.weight"),
                        None,
                        Some(bn(&format!("{p}.shortcut.1"))?),
                        &dev,
                    )?)
                } else {
                    None
                };
                head_blocks.push(ResBlock {
                    conv1: Linear::load(
                        &w,
                        &format!("{p}.conv1.weight"),
                        None,
                        Some(bn(&format!("{p}.bn1"))?),
                        &dev,
                    )?,
                    conv2: Linear::load(
                        &w,
                        &format!("{p}.conv2.weight"),
                        None,
                        Some(bn(&format!("{p}.bn2"))?),
                        &dev,
                    )?,
                    shortcut,
                    stride,
                });
            }
        }
        let head_conv2 = Linear::load(&w, "head.conv2.weight", None, Some(bn("head.bn2")?), &dev)?;
        let tdnn = Linear::load(
            &w,
            "xvector.tdnn.linear.weight",
            None,
            Some(bn("xvector.tdnn.nonlinear.batchnorm")?),
            &dev,
        )?;
        let mut blocks = Vec::new();
        for (b, dilation) in [(1usize, 1usize), (2, 2), (3, 2)] {
            let mut layers = Vec::new();
            for l in 1.. {
                let p = format!("xvector.block{b}.tdnnd{l}");
                if !w.contains_key(&format!("{p}.linear1.weight")) {
                    break;
                }
                layers.push(DenseLayer {
                    pre: bn(&format!("{p}.nonlinear1.batchnorm"))?,
                    bottleneck: Linear::load(
                        &w,
                        &format!("{p}.linear1.weight"),
                        None,
                        Some(bn(&format!("{p}.nonlinear2.batchnorm"))?),
                        &dev,
                    )?,
                    local: Linear::load(
                        &w,
                        &format!("{p}.cam_layer.linear_local.weight"),
                        None,
                        None,
                        &dev,
                    )?,
                    attn1: Linear::load(
                        &w,
                        &format!("{p}.cam_layer.linear1.weight"),
                        Some(&format!("{p}.cam_layer.linear1.bias")),
                        None,
                        &dev,
                    )?,
                    attn2: Linear::load(
                        &w,
                        &format!("{p}.cam_layer.linear2.weight"),
                        Some(&format!("{p}.cam_layer.linear2.bias")),
                        None,
                        &dev,
                    )?,
                });
            }
            let post = if b == 3 {
                Some(bn("xvector.out_nonlinear.batchnorm")?)
            } else {
                None
            };
            blocks.push(DenseBlock {
                layers,
                dilation,
                transit_pre: bn(&format!("xvector.transit{b}.nonlinear.batchnorm"))?,
                transit: Linear::load(
                    &w,
                    &format!("xvector.transit{b}.linear.weight"),
                    None,
                    post,
                    &dev,
                )?,
            });
        }
        let dense = Linear::load(
            &w,
            "xvector.dense.linear.weight",
            None,
            Some(Affine::load(
                &w,
                "xvector.dense.nonlinear.batchnorm",
                false,
            )?),
            &dev,
        )?;
        if dense.cout != EMBEDDING_DIM {
            return Err(ModelError::BadWeights(format!(
                "embedding size {} != {EMBEDDING_DIM}",
                dense.cout
            )));
        }
        Ok(Self {
            head_conv1,
            head_blocks,
            head_conv2,
            tdnn,
            blocks,
            dense,
        })
    }

    /// Chooses the kernels of every layer's products (`matmul` resolved).
    pub(crate) fn set_matmul(&mut self, matmul: Matmul) -> Result<(), ModelError> {
        let mut layers: Vec<&mut Linear> = vec![&mut self.head_conv1, &mut self.head_conv2];
        for block in &mut self.head_blocks {
            layers.extend([&mut block.conv1, &mut block.conv2]);
            layers.extend(block.shortcut.as_mut());
        }
        layers.extend([&mut self.tdnn, &mut self.dense]);
        for block in &mut self.blocks {
            layers.push(&mut block.transit);
            for l in &mut block.layers {
                layers.extend([&mut l.bottleneck, &mut l.local, &mut l.attn1, &mut l.attn2]);
            }
        }
        layers.into_iter().try_for_each(|l| l.set_matmul(matmul))
    }

    /// Embeds mean-normalised features, row-major `[frames][80]`.
    pub fn forward(&self, feats: &[f32]) -> Result<Vec<f32>, ModelError> {
        let t = feats.len() / NUM_MEL_BINS;
        if t < 2 {
            return Err(ModelError::InputTooShort(t));
        }
        // (frames, mel) → one channel plane of (mel, frames).
        let mut x = vec![0f32; feats.len()];
        for (f, row) in feats.chunks_exact(NUM_MEL_BINS).enumerate() {
            for (m, v) in row.iter().enumerate() {
                x[m * t + f] = *v;
            }
        }
        let (x, c, h) = self.head(x, t)?;
        let x = self.xvector(x, c * h, t)?;
        Ok(x)
    }

    fn head(&self, x: Vec<f32>, t: usize) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let mut h = NUM_MEL_BINS;
        let (mut x, _) = self.head_conv1.conv3x3(&x, (1, h, t), 1, None, true)?;
        let mut c = self.head_conv1.cout;
        for block in &self.head_blocks {
            let (y, out_h) = block
                .conv1
                .conv3x3(&x, (c, h, t), block.stride, None, true)?;
            let residual = match &block.shortcut {
                Some(sc) => {
                    let (sub, _) = subsample_rows(&x, c, h, t, block.stride);
                    sc.apply_then(sub, out_h * t, None, false)?
                }
                None => x,
            };
            (x, _) =
                block
                    .conv2
                    .conv3x3(&y, (block.conv1.cout, out_h, t), 1, Some(&residual), true)?;
            c = block.conv2.cout;
            h = out_h;
        }
        let (x, out_h) = self.head_conv2.conv3x3(&x, (c, h, t), 2, None, true)?;
        Ok((x, self.head_conv2.cout, out_h))
    }

    fn xvector(&self, x: Vec<f32>, c: usize, t: usize) -> Result<Vec<f32>, ModelError> {
        let (cols, t) = im2col_1d(&x, c, t, 5, 2, 2, 1);
        let mut x = self.tdnn.apply_then(cols, t, None, true)?;
        let mut c = self.tdnn.cout;
        let last = self.blocks.len() - 1;
        for (b, block) in self.blocks.iter().enumerate() {
            let grown = c + block.layers.iter().map(|l| l.local.cout).sum::<usize>();
            x.reserve(grown * t - x.len());
            for layer in &block.layers {
                // Channel-major layout makes the dense concatenation an append.
                let y = layer.forward(&x, t, block.dilation)?;
                x.extend_from_slice(&y);
            }
            let h = AffineRelu {
                x: &x,
                n: t,
                scale: &block.transit_pre.scale,
                shift: &block.transit_pre.shift,
            };
            // The last transit carries the folded output batch-norm and its ReLU.
            x = block.transit.apply_columns(&h, None, b == last)?;
            c = block.transit.cout;
        }
        let stats = mean_std(&x, c, t);
        let emb = self.dense.apply_then(stats, 1, None, false)?;
        Ok(emb)
    }
}

impl DenseLayer {
    fn forward(&self, x: &[f32], t: usize, dilation: usize) -> Result<Vec<f32>, ModelError> {
        let pre = AffineRelu {
            x,
            n: t,
            scale: &self.pre.scale,
            shift: &self.pre.shift,
        };
        let h = self.bottleneck.apply_columns(&pre, None, true)?;
        let bc = self.bottleneck.cout;
        let taps = Taps1d {
            x: &h,
            t,
            taps: 3,
            dilation,
        };
        let mut y = self.local.apply_columns(&taps, None, false)?;
        // The context (utterance mean + segment mean) is constant within a
        // segment, so the attention only needs one column per segment.
        let segments = t.div_ceil(SEG_LEN);
        let mut ctx = vec![0f32; bc * segments];
        for (ch, row) in h.chunks_exact(t).enumerate() {
            let global = row.iter().sum::<f32>() / t as f32;
            for (s, seg) in row.chunks(SEG_LEN).enumerate() {
                ctx[ch * segments + s] = global + seg.iter().sum::<f32>() / seg.len() as f32;
            }
        }
        let a = self.attn1.apply_then(ctx, segments, None, true)?;
        let m = self.attn2.apply_then(a, segments, None, false)?;
        for (ch, row) in y.chunks_exact_mut(t).enumerate() {
            for (s, seg) in row.chunks_mut(SEG_LEN).enumerate() {
                let gate = 1.0 / (1.0 + (-m[ch * segments + s]).exp());
                seg.iter_mut().for_each(|v| *v *= gate);
            }
        }
        Ok(y)
    }
}

/// Per-channel mean and unbiased standard deviation over time, concatenated.
fn mean_std(x: &[f32], c: usize, t: usize) -> Vec<f32> {
    let mut out = vec![0f32; 2 * c];
    for (ch, row) in x.chunks_exact(t).enumerate().take(c) {
        let mean = row.iter().map(|v| f64::from(*v)).sum::<f64>() / t as f64;
        let var = row
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / (t - 1) as f64;
        out[ch] = mean as f32;
        out[c + ch] = var.sqrt() as f32;
    }
    out
}
