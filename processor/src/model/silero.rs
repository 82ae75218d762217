//! Silero VAD v6 (MIT) on candle: the probability that each 32 ms chunk of
//! audio is speech, and the net speech those chunks add up to.
//!
//! The network, per chunk (512 samples at 16 kHz, 256 at 8 kHz) with the
//! previous chunk's last 64 (32) samples in front: a reflect-padded STFT
//! as a strided convolution with a fixed basis, its magnitude, four 3-tap
//! convolutions with ReLU down to one 128-d frame, an LSTM cell carried
//! from chunk to chunk, and a 1×1 convolution with a sigmoid. The weights
//! of both rates come from the published ONNX file ([`super::onnx`]).
//! Everything up to the LSTM is independent per chunk, so it runs batched
//! over the whole clip; only the LSTM steps one chunk at a time.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, Device, Tensor};

use super::ModelError;
use super::kernels::dot;
use super::onnx::{OnnxTensor, float_tensors};
use crate::audio::{MODEL_SAMPLE_RATE, resample_to};
use crate::ports::{AnalyserError, SpeechDetector};

/// Weights file inside the model directory.
pub const WEIGHTS_FILE: &str = "silero-vad/silero_vad.onnx";
/// sha256 of `silero_vad/data/silero_vad.onnx` in the `silero-vad==6.2.3` wheel.
pub const WEIGHTS_SHA256: &str = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3";

/// Chunks at or above this probability start (or continue) speech.
pub const SPEECH_THRESHOLD: f32 = 0.5;
/// Speech ends after chunks below this for [`MIN_SILENCE_MILLIS`].
pub const SILENCE_THRESHOLD: f32 = SPEECH_THRESHOLD - 0.15;
/// Shorter silences inside speech count as speech.
pub const MIN_SILENCE_MILLIS: u64 = 100;
/// Shorter bursts of speech are dropped (clicks, a cough).
pub const MIN_SPEECH_MILLIS: u64 = 250;

const HIDDEN: usize = 128;
/// A chunk lasts 32 ms at either rate.
pub const CHUNK_MILLIS: u64 = 32;

/// The network of one sample rate.
struct Branch {
    chunk: usize,
    context: usize,
    /// Reflected samples appended on the right before the STFT.
    pad: usize,
    hop: usize,
    bins: usize,
    basis: Tensor,
    encoder: Vec<(Tensor, Tensor, usize)>,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    /// `b_ih + b_hh`.
    bias: Vec<f32>,
    out_w: Vec<f32>,
    out_b: f32,
}

/// Silero VAD for 16 kHz and 8 kHz audio.
pub struct SileroVad {
    wide: Branch,
    narrow: Branch,
}

fn tensor(t: &OnnxTensor) -> Result<Tensor, ModelError> {
    Ok(Tensor::from_vec(
        t.values.clone(),
        t.dims.as_slice(),
        &Device::Cpu,
    )?)
}

impl Branch {
    /// The branch `then` (16 kHz) or `else` (8 kHz) of the model's `If`.
    fn load(w: &HashMap<String, OnnxTensor>, branch: &str, rate: u32) -> Result<Self, ModelError> {
        let get = |name: &str| -> Result<&OnnxTensor, ModelError> {
            let prefix = format!("If_0_{branch}_branch_");
            let suffix = format!("__{name}");
            w.iter()
                .find(|(k, _)| k.starts_with(&prefix) && k.ends_with(&suffix))
                .map(|(_, t)| t)
                .ok_or_else(|| ModelError::BadWeights(format!("silero: no {branch} {name}")))
        };
        let shaped = |name: &str, dims: &[usize]| -> Result<&OnnxTensor, ModelError> {
            let t = get(name)?;
            if t.dims != dims {
                return Err(ModelError::BadWeights(format!(
                    "silero: {branch} {name} is {:?}, expected {dims:?}",
                    t.dims
                )));
            }
            Ok(t)
        };
        let chunk = if rate == 16_000 { 512 } else { 256 };
        let window = chunk / 2;
        let bins = window / 2 + 1;
        let basis = shaped("stft.forward_basis_buffer", &[2 * bins, 1, window])?;
        let mut encoder = Vec::new();
        for (i, stride) in [1, 2, 2, 1].into_iter().enumerate() {
            let weight = tensor(get(&format!("encoder.{i}.reparam_conv.weight"))?)?;
            let bias = tensor(get(&format!("encoder.{i}.reparam_conv.bias"))?)?;
            let channels = bias.dim(0)?;
            encoder.push((weight, bias.reshape((1, channels, 1))?, stride));
        }
        let gates = [4 * HIDDEN];
        let (b_ih, b_hh) = (
            shaped("decoder.rnn.bias_ih", &gates)?,
            shaped("decoder.rnn.bias_hh", &gates)?,
        );
        Ok(Self {
            chunk,
            context: chunk / 8,
            pad: chunk / 8,
            hop: window / 2,
            bins,
            basis: tensor(basis)?,
            encoder,
            w_ih: shaped("decoder.rnn.weight_ih", &[4 * HIDDEN, HIDDEN])?
                .values
                .clone(),
            w_hh: shaped("decoder.rnn.weight_hh", &[4 * HIDDEN, HIDDEN])?
                .values
                .clone(),
            bias: b_ih
                .values
                .iter()
                .zip(&b_hh.values)
                .map(|(a, b)| a + b)
                .collect(),
            out_w: shaped("decoder.decoder.2.weight", &[1, HIDDEN, 1])?
                .values
                .clone(),
            out_b: shaped("decoder.decoder.2.bias", &[1])?.values[0],
        })
    }

