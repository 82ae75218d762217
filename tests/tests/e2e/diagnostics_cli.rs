//! `timbre diagnostics export`: the records a `retain_data` key's jobs left
//! behind, written as WAV and JSON for the operator.

use std::process::Command;

use timbre::adapters::file_store::FileStore;
use timbre::domain::{JobCommit, Mutation, now_ms};
use timbre::ports::Store;
use timbre_schemas::{Decision, DecisionKind, JobKind, Registry};
use timbre_tests::pipeline::wav;
use timbre_tests::{scratch_dir, timbre_binary};

const CLIP: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";

fn export(store: &std::path::Path, user: &str, out: &std::path::Path) {
    let status = Command::new(timbre_binary())
        .args([
            "diagnostics",
            "export",
            "--tenant",
            "acme",
            "--user",
            user,
            "--out",
        ])
        .arg(out)
        .env("TIMBRE__STORE", format!("file://{}", store.display()))
        .env("TIMBRE_LOG", "warn")
        .status()
        .expect("run timbre diagnostics export");
    assert!(status.success(), "timbre diagnostics export failed");
}

#[tokio::test]
async fn kept_records_are_exported_as_wav_and_json() {
    let dir = scratch_dir("diagnostics-cli");
    let path = dir.join("timbre.redb");
    let now = now_ms();
    {
        let store = FileStore::open(&path).unwrap();
        store.migrate().await.unwrap();
        let decision = Decision::new(
            "ver-7",
            "acme",
            "alice",
            JobKind::Verification,
            DecisionKind::Accept,
            now,
            now,
        );
        let commit = JobCommit {
            tenant: "acme".into(),
            request_id: "ver-7".into(),
            decision: Registry::new().encode(&decision).unwrap(),
            mutations: vec![Mutation::KeepDiagnostics {
                user_id: "alice".into(),
                job: "verification".into(),
                wav: wav(CLIP),
                at: now,
                ttl_secs: 86_400,
            }],
        };
        store.commit(&commit).await.unwrap();
    }

    let out = dir.join("alice");
    export(&path, "alice", &out);
    assert_eq!(
        std::fs::read(out.join("0000-ver-7.wav")).unwrap(),
        wav(CLIP)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("0000-ver-7.json")).unwrap()).unwrap();
    assert_eq!(meta["request_id"], "ver-7");
    assert_eq!(meta["job"], "verification");
    assert_eq!(meta["decision"]["user_id"], "alice");
    assert_eq!(meta["decision"]["request_id"], "ver-7");
    assert!(meta["expires_at"].as_str().unwrap() > meta["kept_at"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("0000-ver-7.wav"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "only the owner reads a recording: {mode:o}"
    );

    // Another user has none: nothing is written, and that is no error.
    let empty = dir.join("bob");
    export(&path, "bob", &empty);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
