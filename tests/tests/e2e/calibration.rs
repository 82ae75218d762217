//! `timbre calibrate` on the bundled fixtures: a complete score
//! normalisation for the model, and the same bytes from the same inputs.

use std::process::Command;

use timbre::domain::calibration::{Band, ScoreNorm};
use timbre_tests::{fixtures, scratch_dir, timbre_binary};

fn calibrate(out: &std::path::Path) {
    let status = Command::new(timbre_binary())
        .args(["calibrate", "--top-k", "3", "--threads", "2", "--manifest"])
        .arg(fixtures().join("librispeech-r/manifest.tsv"))
        .arg("--out")
        .arg(out)
        .env("TIMBRE_LOG", "warn")
        .status()
        .expect("run timbre calibrate");
    assert!(status.success(), "timbre calibrate failed");
}

#[test]
fn calibration_is_reproducible_and_complete() {
    let dir = scratch_dir("calibrate");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    calibrate(&a);
    calibrate(&b);
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        bytes == std::fs::read(&b).unwrap(),
        "same inputs, same bytes"
    );

    let norm: ScoreNorm = serde_json::from_slice(&bytes).unwrap();
    let model = timbre_tests::pipeline::model();
    assert_eq!(norm.model_id, model.id().to_string());
    // Speakers alternate between cohort and calibration (8 s recordings of
    // 21 fixture speakers: 7 and 8 are long enough).
    for band in [&norm.wide, &norm.narrow] {
        assert!(band.cohort.len() >= 5, "{}", band.cohort.len());
        assert!(band.calibration.weights[1] > 0.0, "{:?}", band.calibration);
    }
    assert_eq!(norm.validate(), Ok(()));
    // Enrollments were cut too: the enrollment quality spans a range.
    let [shortest, longest] = norm.enroll_speech_millis;
    assert!(shortest > 0 && shortest < longest, "{shortest} {longest}");
    for band in [Band::Wide, Band::Narrow] {
        assert!(norm.threshold(band, 0.01) > norm.threshold(band, 0.1));
    }

    // The fitted map separates a speaker from another on real recordings
    // (speakers of the calibration half: none is in the cohort).
    let embed = |file: &str| {
        let wav = std::fs::read(fixtures().join("librispeech-r").join(file)).unwrap();
        let audio = timbre::audio::decode_wav(&wav, &Default::default()).unwrap();
        (model.embed(&audio.samples).unwrap(), audio.speech_millis)
    };
    let (enrolled, _) = embed("test-other/1998/1998-15444-0000.wav");
    let (same, same_ms) = embed("test-other/1998/1998-15444-0005.wav");
    let (other, other_ms) = embed("test-other/3005/3005-163389-0000.wav");
    let genuine = norm.score(Band::Wide, &enrolled, 0, &same, same_ms, &[]);
    let impostor = norm.score(Band::Wide, &enrolled, 0, &other, other_ms, &[]);
    assert!(
        genuine.llr > 0.0 && impostor.llr < 0.0,
        "{genuine:?} vs {impostor:?}"
    );
}
