//! Scoring workers: OS threads (a dedicated rayon pool) sharing the loaded
//! models and analysers, fed through a bounded number of permits. WAV
//! decoding, resampling, features, the network and every analyser run here,
//! never on Tokio threads; the async caller awaits a oneshot reply.
//!
//! One job's audio is decoded once; the embedder and then each analyser
//! (phrase, liveness, …) run on the same samples, and their results come
//! back together as one [`Analysis`].

mod norm;

pub use norm::bundled_score_norm;

use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use timbre_schemas::{Code, JobKind};
use tokio::sync::{Semaphore, oneshot};

use crate::audio::{AudioError, AudioLimits, decode_wav};
use crate::domain::Analysis;
use crate::liveness::{Fingerprint, Fingerprinter};
use crate::ports::{Analyser, AnalyserError, AnalysisInput, EmbedError, Embedder, SpeechDetector};

/// One job's audio to score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    /// WAV bytes as submitted.
    pub wav: Vec<u8>,
    /// Model to embed with.
    pub model_id: String,
    /// Live or background work.
    pub priority: Priority,
    /// Kind of job (analysers decide what applies).
    pub job: JobKind,
    /// The phrase the caller was prompted to say, if any.
    pub expected_phrase: Option<String>,
    /// For a job that keeps a fingerprint: the user's recent ones (replay
    /// detection compares with them). `None`: no fingerprint is made.
    pub earlier: Option<Arc<[Fingerprint]>>,
}

/// A scored sample.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Embedding, net speech and signals.
    pub analysis: Analysis,
    /// Duration of the input.
    pub duration_millis: u64,
    /// Time spent in the worker.
    pub worker_seconds: f64,
}

/// Why a sample could not be scored; [`ScoreError::code`] is stable.
#[derive(Debug, Error)]
pub enum ScoreError {
    /// The audio was refused.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] EmbedError),
    /// An analyser failed.
    #[error(transparent)]
    Analyser(#[from] AnalyserError),
    /// The pool is shutting down.
    #[error("scoring pool stopped")]
    Stopped,
    /// Scoring this input panicked (a defect, reported instead of crashing).
    #[error("internal error while scoring this audio")]
    Panicked,
    /// The workers do not have this model loaded.
    #[error("model {0} is not loaded by this processor (config extra_models)")]
    ModelUnavailable(String),
}

impl ScoreError {
    /// Stable machine-readable code.
    pub fn code(&self) -> Code {
        match self {
            ScoreError::Audio(e) => e.code(),
            ScoreError::Model(e) => e.code,
            ScoreError::Analyser(e) => e.code,
            ScoreError::Stopped => Code::ScoringStopped,
            ScoreError::Panicked => Code::ScoringPanicked,
            ScoreError::ModelUnavailable(_) => Code::ModelUnavailable,
        }
    }
}

/// Who is asking: live traffic, or background work (re-scoring) that may
/// only use part of the workers so live jobs never queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Enrollment and verification jobs.
    Live,
    /// Bulk re-scoring.
    Background,
}

/// The worker pool.
pub struct ScoringPool {
    /// The default model first, then the extra ones.
    embedders: Vec<Arc<dyn Embedder>>,
    analysers: Arc<[Arc<dyn Analyser>]>,
    speech: Option<Arc<dyn SpeechDetector>>,
    pool: Arc<rayon::ThreadPool>,
    permits: Arc<Semaphore>,
    background: Arc<Semaphore>,
    background_slots: usize,
    capacity: usize,
    limits: AudioLimits,
    fingerprinter: Arc<Fingerprinter>,
}

