//! AASIST's graph back end: graph attention over spectral and temporal
//! nodes, heterogeneous attention with a master node, and top-k graph
//! pooling. Node sets are small (≤ 31 nodes of ≤ 64 features), so these are
//! plain loops over row-major `[nodes][features]` matrices.

use super::super::ModelError;
use super::super::kernels::{dot, selu_in_place};
use super::super::layers::{Affine, Weights, get};

/// `nn.Linear`: `y = x Wᵀ + b`, kept transposed (`[in][out]`) so that each
/// output row accumulates whole weight rows.
pub(super) struct Dense {
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl Dense {
    pub(super) fn load(w: &Weights, prefix: &str) -> Result<Self, ModelError> {
        let weight = get(w, &format!("{prefix}.weight"))?;
        let bias = get(w, &format!("{prefix}.bias"))?;
        let d_out = bias.len();
        let d_in = weight.len() / d_out;
        let mut weight_t = vec![0f32; weight.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                weight_t[i * d_out + o] = weight[o * d_in + i];
            }
        }
        Ok(Self {
            weight_t,
            bias,
            d_in,
            d_out,
        })
    }

    /// `[rows][d_in]` → `[rows][d_out]`.
    pub(super) fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len() / self.d_in * self.d_out);
        for row in x.chunks_exact(self.d_in) {
            let start = out.len();
            out.extend_from_slice(&self.bias);
            let acc = &mut out[start..];
            for (v, weights) in row.iter().zip(self.weight_t.chunks_exact(self.d_out)) {
                acc.iter_mut().zip(weights).for_each(|(a, w)| *a += v * w);
            }
        }
        out
    }
}

/// A learned `[dim]` vector (`nn.Parameter` of shape `(dim, 1)` or `(1, 1, dim)`).
fn vector(w: &Weights, name: &str) -> Result<Vec<f32>, ModelError> {
    get(w, name)
}