    /// Each chunk with its context and right padding, as one batch row:
    /// the last chunk is zero-filled, the first has zeros for context.
    fn frames(&self, samples: &[f32]) -> (usize, Vec<f32>) {
        let n = samples.len().div_ceil(self.chunk);
        let body = self.context + self.chunk;
        let width = body + self.pad;
        let mut rows = vec![0f32; n * width];
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            let start = i * self.chunk;
            for (j, slot) in row[..body].iter_mut().enumerate() {
                // Position in the clip of this slot; before 0 or past the
                // end it stays zero.
                let at = (start + j).checked_sub(self.context);
                if let Some(&s) = at.and_then(|a| samples.get(a)) {
                    *slot = s;
                }
            }
            for j in 0..self.pad {
                row[body + j] = row[body - 2 - j];
            }
        }
        (n, rows)
    }

    /// Speech probability of every chunk of `samples`.
    fn probabilities(&self, samples: &[f32]) -> Result<Vec<f32>, ModelError> {
        let (n, rows) = self.frames(samples);
        if n == 0 {
            return Ok(Vec::new());
        }
        let width = rows.len() / n;
        let x = Tensor::from_vec(rows, (n, 1, width), &Device::Cpu)?;
        let spectrum = x.conv1d(&self.basis, 0, self.hop, 1, 1)?;
        let re = spectrum.narrow(1, 0, self.bins)?;
        let im = spectrum.narrow(1, self.bins, self.bins)?;
        let mut h = (re.sqr()? + im.sqr()?)?.sqrt()?;
        for (weight, bias, stride) in &self.encoder {
            h = h
                .conv1d(weight, 1, *stride, 1, 1)?
                .broadcast_add(bias)?
                .relu()?;
        }
        // One frame per chunk is left.
        let features: Vec<Vec<f32>> = h.mean(D::Minus1)?.to_vec2()?;
        Ok(self.decode(&features))
    }

    /// The LSTM over the chunks, each state through the output layer.
    fn decode(&self, features: &[Vec<f32>]) -> Vec<f32> {
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let (mut h, mut c) = (vec![0f32; HIDDEN], vec![0f32; HIDDEN]);
        let mut gates = vec![0f32; 4 * HIDDEN];
        let mut out = Vec::with_capacity(features.len());
        for x in features {
            for (g, gate) in gates.iter_mut().enumerate() {
                let wi = &self.w_ih[g * HIDDEN..(g + 1) * HIDDEN];
                let wh = &self.w_hh[g * HIDDEN..(g + 1) * HIDDEN];
                *gate = dot(wi, x) + dot(wh, &h) + self.bias[g];
            }
            // PyTorch's gate order: input, forget, cell, output.
            for k in 0..HIDDEN {
                let (i, f) = (sigmoid(gates[k]), sigmoid(gates[HIDDEN + k]));
                let (g, o) = (gates[2 * HIDDEN + k].tanh(), sigmoid(gates[3 * HIDDEN + k]));
                c[k] = f * c[k] + i * g;
                h[k] = o * c[k].tanh();
            }
            let logit: f32 = h
                .iter()
                .zip(&self.out_w)
                .map(|(v, w)| v.max(0.0) * w)
                .sum::<f32>()
                + self.out_b;
            out.push(sigmoid(logit));
        }
        out
    }
}

impl SileroVad {
    /// Loads the checksum-verified ONNX file from a model directory.
    pub fn load_from_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::load(&super::verified_weights(dir, WEIGHTS_FILE, WEIGHTS_SHA256)?)
    }

    /// Loads both branches from an ONNX file of the reference model.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let w = float_tensors(&std::fs::read(path)?)?;
        Ok(Self {
            wide: Branch::load(&w, "then", 16_000)?,
            narrow: Branch::load(&w, "else", 8_000)?,
        })
    }

    /// Speech probability per chunk of `samples` at `rate` (16 000 or
    /// 8 000 Hz; the state starts at zero).
    pub fn probabilities(&self, samples: &[f32], rate: u32) -> Result<Vec<f32>, ModelError> {
        match rate {
            16_000 => self.wide.probabilities(samples),
            8_000 => self.narrow.probabilities(samples),
            other => Err(ModelError::BadWeights(format!(
                "silero vad runs at 16000 or 8000 Hz, not {other}"
            ))),
        }
    }

    /// Net speech of `samples` at `rate`, in milliseconds.
    pub fn speech_millis(&self, samples: &[f32], rate: u32) -> Result<u64, ModelError> {
        let audio_millis = samples.len() as u64 * 1_000 / u64::from(rate);
        Ok(net_speech_millis(
            &self.probabilities(samples, rate)?,
            CHUNK_MILLIS,
            audio_millis,
        ))
    }
}