impl ScoringPool {
    /// `workers` threads; at most `workers + queue` samples admitted at once
    /// (callers beyond that wait, which is the pipeline's backpressure).
    pub fn new(
        embedder: Arc<dyn Embedder>,
        workers: usize,
        queue: usize,
        limits: AudioLimits,
    ) -> Self {
        let workers = workers.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("scoring-{i}"))
            .build()
            .expect("spawning scoring threads");
        // Background work holds at most half the workers (at least one).
        let background_slots = (workers / 2).max(1);
        Self {
            embedders: vec![embedder],
            analysers: Arc::new([]),
            speech: None,
            pool: Arc::new(pool),
            permits: Arc::new(Semaphore::new(workers + queue)),
            background: Arc::new(Semaphore::new(background_slots)),
            background_slots,
            capacity: workers + queue,
            limits,
            fingerprinter: Arc::new(Fingerprinter::new()),
        }
    }

    /// Adds models the workers can also score with (re-scoring targets).
    pub fn with_models(mut self, extra: impl IntoIterator<Item = Arc<dyn Embedder>>) -> Self {
        self.embedders.extend(extra);
        self
    }

    /// Adds analysers that run on every scored job's audio.
    pub fn with_analysers(
        mut self,
        analysers: impl IntoIterator<Item = Arc<dyn Analyser>>,
    ) -> Self {
        let mut all: Vec<Arc<dyn Analyser>> = self.analysers.iter().cloned().collect();
        all.extend(analysers);
        self.analysers = all.into();
        self
    }

    /// Measures net speech with `detector` instead of the decoder's energy
    /// estimate.
    pub fn with_speech_detector(mut self, detector: Arc<dyn SpeechDetector>) -> Self {
        self.speech = Some(detector);
        self
    }

    /// Id of the default model.
    pub fn model_id(&self) -> String {
        self.embedders[0].model_id()
    }

    /// How many samples background work may score at once.
    pub fn background_slots(&self) -> usize {
        self.background_slots
    }

    /// Ids of every loaded model, the default first.
    pub fn model_ids(&self) -> Vec<String> {
        self.embedders.iter().map(|e| e.model_id()).collect()
    }

    /// Samples admitted and not yet finished.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Decodes one job's audio on a worker thread, embeds it with the
    /// request's model and runs the analysers on it.
    pub async fn score(&self, request: ScoreRequest) -> Result<Scored, ScoreError> {
        let ScoreRequest {
            wav,
            model_id,
            priority,
            job,
            expected_phrase,
            earlier,
        } = request;
        let embedder = self
            .embedders
            .iter()
            .find(|e| e.model_id() == model_id)
            .cloned()
            .ok_or_else(|| ScoreError::ModelUnavailable(model_id.clone()))?;
        let background = match priority {
            Priority::Live => None,
            Priority::Background => Some(
                self.background
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ScoreError::Stopped)?,
            ),
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ScoreError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        let limits = self.limits;
        let analysers = self.analysers.clone();
        let fingerprinter = self.fingerprinter.clone();
        let speech = self.speech.clone();
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            let _enter = span.enter();
            let start = Instant::now();
            // A panic on crafted input must not take the process down (rayon
            // aborts on an unhandled panic): it becomes a refusal of that job.
            let work = std::panic::AssertUnwindSafe(|| {
                decode_wav(&wav, &limits)
                    .map_err(ScoreError::from)
                    .and_then(|mut audio| {
                        if let Some(detector) = &speech {
                            audio.speech_millis =
                                detector.speech_millis(&audio.samples, audio.source_rate)?;
                        }
                        let embedding = embedder.embed(&audio.samples)?;
                        let fingerprint = earlier
                            .as_ref()
                            .map(|_| fingerprinter.fingerprint(&audio.samples));
                        let input = AnalysisInput {
                            job,
                            samples: &audio.samples,
                            speech_millis: audio.speech_millis,
                            source_rate: audio.source_rate,
                            expected_phrase: expected_phrase.as_deref(),
                            fingerprint: fingerprint.as_ref(),
                            earlier: earlier.as_deref().unwrap_or_default(),
                        };
                        let mut signals = Vec::new();
                        for analyser in analysers.iter() {
                            signals.extend(analyser.analyse(&input)?);
                        }
                        Ok(Scored {
                            analysis: Analysis {
                                embedding,
                                speech_millis: audio.speech_millis,
                                source_rate: audio.source_rate,
                                signals,
                                fingerprint,
                            },
                            duration_millis: audio.duration_millis,
                            worker_seconds: start.elapsed().as_secs_f64(),
                        })
                    })
            });
            let result = std::panic::catch_unwind(work).unwrap_or(Err(ScoreError::Panicked));
            drop(permit);
            drop(background);
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| ScoreError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    //! The pool with stand-ins for the model and a detector: this tests the
    //! extension point (which analysers run, on what, and where their results
    //! go), not the network.

    use std::sync::Mutex;

    use super::*;
    use crate::domain::{Signal, SignalKind, Tier};

    struct FixedEmbedder;

    impl Embedder for FixedEmbedder {
        fn embed(&self, samples: &[f32]) -> Result<Vec<f32>, EmbedError> {
            Ok(vec![samples.len() as f32, 1.0])
        }

        fn model_id(&self) -> String {
            "fixed@test".into()
        }
    }

    /// Fails on a phrase it does not expect; records what it was shown.
    struct PhraseSpy {
        seen: Mutex<Vec<(JobKind, Option<String>, usize)>>,
    }

    impl Analyser for PhraseSpy {
        fn kind(&self) -> SignalKind {
            SignalKind::Phrase
        }

        fn analyse(&self, input: &AnalysisInput<'_>) -> Result<Option<Signal>, AnalyserError> {
            self.seen.lock().unwrap().push((
                input.job,
                input.expected_phrase.map(str::to_string),
                input.samples.len(),
            ));
            match input.expected_phrase {
                None => Ok(None),
                Some("boom") => Err(AnalyserError {
                    code: Code::ModelInternal,
                    message: "recogniser failed".into(),
                }),
                Some(_) => Ok(Some(Signal {
                    kind: SignalKind::Phrase,
                    tier: Tier::High,
                    pass: true,
                    reason: None,
                    score: None,
                    threshold: None,
                })),
            }
        }
    }

    fn tone_wav(seconds: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for i in 0..(16_000.0 * seconds) as usize {
            let t = i as f32 / 16_000.0;
            let v = (2.0 * std::f32::consts::PI * 220.0 * t).sin() * 0.3;
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    fn request(phrase: Option<&str>) -> ScoreRequest {
        ScoreRequest {
            wav: tone_wav(1.0),
            model_id: "fixed@test".into(),
            priority: Priority::Live,
            job: JobKind::Verification,
            expected_phrase: phrase.map(str::to_string),
            earlier: None,
        }
    }

    #[tokio::test]
    async fn analysers_run_on_the_decoded_audio_of_the_same_job() {
        let spy = Arc::new(PhraseSpy {
            seen: Mutex::new(Vec::new()),
        });
        let pool = ScoringPool::new(Arc::new(FixedEmbedder), 1, 1, AudioLimits::default())
            .with_analysers([spy.clone() as Arc<dyn Analyser>]);

        let scored = pool.score(request(Some("4 7 1"))).await.unwrap();
        assert_eq!(scored.analysis.embedding, vec![16_000.0, 1.0]);
        assert_eq!(scored.analysis.signals.len(), 1);
        assert_eq!(scored.analysis.signals[0].tier, Tier::High);

        let scored = pool.score(request(None)).await.unwrap();
        assert!(
            scored.analysis.signals.is_empty(),
            "not applicable: no signal"
        );

        let err = pool.score(request(Some("boom"))).await.unwrap_err();
        assert_eq!(err.code(), Code::ModelInternal);

        let seen = spy.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (JobKind::Verification, Some("4 7 1".to_string()), 16_000),
                (JobKind::Verification, None, 16_000),
                (JobKind::Verification, Some("boom".to_string()), 16_000),
            ]
        );
    }

    #[tokio::test]
    async fn an_unknown_model_is_transient() {
        let pool = ScoringPool::new(Arc::new(FixedEmbedder), 1, 1, AudioLimits::default());
        let err = pool
            .score(ScoreRequest {
                model_id: "other@test".into(),
                ..request(None)
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ModelUnavailable);
        assert!(err.code().is_transient());
    }
}
