//! The README's first command: `timbre up --demo` enrolls and verifies the
//! bundled speakers through the embedded pipeline, prints the decisions and
//! exits 0 (it fails when the enrolled speaker is not accepted, or another
//! voice or a replay is).

use std::process::Command;

use timbre_tests::{fixtures, scratch_dir, timbre_binary};

#[test]
fn the_quick_start_demo_runs_to_the_end() {
    let dir = scratch_dir("demo");
    let out = Command::new(timbre_binary())
        .args(["up", "--demo", "--demo-audio"])
        .arg(fixtures().join("librispeech-r"))
        .env(
            "TIMBRE__STORE",
            format!("file://{}", dir.join("timbre.redb").display()),
        )
        .env("TIMBRE_LOG", "warn")
        .current_dir(&dir)
        .output()
        .expect("timbre runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let verified = stdout
        .lines()
        .find(|l| l.starts_with("verify same speaker"))
        .unwrap_or_else(|| panic!("no verification line: {stdout}"));
    assert!(verified.contains("accept"), "{stdout}");
}
