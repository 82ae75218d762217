//! Whisper on candle, loaded from a CTranslate2 file, decoding digits only.
//!
//! The network is `candle_transformers`' Whisper; this module renames the
//! CTranslate2 variables to its names (splitting the fused attention
//! projections), and runs a greedy decoder whose vocabulary is limited to
//! digit tokens and end-of-text: for a prompted code the question is which
//! digits were said, and a decoder that cannot write words cannot drift
//! into them.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{Config, model::Whisper};

use super::PhraseError;
use super::ct2::Ct2Model;
use crate::audio::whisper_mel::{WHISPER_MEL_BINS, WhisperMel};

/// Longest input the encoder takes: 30 s of 10 ms frames.
const MAX_FRAMES: usize = 3000;
/// Samples per frame.
const HOP: usize = 160;
/// Silence appended to the audio in [`EncoderSpan::OwnLength`] (0.5 s).
const TAIL_SAMPLES: usize = 8_000;

/// How the encoder sees a short utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderSpan {
    /// The audio's own length (positional embedding sliced): fast.
    OwnLength,
    /// Zero-padded to 30 s, as Whisper was trained.
    Padded,
}

/// How well the audio says an expected code.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    /// The least, over the positions, of P(expected digit) / P(likeliest
    /// digit): 1 when every expected digit is the recogniser's first
    /// choice, near 0 when one is clearly another digit.
    pub weakest: f32,
    /// The least, over the positions, of the probability that the next
    /// token is a digit at all (against the whole vocabulary): near 1 for a
    /// spoken code, near 0 for words. The ratio above compares digits only,
    /// so speech that is no code at all must be refused by this.
    pub digit_mass: f32,
}

impl Heard {
    /// Whether greedy decoding over single digits would write exactly the
    /// code: at every position the expected digit is the likeliest.
    pub fn is_exact(&self) -> bool {
        self.weakest >= 1.0
    }
}

/// Whisper weights and the digit vocabulary, shareable across workers.
pub struct DigitRecogniser {
    model: Whisper,
    mel: WhisperMel,
    prompt: Vec<u32>,
    /// Token ids of " 0" … " 9" (a leading space: how Whisper writes a
    /// spoken digit sequence), then "0" … "9".
    outputs: Vec<u32>,
    /// The output embedding matrix, `[vocab, d_model]` (tied to the
    /// decoder's token embeddings).
    vocab_rows: Tensor,
    span: EncoderSpan,
}

fn bad(message: impl Into<String>) -> PhraseError {
    PhraseError::BadWeights(message.into())
}