/// Softmax of `v` in place, scaled by `1 / temperature` first.
fn softmax(v: &mut [f32], temperature: f32) {
    let max = v
        .iter()
        .fold(f32::NEG_INFINITY, |m, x| m.max(x / temperature));
    let mut sum = 0f32;
    for x in v.iter_mut() {
        *x = (*x / temperature - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// `att[i][j] · x[j]` summed over j: `[n][n]` × `[n][d]`.
fn attend(att: &[f32], x: &[f32], n: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * d];
    for i in 0..n {
        let acc = &mut out[i * d..(i + 1) * d];
        for j in 0..n {
            let a = att[i * n + j];
            acc.iter_mut()
                .zip(&x[j * d..(j + 1) * d])
                .for_each(|(o, v)| *o += a * v);
        }
    }
    out
}

/// `tanh(proj(x_i * x_j))` for every node pair: `[n][n][d_out]`.
fn pair_features(proj: &Dense, x: &[f32], n: usize) -> Vec<f32> {
    let d = proj.d_in;
    let mut pairs = Vec::with_capacity(n * n * d);
    for i in 0..n {
        for j in 0..n {
            pairs.extend(
                x[i * d..(i + 1) * d]
                    .iter()
                    .zip(&x[j * d..(j + 1) * d])
                    .map(|(a, b)| a * b),
            );
        }
    }
    let mut h = proj.apply(&pairs);
    h.iter_mut().for_each(|v| *v = v.tanh());
    h
}

/// Inference batch-norm over the feature axis, then SELU.
fn bn_selu(x: &mut [f32], bn: &Affine) {
    let d = bn.scale.len();
    for row in x.chunks_exact_mut(d) {
        for ((v, s), b) in row.iter_mut().zip(&bn.scale).zip(&bn.shift) {
            *v = *v * s + b;
        }
    }
    selu_in_place(x);
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Graph attention over one node type.
pub(super) struct GraphAttention {
    att_proj: Dense,
    att_weight: Vec<f32>,
    with_att: Dense,
    without_att: Dense,
    bn: Affine,
    temperature: f32,
}

impl GraphAttention {
    pub(super) fn load(w: &Weights, p: &str, temperature: f32) -> Result<Self, ModelError> {
        Ok(Self {
            att_proj: Dense::load(w, &format!("{p}.att_proj"))?,
            att_weight: vector(w, &format!("{p}.att_weight"))?,
            with_att: Dense::load(w, &format!("{p}.proj_with_att"))?,
            without_att: Dense::load(w, &format!("{p}.proj_without_att"))?,
            bn: Affine::load(w, &format!("{p}.bn"), true)?,
            temperature,
        })
    }

    /// `[n][d_in]` → `[n][d_out]`.
    pub(super) fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let pairs = pair_features(&self.att_proj, x, n);
        let d_att = self.att_proj.d_out;
        let mut att: Vec<f32> = pairs
            .chunks_exact(d_att)
            .map(|p| dot(p, &self.att_weight))
            .collect();
        att.chunks_exact_mut(n)
            .for_each(|row| softmax(row, self.temperature));
        let attended = attend(&att, x, n, self.with_att.d_in);
        let mut out = add(&self.with_att.apply(&attended), &self.without_att.apply(x));
        bn_selu(&mut out, &self.bn);
        out
    }
}

/// Heterogeneous graph attention over two node types and a master node.
pub(super) struct HeteroGraphAttention {
    proj_type1: Dense,
    proj_type2: Dense,
    att_proj: Dense,
    att_proj_master: Dense,
    /// Attention weights within type 1, within type 2, and across types.
    att_11: Vec<f32>,
    att_22: Vec<f32>,
    att_12: Vec<f32>,
    att_master: Vec<f32>,
    with_att: Dense,
    without_att: Dense,
    with_att_master: Dense,
    without_att_master: Dense,
    bn: Affine,
    temperature: f32,
}

/// The two node sets and the master node after a heterogeneous layer.
pub(super) struct HeteroNodes {
    pub(super) type1: Vec<f32>,
    pub(super) type2: Vec<f32>,
    pub(super) master: Vec<f32>,
}

impl HeteroGraphAttention {
    pub(super) fn load(w: &Weights, p: &str, temperature: f32) -> Result<Self, ModelError> {
        let d = |name: &str| Dense::load(w, &format!("{p}.{name}"));
        let v = |name: &str| vector(w, &format!("{p}.{name}"));
        Ok(Self {
            proj_type1: d("proj_type1")?,
            proj_type2: d("proj_type2")?,
            att_proj: d("att_proj")?,
            att_proj_master: d("att_projM")?,
            att_11: v("att_weight11")?,
            att_22: v("att_weight22")?,
            att_12: v("att_weight12")?,
            att_master: v("att_weightM")?,
            with_att: d("proj_with_att")?,
            without_att: d("proj_without_att")?,
            with_att_master: d("proj_with_attM")?,
            without_att_master: d("proj_without_attM")?,
            bn: Affine::load(w, &format!("{p}.bn"), true)?,
            temperature,
        })
    }

    /// Type-1 nodes `[n1][d]`, type-2 nodes `[n2][d]` and the master `[d]`.
    pub(super) fn forward(&self, x1: &[f32], x2: &[f32], master: &[f32]) -> HeteroNodes {
        let d = self.proj_type1.d_in;
        let (n1, n2) = (x1.len() / d, x2.len() / d);
        let n = n1 + n2;
        let mut x = self.proj_type1.apply(x1);
        x.extend(self.proj_type2.apply(x2));

        let pairs = pair_features(&self.att_proj, &x, n);
        let d_att = self.att_proj.d_out;
        let mut att = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let weight = match (i < n1, j < n1) {
                    (true, true) => &self.att_11,
                    (false, false) => &self.att_22,
                    _ => &self.att_12,
                };
                att.push(dot(&pairs[(i * n + j) * d_att..][..d_att], weight));
            }
        }
        att.chunks_exact_mut(n)
            .for_each(|row| softmax(row, self.temperature));

        let master = self.update_master(&x, master);
        let attended = attend(&att, &x, n, d);
        let mut out = add(&self.with_att.apply(&attended), &self.without_att.apply(&x));
        bn_selu(&mut out, &self.bn);
        let d_out = self.with_att.d_out;
        let type2 = out.split_off(n1 * d_out);
        HeteroNodes {
            type1: out,
            type2,
            master,
        }
    }

    fn update_master(&self, x: &[f32], master: &[f32]) -> Vec<f32> {
        let d = master.len();
        let gated: Vec<f32> = x
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(master).map(|(a, m)| a * m))
            .collect();
        let mut h = self.att_proj_master.apply(&gated);
        h.iter_mut().for_each(|v| *v = v.tanh());
        let mut att: Vec<f32> = h
            .chunks_exact(self.att_proj_master.d_out)
            .map(|row| dot(row, &self.att_master))
            .collect();
        softmax(&mut att, self.temperature);
        let mut attended = vec![0f32; d];
        for (a, row) in att.iter().zip(x.chunks_exact(d)) {
            attended.iter_mut().zip(row).for_each(|(o, v)| *o += a * v);
        }
        add(
            &self.with_att_master.apply(&attended),
            &self.without_att_master.apply(master),
        )
    }
}

/// Keeps the `⌊n·ratio⌋` nodes with the highest sigmoid score, each scaled
/// by its score, highest first.
pub(super) struct GraphPool {
    proj: Dense,
    ratio: f64,
}

impl GraphPool {
    pub(super) fn load(w: &Weights, p: &str, ratio: f64) -> Result<Self, ModelError> {
        Ok(Self {
            proj: Dense::load(w, &format!("{p}.proj"))?,
            ratio,
        })
    }

    pub(super) fn forward(&self, h: &[f32]) -> Vec<f32> {
        let d = self.proj.d_in;
        let n = h.len() / d;
        let scores: Vec<f32> = self
            .proj
            .apply(h)
            .into_iter()
            .map(|s| 1.0 / (1.0 + (-s).exp()))
            .collect();
        let keep = ((n as f64 * self.ratio) as usize).max(1);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order
            .iter()
            .take(keep)
            .flat_map(|&i| {
                let score = scores[i];
                h[i * d..(i + 1) * d].iter().map(move |v| v * score)
            })
            .collect()
    }
}
