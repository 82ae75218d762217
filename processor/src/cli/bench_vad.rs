//! `timbre bench vad`: what the speech detector counts as speech next to the
//! energy estimate it replaced, on a corpus and on sounds that are not
//! speech, and what it costs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use timbre::audio::not_speech::{music, noise};
use timbre::audio::{AudioLimits, MODEL_SAMPLE_RATE, decode_wav, vad};
use timbre::eval::read_manifest;
use timbre::model::default_model_dir;
use timbre::model::silero::SileroVad;
use timbre::ports::SpeechDetector;

use super::ModelArgs;

/// `timbre bench vad`.
#[derive(clap::Args)]
pub struct BenchVad {
    /// Corpus manifest (`speaker\tfile`).
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    manifest: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

impl BenchVad {
    pub fn run(self) -> Result<()> {
        let dir = self
            .model
            .model_dir
            .clone()
            .unwrap_or_else(default_model_dir);
        let detector = SileroVad::load_from_dir(&dir)?;
        let (mut audio_ms, mut energy_ms, mut neural_ms, mut seconds) = (0u64, 0u64, 0u64, 0f64);
        let (mut files, mut refused) = (0usize, 0usize);
        for u in read_manifest(&self.manifest)? {
            let bytes = std::fs::read(&u.path).with_context(|| u.path.display().to_string())?;
            // Files the engine would refuse (too short, say) are not counted.
            let Ok(audio) = decode_wav(&bytes, &AudioLimits::default()) else {
                refused += 1;
                continue;
            };
            let start = Instant::now();
            let neural =
                SpeechDetector::speech_millis(&detector, &audio.samples, audio.source_rate)?;
            seconds += start.elapsed().as_secs_f64();
            audio_ms += audio.duration_millis;
            energy_ms += audio.speech_millis;
            neural_ms += neural;
            files += 1;
        }
        let fraction = |ms: u64| ms as f64 / audio_ms.max(1) as f64;
        let rate = MODEL_SAMPLE_RATE;
        let (noise, music) = (noise(), music());
        let not_speech = json!({
            "noise_energy_ms": vad::speech_millis(&noise, rate),
            "noise_neural_ms": detector.speech_millis(&noise, rate)?,
            "music_energy_ms": vad::speech_millis(&music, rate),
            "music_neural_ms": detector.speech_millis(&music, rate)?,
        });
        let ms_per_3s = seconds * 1e3 / (audio_ms as f64 / 3_000.0).max(1e-9);
        let report = json!({
            "files": files, "refused_files": refused, "audio_seconds": audio_ms as f64 / 1e3,
            "energy_speech_fraction": fraction(energy_ms),
            "neural_speech_fraction": fraction(neural_ms),
            "not_speech": not_speech, "ms_per_3s": ms_per_3s,
        });
        if self.json {
            println!("{report}");
        } else {
            println!(
                "{files} files, {:.1} s: speech {:.1}% by energy, {:.1}% by silero vad; 8 s of noise {} / {} ms, of music {} / {} ms (energy / silero); {ms_per_3s:.2} ms per 3 s",
                audio_ms as f64 / 1e3,
                fraction(energy_ms) * 100.0,
                fraction(neural_ms) * 100.0,
                not_speech["noise_energy_ms"],
                not_speech["noise_neural_ms"],
                not_speech["music_energy_ms"],
                not_speech["music_neural_ms"],
            );
        }
        Ok(())
    }
}