/// Builds candle's variable map from the CTranslate2 variables.
fn candle_variables(
    ct2: &Ct2Model,
    layers: (usize, usize),
) -> Result<HashMap<String, Tensor>, PhraseError> {
    let mut out = HashMap::new();
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    let get = |name: &str| ct2.tensor(name).map_err(PhraseError::from);
    // q, k, v stacked on the output axis; k has no bias.
    let split3 = |w: &Tensor| -> Result<[Tensor; 3], PhraseError> {
        let n = w.dim(0)? / 3;
        Ok([
            w.narrow(0, 0, n)?,
            w.narrow(0, n, n)?,
            w.narrow(0, 2 * n, n)?,
        ])
    };
    let split2 = |w: &Tensor| -> Result<[Tensor; 2], PhraseError> {
        let n = w.dim(0)? / 2;
        Ok([w.narrow(0, 0, n)?, w.narrow(0, n, n)?])
    };
    for p in ["conv1", "conv2"] {
        for k in ["weight", "bias"] {
            put(
                format!("model.encoder.{p}.{k}"),
                get(&format!("encoder/{p}/{k}"))?,
            );
        }
    }
    let norm =
        |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<(), PhraseError> {
            put(format!("{to}.weight"), get(&format!("{from}/gamma"))?);
            put(format!("{to}.bias"), get(&format!("{from}/beta"))?);
            Ok(())
        };
    let dense =
        |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<(), PhraseError> {
            put(format!("{to}.weight"), get(&format!("{from}/weight"))?);
            put(format!("{to}.bias"), get(&format!("{from}/bias"))?);
            Ok(())
        };
    let self_attention =
        |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<(), PhraseError> {
            norm(
                put,
                &format!("{from}/self_attention/layer_norm"),
                &format!("{to}.self_attn_layer_norm"),
            )?;
            let [wq, wk, wv] = split3(&get(&format!("{from}/self_attention/linear_0/weight"))?)?;
            let [bq, _, bv] = split3(&get(&format!("{from}/self_attention/linear_0/bias"))?)?;
            put(format!("{to}.self_attn.q_proj.weight"), wq);
            put(format!("{to}.self_attn.q_proj.bias"), bq);
            put(format!("{to}.self_attn.k_proj.weight"), wk);
            put(format!("{to}.self_attn.v_proj.weight"), wv);
            put(format!("{to}.self_attn.v_proj.bias"), bv);
            dense(
                put,
                &format!("{from}/self_attention/linear_1"),
                &format!("{to}.self_attn.out_proj"),
            )?;
            norm(
                put,
                &format!("{from}/ffn/layer_norm"),
                &format!("{to}.final_layer_norm"),
            )?;
            dense(put, &format!("{from}/ffn/linear_0"), &format!("{to}.fc1"))?;
            dense(put, &format!("{from}/ffn/linear_1"), &format!("{to}.fc2"))
        };
    for i in 0..layers.0 {
        self_attention(
            &mut put,
            &format!("encoder/layer_{i}"),
            &format!("model.encoder.layers.{i}"),
        )?;
    }
    norm(&mut put, "encoder/layer_norm", "model.encoder.layer_norm")?;
    put(
        "model.decoder.embed_tokens.weight".into(),
        get("decoder/embeddings/weight")?,
    );
    put(
        "model.decoder.embed_positions.weight".into(),
        get("decoder/position_encodings/encodings")?,
    );
    for i in 0..layers.1 {
        let (from, to) = (
            format!("decoder/layer_{i}"),
            format!("model.decoder.layers.{i}"),
        );
        self_attention(&mut put, &from, &to)?;
        norm(
            &mut put,
            &format!("{from}/attention/layer_norm"),
            &format!("{to}.encoder_attn_layer_norm"),
        )?;
        dense(
            &mut put,
            &format!("{from}/attention/linear_0"),
            &format!("{to}.encoder_attn.q_proj"),
        )?;
        let [wk, wv] = split2(&get(&format!("{from}/attention/linear_1/weight"))?)?;
        let [_, bv] = split2(&get(&format!("{from}/attention/linear_1/bias"))?)?;
        put(format!("{to}.encoder_attn.k_proj.weight"), wk);
        put(format!("{to}.encoder_attn.v_proj.weight"), wv);
        put(format!("{to}.encoder_attn.v_proj.bias"), bv);
        dense(
            &mut put,
            &format!("{from}/attention/linear_2"),
            &format!("{to}.encoder_attn.out_proj"),
        )?;
    }
    norm(&mut put, "decoder/layer_norm", "model.decoder.layer_norm")?;
    Ok(out)
}

fn count_layers(ct2: &Ct2Model, side: &str) -> usize {
    (0..)
        .take_while(|i| {
            let prefix = format!("{side}/layer_{i}/");
            ct2.names().any(|n| n.starts_with(&prefix))
        })
        .count()
}

