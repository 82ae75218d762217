//! Property-based run of the OpenAPI document against a live server
//! (schemathesis): no server error and no response outside the spec.

use std::process::Command;

use timbre_tests::api::deploy;
use timbre_tests::{required, scratch_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_api_conforms_to_its_openapi_document() {
    let Some(schemathesis) = required(
        "TIMBRE_SCHEMATHESIS",
        "schemathesis",
        "run TIMBRE_SCHEMATHESIS=$(tests/tools/schemathesis.sh) cargo test -p timbre-tests --test api_openapi",
    ) else {
        return;
    };
    let store = format!(
        "file://{}",
        scratch_dir("fuzz").join("timbre.redb").display()
    );
    let settings = vec![
        // The fuzzer sends thousands of requests: limits are tested elsewhere.
        ("TIMBRE__API__RATE_LIMIT_PER_MINUTE", "1000000".to_string()),
        ("TIMBRE__API__DEMO_KEYS", "true".to_string()),
        ("TIMBRE__API__WAIT_TIMEOUT_MS", "5000".to_string()),
    ];
    let d = deploy("embedded://", &store, settings).await;
    // Some real state, so generated requests also reach existing profiles.
    for user in ["alice", "0"] {
        d.api
            .post(
                &d.acme,
                "/create-profile",
                serde_json::json!({"user_id": user}),
            )
            .await;
    }
    let base = d.api.base.clone();
    let key = d.acme.clone();
    let report = scratch_dir("schemathesis");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .args([
                "run",
                &format!("{base}/openapi.json"),
                "--url",
                &base,
                "--header",
                &format!("x-api-key: {key}"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "40",
                "--workers",
                "2",
                "--seed",
                "20261122",
                "--suppress-health-check",
                "all",
                "--no-color",
            ])
            .current_dir(&report)
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("passed"),
        "schemathesis ran operations:\n{stdout}"
    );
    d.stop().await;
}
