//! Inference-mode building blocks shared by the networks: a state dict, a
//! batch-norm as a per-channel affine, and a convolution or linear layer as a
//! matrix product with its bias (a following batch-norm folded in).

use std::collections::HashMap;

use candle_core::{DType, Device, Storage, Tensor};

use super::columns::{Columns, Patches3x3};
use super::kernels::bias_residual_relu;
use super::{Matmul, ModelError};

pub(crate) const BN_EPS: f64 = 1e-5;

pub(crate) type Weights = HashMap<String, Tensor>;

pub(crate) fn get(w: &Weights, name: &str) -> Result<Vec<f32>, ModelError> {
    let t = w
        .get(name)
        .ok_or_else(|| ModelError::BadWeights(format!("missing tensor {name}")))?;
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Inference-mode batch-norm as `y = x * scale + shift`.
pub(crate) struct Affine {
    pub(crate) scale: Vec<f32>,
    pub(crate) shift: Vec<f32>,
}

impl Affine {
    pub(crate) fn load(w: &Weights, prefix: &str, affine: bool) -> Result<Self, ModelError> {
        let mean = get(w, &format!("{prefix}.running_mean"))?;
        let var = get(w, &format!("{prefix}.running_var"))?;
        let (gamma, beta) = if affine {
            (
                get(w, &format!("{prefix}.weight"))?,
                get(w, &format!("{prefix}.bias"))?,
            )
        } else {
            (vec![1.0; mean.len()], vec![0.0; mean.len()])
        };
        let mut scale = Vec::with_capacity(mean.len());
        let mut shift = Vec::with_capacity(mean.len());
        for i in 0..mean.len() {
            let s = f64::from(gamma[i]) / (f64::from(var[i]) + BN_EPS).sqrt();
            scale.push(s as f32);
            shift.push((f64::from(beta[i]) - f64::from(mean[i]) * s) as f32);
        }
        Ok(Self { scale, shift })
    }
}

/// A convolution as a `[cout][cin * kernel]` matrix plus an optional bias.
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Vec<f32>>,
    pub(crate) cout: usize,
    /// The same weights packed for the bfloat16 kernels, when chosen.
    #[cfg(target_arch = "x86_64")]
    pub(crate) bf16: Option<super::bf16::PackedWeights>,
}

impl Linear {
    /// Loads `name` and folds a following batch-norm into it when given.
    pub(crate) fn load(
        w: &Weights,
        name: &str,
        bias: Option<&str>,
        bn: Option<Affine>,
        dev: &Device,
    ) -> Result<Self, ModelError> {
        let shape = w
            .get(name)
            .ok_or_else(|| ModelError::BadWeights(format!("missing tensor {name}")))?
            .dims()
            .to_vec();
        let cout = shape[0];
        let fan_in: usize = shape[1..].iter().product();
        let mut weight = get(w, name)?;
        let mut b = match bias {
            Some(b) => Some(get(w, b)?),
            None => None,
        };
        if let Some(bn) = bn {
            for (c, row) in weight.chunks_exact_mut(fan_in).enumerate() {
                row.iter_mut().for_each(|v| *v *= bn.scale[c]);
            }
            let folded = (0..cout)
                .map(|c| b.as_ref().map_or(0.0, |b| b[c]) * bn.scale[c] + bn.shift[c])
                .collect();
            b = Some(folded);
        }
        let mut layer = Self::from_matrix(weight, cout, dev)?;
        layer.bias = b;
        Ok(layer)
    }

    /// A layer from an unfolded `[cout][fan_in]` matrix.
    pub(crate) fn from_matrix(
        weight: Vec<f32>,
        cout: usize,
        dev: &Device,
    ) -> Result<Self, ModelError> {
        let fan_in = weight.len() / cout;
        Ok(Self {
            weight: Tensor::from_vec(weight, (cout, fan_in), dev)?,
            bias: None,
            cout,
            #[cfg(target_arch = "x86_64")]
            bf16: None,
        })
    }

    /// Chooses the kernels of this layer's products (`matmul` resolved).
    pub(crate) fn set_matmul(&mut self, matmul: Matmul) -> Result<(), ModelError> {
        #[cfg(target_arch = "x86_64")]
        {
            self.bf16 = match matmul {
                Matmul::Bf16 => {
                    let (m, k) = self.weight.dims2()?;
                    let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
                    Some(super::bf16::PackedWeights::pack(&w, m, k))
                }
                _ => None,
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = matmul;
        Ok(())
    }

    /// `weight @ cols` (`cols` is `[fan_in][n]`), then bias, residual and ReLU
    /// applied while copying the product out of candle's storage.
    pub(crate) fn apply_then(
        &self,
        cols: Vec<f32>,
        n: usize,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<Vec<f32>, ModelError> {
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.bf16 {
            let cols = super::columns::Dense { values: &cols, n };
            return Ok(packed.matmul(&cols, self.bias.as_deref(), residual, relu));
        }
        let k = cols.len() / n;
        let cols = Tensor::from_vec(cols, (k, n), self.weight.device())?;
        let product = self.weight.matmul(&cols)?;
        let (storage, layout) = product.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(ModelError::BadWeights(
                "the model runs on the CPU only".into(),
            ));
        };
        let y = &cpu.as_slice::<f32>()?[layout.start_offset()..][..self.cout * n];
        Ok(bias_residual_relu(
            y,
            self.bias.as_deref(),
            residual,
            relu,
            self.cout,
        ))
    }

    /// A 3x3 convolution (padding 1, stride `(stride_h, 1)`) of `[cin][h][w]`
    /// with this layer's `[cout][cin * 9]` kernel, then bias, residual and
    /// ReLU: `([cout][out_h][w], out_h)`.
    pub(crate) fn conv3x3(
        &self,
        x: &[f32],
        (cin, h, w): (usize, usize, usize),
        stride_h: usize,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<(Vec<f32>, usize), ModelError> {
        let patches = Patches3x3 {
            x,
            shape: (cin, h, w),
            stride_h,
        };
        let y = self.apply_columns(&patches, residual, relu)?;
        Ok((y, patches.out_h()))
    }

    /// `weight @ cols` with bias, residual and ReLU, `cols` described by a
    /// source: the bfloat16 kernels read it as they go, the f32 path builds
    /// it first.
    pub(crate) fn apply_columns(
        &self,
        cols: &impl Columns,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<Vec<f32>, ModelError> {
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.bf16 {
            return Ok(packed.matmul(cols, self.bias.as_deref(), residual, relu));
        }
        self.apply_then(cols.materialise(), cols.width(), residual, relu)
    }

    pub(crate) fn apply(&self, cols: Vec<f32>, n: usize) -> Result<Vec<f32>, ModelError> {
        self.apply_then(cols, n, None, false)
    }
}