impl DigitRecogniser {
    /// Builds the recogniser from parsed CTranslate2 weights and the token
    /// list (one token per line, in id order), both verified by the caller.
    pub fn new(ct2: &Ct2Model, vocabulary: &str, span: EncoderSpan) -> Result<Self, PhraseError> {
        if ct2.spec != "WhisperSpec" {
            return Err(bad(format!(
                "{} is a {}, not Whisper",
                super::MODEL_FILE,
                ct2.spec
            )));
        }
        let tokens: Vec<&str> = vocabulary.lines().collect();
        let id = |t: &str| -> Result<u32, PhraseError> {
            tokens
                .iter()
                .position(|x| *x == t)
                .map(|i| i as u32)
                .ok_or_else(|| bad(format!("token {t} missing from the vocabulary")))
        };
        let embeddings = ct2.tensor("decoder/embeddings/weight")?;
        let (vocab_size, d_model) = embeddings.dims2()?;
        if vocab_size != tokens.len() {
            return Err(bad(format!(
                "vocabulary has {} tokens, embeddings {vocab_size}",
                tokens.len()
            )));
        }
        // English-only models have no language or task tokens.
        let multilingual = tokens.contains(&"<|transcribe|>") && vocab_size >= 51_865;
        let prompt = if multilingual {
            vec![
                id("<|startoftranscript|>")?,
                id("<|en|>")?,
                id("<|transcribe|>")?,
                id("<|notimestamps|>")?,
            ]
        } else {
            vec![id("<|startoftranscript|>")?, id("<|notimestamps|>")?]
        };
        let mut outputs = Vec::with_capacity(20);
        for digit in '0'..='9' {
            outputs.push(id(&format!("Ġ{digit}"))?);
        }
        for digit in '0'..='9' {
            outputs.push(id(&digit.to_string())?);
        }
        let vocab_rows = embeddings.to_dtype(DType::F32)?;
        let layers = (count_layers(ct2, "encoder"), count_layers(ct2, "decoder"));
        let heads = |side: &str| -> Result<usize, PhraseError> {
            Ok(ct2.scalar(&format!("{side}/num_heads"))? as usize)
        };
        let config = Config {
            num_mel_bins: WHISPER_MEL_BINS,
            max_source_positions: MAX_FRAMES / 2,
            d_model,
            encoder_attention_heads: heads("encoder")?,
            encoder_layers: layers.0,
            vocab_size,
            max_target_positions: ct2.tensor("decoder/position_encodings/encodings")?.dim(0)?,
            decoder_attention_heads: heads("decoder")?,
            decoder_layers: layers.1,
            suppress_tokens: Vec::new(),
        };
        let vb = VarBuilder::from_tensors(candle_variables(ct2, layers)?, DType::F32, &Device::Cpu);
        let model = Whisper::load(&vb, config)?;
        Ok(Self {
            model,
            mel: WhisperMel::new(),
            prompt,
            outputs,
            vocab_rows,
            span,
        })
    }

    /// Checks whether the audio says `expected` (ASCII digits). One decoder
    /// pass over the prompt and the code scores every position at once
    /// (decoding is bound by reading the weights, so one pass costs about
    /// what one generated token does); restricting the output to single
    /// digits makes "would greedy decoding write this code" a per-position
    /// argmax test.
    pub fn check(&self, samples: &[f32], expected: &str) -> Result<Heard, PhraseError> {
        let digits: Vec<usize> = expected
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| usize::from(b - b'0'))
            .collect();
        let mut audio = samples[..samples.len().min(MAX_FRAMES * HOP)].to_vec();
        let target = match self.span {
            EncoderSpan::Padded => MAX_FRAMES * HOP,
            // Trailing silence tells the decoder the speech has ended;
            // without it, it tends to expect more digits.
            EncoderSpan::OwnLength => (audio.len() + TAIL_SAMPLES).min(MAX_FRAMES * HOP),
        };
        audio.resize(target, 0.0);
        let frames = WhisperMel::frames(audio.len());
        if digits.is_empty() || frames < 2 {
            return Ok(Heard {
                weakest: 0.0,
                digit_mass: 0.0,
            });
        }
        let mel = Tensor::from_vec(
            self.mel.compute(&audio),
            (1, WHISPER_MEL_BINS, frames),
            &Device::Cpu,
        )?;
        // The network keeps a cache between calls: each check runs on its
        // own copy (tensors are shared, not copied).
        let mut model = self.model.clone();
        let features = model.encoder.forward(&mel, true)?;
        let mut tokens = self.prompt.clone();
        tokens.extend(digits.iter().map(|&d| self.outputs[d]));
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let hidden = model.decoder.forward(&input, &features, true)?;
        // The positions that predict each digit. The end of text is not
        // scored: on short audio Whisper often expects more (punctuation, a
        // repeat), and requiring the end refused most right codes.
        let from = self.prompt.len() - 1;
        let states = hidden.i((0, from..tokens.len() - 1))?;
        let logits: Vec<Vec<f32>> = states.matmul(&self.vocab_rows.t()?)?.to_vec2()?;
        let mut weakest = 1f32;
        let mut digit_mass = 1f32;
        for (row, &want) in logits.iter().zip(&digits) {
            // A digit with or without its leading space is the same digit;
            // other tokens (words, punctuation, the end) are not candidates.
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = row.iter().map(|l| (l - max).exp()).sum();
            let p: Vec<f32> = self
                .outputs
                .iter()
                .map(|&t| (row[t as usize] - max).exp())
                .collect();
            let scores: Vec<f32> = (0..10).map(|d| p[d] + p[d + 10]).collect();
            let best = scores.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
            weakest = weakest.min(scores[want] / best);
            digit_mass = digit_mass.min(scores.iter().sum::<f32>() / total);
        }
        Ok(Heard {
            weakest,
            digit_mass,
        })
    }
}