/// The pipeline's speech detector: audio sent at a telephone rate goes
/// through the 8 kHz network (brought back to 8 kHz from the decoder's
/// 16 kHz), everything else through the 16 kHz one.
impl SpeechDetector for SileroVad {
    fn speech_millis(&self, samples: &[f32], source_rate: u32) -> Result<u64, AnalyserError> {
        let measured = if source_rate <= 8_000 {
            let narrow = resample_to(samples, MODEL_SAMPLE_RATE, 8_000);
            SileroVad::speech_millis(self, &narrow, 8_000)
        } else {
            SileroVad::speech_millis(self, samples, MODEL_SAMPLE_RATE)
        };
        measured.map_err(|e| AnalyserError {
            code: e.code(),
            message: format!("speech detector: {e}"),
        })
    }
}

/// Net speech of per-chunk probabilities of `audio_millis` of audio: speech
/// starts at a chunk at or above [`SPEECH_THRESHOLD`], ends once chunks have
/// stayed below [`SILENCE_THRESHOLD`] for [`MIN_SILENCE_MILLIS`] (counted
/// from the first quiet chunk's start, as the reference counts it), and
/// segments shorter than [`MIN_SPEECH_MILLIS`] do not count. A segment
/// still open at the end lasts to the audio's end, not to the end of the
/// zero-filled last chunk. The reference's segmentation, without its padding.
pub fn net_speech_millis(probabilities: &[f32], chunk_millis: u64, audio_millis: u64) -> u64 {
    let at = |chunk: usize| (chunk as u64 * chunk_millis).min(audio_millis);
    let mut total = 0u64;
    let mut start: Option<usize> = None;
    let mut quiet_since: Option<usize> = None;
    let mut close = |from: u64, to: u64| {
        if to.saturating_sub(from) >= MIN_SPEECH_MILLIS {
            total += to - from;
        }
    };
    for (i, &p) in probabilities.iter().enumerate() {
        if p >= SPEECH_THRESHOLD {
            quiet_since = None;
            start.get_or_insert(i);
        } else if p < SILENCE_THRESHOLD
            && let Some(from) = start
        {
            let since = *quiet_since.get_or_insert(i);
            if (i - since) as u64 * chunk_millis >= MIN_SILENCE_MILLIS {
                close(at(from), at(since));
                (start, quiet_since) = (None, None);
            }
        }
    }
    if let Some(from) = start {
        close(at(from), audio_millis);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_bridge_short_pauses_and_drop_short_bursts() {
        let speech = |n| vec![0.9f32; n];
        let quiet = |n| vec![0.1f32; n];
        let net = |p: &[f32]| net_speech_millis(p, 32, p.len() as u64 * 32);
        // 20 chunks of speech, a 2-chunk pause (64 ms, bridged), 20 more.
        assert_eq!(net(&[speech(20), quiet(2), speech(20)].concat()), 42 * 32);
        // A 4-chunk pause is bridged too: the reference ends speech only
        // once 100 ms have passed since the first quiet chunk began.
        assert_eq!(net(&[speech(6), quiet(4), speech(6)].concat()), 16 * 32);
        // A 5-chunk pause (160 ms) ends the first segment.
        assert_eq!(net(&[speech(20), quiet(5), speech(20)].concat()), 40 * 32);
        // A 5-chunk (160 ms) burst in silence is not speech.
        assert_eq!(net(&[quiet(30), speech(5), quiet(30)].concat()), 0);
        // Between the thresholds, speech goes on.
        assert_eq!(
            net(&[speech(10), vec![0.4; 10], quiet(10)].concat()),
            20 * 32
        );
        assert_eq!(net(&[]), 0);
    }

    #[test]
    fn speech_never_outlasts_the_audio() {
        // 95 chunks cover 3,040 ms; the audio is 3,010 ms of speech.
        assert_eq!(net_speech_millis(&[0.9; 95], 32, 3_010), 3_010);
        // 7 chunks and a bit of the zero-filled last one: 230 ms, too short.
        assert_eq!(net_speech_millis(&[0.9; 8], 32, 230), 0);
    }

    #[test]
    fn chunks_carry_their_context_and_reflect_their_end() {
        let branch = Branch {
            chunk: 4,
            context: 2,
            pad: 2,
            hop: 1,
            bins: 1,
            basis: Tensor::zeros((2, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
            encoder: Vec::new(),
            w_ih: Vec::new(),
            w_hh: Vec::new(),
            bias: Vec::new(),
            out_w: Vec::new(),
            out_b: 0.0,
        };
        let (n, rows) = branch.frames(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(n, 2);
        assert_eq!(
            rows,
            vec![
                0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, // zeros before the clip
                3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 6.0 // zeros after it
            ]
        );
    }
}
