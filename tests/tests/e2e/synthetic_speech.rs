//! The synthetic-speech check on real audio: text-to-speech clips of three
//! engines fail it, real speech passes it at 16 kHz and through an 8 kHz
//! channel. The clips (tests/fixtures/synthetic) were left out of the
//! back-end's fit. Needs the real weights (`processor/scripts/fetch-model.sh`).

use std::path::{Path, PathBuf};

use timbre::audio::{AudioLimits, decode_wav, resample_to};
use timbre::domain::Tier;
use timbre::liveness::SyntheticSpeechCheck;
use timbre::model::default_model_dir;
use timbre_schemas::Code;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn check() -> SyntheticSpeechCheck {
    SyntheticSpeechCheck::load(&default_model_dir(), Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn samples(path: &Path) -> Vec<f32> {
    decode_wav(&std::fs::read(path).unwrap(), &AudioLimits::default())
        .unwrap()
        .samples
}

#[test]
fn synthetic_clips_fail_and_real_speech_passes() {
    let check = check();
    let mut clips: Vec<PathBuf> = std::fs::read_dir(fixtures().join("synthetic"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    clips.sort();
    assert!(clips.len() >= 6, "{clips:?}");
    for clip in &clips {
        let score = check.score(&samples(clip)).unwrap().unwrap();
        let signal = check.signal(score, 16_000);
        assert_eq!(signal.tier, Tier::Low, "{}: {signal:?}", clip.display());
        assert_eq!(signal.reason, Some(Code::SyntheticSpeech));
        assert!(!signal.pass);
    }
    // Real speech of speakers the back-end's fit never heard (test-other),
    // as sent and through an 8 kHz channel.
    let list = std::fs::read_to_string(fixtures().join("reference/campplus/files.txt")).unwrap();
    let held_out: Vec<&str> = list.lines().filter(|f| f.contains("test-other")).collect();
    assert!(held_out.len() >= 10);
    for file in held_out.into_iter().step_by(3) {
        let audio = samples(&fixtures().join(file));
        let narrow = resample_to(&resample_to(&audio, 16_000, 8_000), 8_000, 16_000);
        for (samples, rate) in [(audio, 16_000), (narrow, 8_000)] {
            let score = check.score(&samples).unwrap().unwrap();
            let signal = check.signal(score, rate);
            assert_ne!(signal.tier, Tier::Low, "{file} at {rate} Hz: {signal:?}");
            assert!(signal.pass);
            assert_eq!(signal.score, Some(score));
        }
    }
}
