//! loadgen against remote targets: Avro jobs on real Kafka to a processor on
//! Kafka + Cassandra, and the HTTP API of an in-process deployment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reqwest::StatusCode;
use timbre::engine::Engine;
use timbre_loadgen::report::Report;
use timbre_loadgen::{Options, run};
use timbre_schemas::{Decision, DecisionKind, JobKind, Registry};
use timbre_tests::api::{config, deploy};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, unique};
use tokio_util::sync::CancellationToken;

fn options(args: &[String]) -> Options {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/librispeech-r/manifest.tsv");
    let mut all = vec![
        "loadgen".to_string(),
        "--quiet".into(),
        "--manifest".into(),
        manifest.display().to_string(),
    ];
    all.extend_from_slice(args);
    Options::parse_from(all)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A load-test tenant's policy, as an operator would set it.
fn tenant_settings(tenant: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("TIMBRE__TENANTS__{tenant}__FREE_FAILURES"),
            "1000000".into(),
        ),
        (
            format!("TIMBRE__TENANTS__{tenant}__ENROLLMENT_TARGET_MILLIS"),
            "4000".into(),
        ),
        // Attempts reuse the corpus' clips: replays, to the engine.
        (
            format!("TIMBRE__TENANTS__{tenant}__REPLAY_MEMORY_DAYS"),
            "0".into(),
        ),
    ]
}

/// What every complete run of 4 candidates at a 4 s enrollment target shows.
fn assert_complete(r: &Report, jobs: u64) {
    let summary = serde_json::to_string_pretty(r).unwrap();
    assert_eq!(r.speakers.enrolled, ["1688", "1998", "2033"], "{summary}");
    assert_eq!(r.speakers.not_enrolled.len(), 1, "{summary}");
    assert_eq!(r.speakers.not_enrolled[0].speaker, "2414", "{summary}");
    assert_eq!(
        (r.jobs.sent, r.jobs.decided, r.jobs.missing),
        (jobs, jobs, 0),
        "{summary}"
    );
    assert!(r.errors.is_empty() && r.failures.is_empty(), "{summary}");
    assert_eq!(r.outcomes.cooldown, 0, "{summary}");
    assert!(
        r.genuine.attempts > 0 && r.impostor.attempts > 0,
        "{summary}"
    );
    assert!(r.far.unwrap() <= 0.1, "{summary}");
    assert!(r.frr.unwrap() <= 0.2, "{summary}");
    assert!(r.throughput_per_s > 0.0, "{summary}");
    let l = &r.latency_ms;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max,
        "{summary}"
    );
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_target_against_a_processor_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let tenant = "loadtest";
    let settings = tenant_settings(tenant);
    let settings = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let config = config(&kafka, &format!("cql://{cql}/{}", unique("lg")), settings);
    let engine = Arc::new(Engine::connect(config.clone()).await.unwrap());
    assert!(engine.apply_topics(Some(1)).await.unwrap().is_empty());
    engine.store.migrate().await.unwrap();
    let shutdown = CancellationToken::new();
    let task = {
        let (engine, token) = (engine.clone(), shutdown.clone());
        tokio::spawn(async move { engine.run(token).await.unwrap() })
    };

    // 20 verifications offered at 5/s: sending alone takes 3.8 s.
    let opts = options(&args(&[
        "--target",
        &kafka,
        "--topic-prefix",
        &config.topic_prefix,
        "--apply-topics",
        "--replication",
        "1",
        "--tenant",
        tenant,
        "--speakers",
        "4",
        "--jobs",
        "20",
        "--rate",
        "5",
        "--drain-timeout",
        "300",
    ]));
    let r = run(&opts).await.unwrap();
    eprintln!("{}", r.table());
    assert_complete(&r, 20);
    assert_eq!(r.tenant.as_deref(), Some(tenant));
    assert!(r.verification_seconds >= 3.8, "paced at 5/s: {r:?}");

    // The decisions went through the store under the run's request ids.
    let stored = engine
        .store
        .decision(tenant, &format!("{}-v0", r.run_id))
        .await
        .unwrap()
        .expect("the first verification's decision is stored");
    let d: Decision = Registry::new().decode(&stored).unwrap();
    assert_eq!(d.job, JobKind::Verification);
    assert!(matches!(
        d.decision,
        DecisionKind::Accept | DecisionKind::Reject | DecisionKind::Retry
    ));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_target_against_the_api() {
    let store = format!("file://{}", scratch_dir("lg").join("timbre.redb").display());
    let mut settings = tenant_settings("acme");
    settings.push(("TIMBRE__API__RATE_LIMIT_PER_MINUTE".into(), "100000".into()));
    let settings = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let d = deploy("embedded://", &store, settings).await;

    let r = run(&options(&args(&[
        "--target",
        &d.api.base,
        "--api-key",
        &d.acme,
        "--speakers",
        "4",
        "--jobs",
        "24",
        "--concurrency",
        "4",
    ])))
    .await
    .unwrap();
    eprintln!("{}", r.table());
    assert_complete(&r, 24);
    assert_eq!(r.tenant, None, "the key decides the tenant");

    // Request ids travel as Idempotency-Key: the API knows the run's jobs.
    let (status, body) = d
        .api
        .get(&d.acme, &format!("/v1/decisions/{}-v0", r.run_id))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"], "verification", "{body}");

    let refused = run(&options(&args(&[
        "--target",
        &d.api.base,
        "--api-key",
        "tmb_nope_nope",
    ])))
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused:#}");
    let tenant = run(&options(&args(&[
        "--target",
        &d.api.base,
        "--api-key",
        &d.acme,
        "--tenant",
        "other",
    ])))
    .await
    .unwrap_err();
    assert!(tenant.to_string().contains("--tenant"), "{tenant:#}");

    d.stop().await;
}
