//! How the model fails when its weights are absent or wrong.

use timbre::model::{FETCH_COMMAND, ModelError, SpeakerModel, WEIGHTS_FILE};

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("timbre-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn missing_weights_name_the_fetch_command() {
    let err = SpeakerModel::load(&scratch_dir("missing"))
        .err()
        .expect("no weights there");
    assert_eq!(err.code(), "model_missing");
    assert!(err.to_string().contains(FETCH_COMMAND), "{err}");
}

#[test]
fn tampered_weights_fail_the_checksum() {
    let dir = scratch_dir("tampered");
    std::fs::write(dir.join(WEIGHTS_FILE), b"not the model").unwrap();
    let err = SpeakerModel::load(&dir).err().expect("bad checksum");
    assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");
    assert_eq!(err.code(), "model_checksum_mismatch");
}

#[test]
fn one_model_is_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<SpeakerModel>();
}
