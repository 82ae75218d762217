//! A user deleted while their re-scoring job is being scored keeps nothing:
//! the job runs in a background lane, but it rules and commits under its
//! user's lock, on the profile and consent read again there, so no shadow
//! voiceprint comes back after the erasure.

use std::time::Duration;

use timbre::domain::{
    BIOMETRIC_PURPOSE, Consent, JobCommit, Mutation, Profile, ProfileStatus, now_ms,
};
use timbre::metrics::Metrics;
use timbre::pipeline::ProcessorConfig;
use timbre_schemas::{
    Contract, Decision, DecisionKind, ProfileCommand, ProfileCommandKind, Registry,
    RescoreRequested, message_key,
};
use timbre_tests::gate::{GATE_MODEL, Setup, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_rescoring_leaves_no_voiceprint() {
    let setup = setup().await;
    let Setup {
        wav,
        bus,
        store,
        gate,
        topics,
        ..
    } = &setup;
    let (tenant, user) = ("t", "u");
    let now = now_ms();
    // An enrolled user whose consent allows re-scoring from retained audio.
    store
        .commit(&JobCommit {
            tenant: tenant.into(),
            request_id: "seed".into(),
            decision: b"seed".to_vec(),
            mutations: vec![
                Mutation::PutProfile(Profile {
                    tenant: tenant.into(),
                    user_id: user.into(),
                    status: ProfileStatus::Enrolled,
                    samples: 1,
                    net_speech_millis: 8_000,
                    learning_progress: 0.5,
                    sessions: 0,
                    failures: 0,
                    cooldown_until: 0,
                    created_at: now,
                    updated_at: now,
                }),
                Mutation::PutConsent(Consent {
                    tenant: tenant.into(),
                    user_id: user.into(),
                    purpose: BIOMETRIC_PURPOSE.into(),
                    granted: true,
                    retain_audio: true,
                    updated_at: now,
                }),
                Mutation::RetainAudio {
                    user_id: user.into(),
                    wav: wav.clone(),
                    at: 1,
                    keep_newest: 10,
                },
            ],
        })
        .await
        .unwrap();
    let mut running = setup
        .start(ProcessorConfig::default(), Metrics::new())
        .await;
    let registry = Registry::new();
    let key = message_key(tenant, user);

    let rescore = RescoreRequested {
        request_id: "rescore-u".into(),
        tenant: tenant.into(),
        user_id: user.into(),
        occurred_at: now,
        schema_version: RescoreRequested::CURRENT_VERSION,
        trace: None,
        plan_id: "plan".into(),
        from_model: "older@sha256:000000000000".into(),
        to_model: GATE_MODEL.into(),
    };
    bus.publish(
        &topics.rescore,
        key.as_bytes(),
        &registry.encode(&rescore).unwrap(),
    )
    .await
    .unwrap();
    // The retained audio is being scored (held at the gate) ...
    tokio::time::timeout(Duration::from_secs(30), async {
        while gate.entered() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the re-scoring job reaches scoring");
    // ... when the user is deleted.
    let delete = ProfileCommand {
        request_id: "delete-u".into(),
        tenant: tenant.into(),
        user_id: user.into(),
        occurred_at: now_ms(),
        schema_version: ProfileCommand::CURRENT_VERSION,
        trace: None,
        command: ProfileCommandKind::Delete,
        reason: None,
    };
    bus.publish(
        &topics.profile,
        key.as_bytes(),
        &registry.encode(&delete).unwrap(),
    )
    .await
    .unwrap();
    let deleted = next_decision(&mut running.decisions, &registry).await;
    assert_eq!(
        (deleted.request_id.as_str(), deleted.decision),
        ("delete-u", DecisionKind::Applied),
        "the delete is not held up by the re-scoring job's scoring"
    );

    gate.open();
    let rescored = next_decision(&mut running.decisions, &registry).await;
    assert_eq!(rescored.request_id, "rescore-u");
    assert_ne!(
        rescored.decision,
        DecisionKind::Applied,
        "the re-scoring of a deleted user is refused: {rescored:?}"
    );
    assert!(
        store
            .voiceprint(tenant, user, GATE_MODEL)
            .await
            .unwrap()
            .is_none(),
        "no voiceprint of the deleted user under any model"
    );
    assert!(store.profile(tenant, user).await.unwrap().is_none());
    assert!(
        store
            .enrollment_audio(tenant, user)
            .await
            .unwrap()
            .is_empty()
    );
    running.stop().await;
}

async fn next_decision(
    decisions: &mut Box<dyn timbre::ports::Subscription>,
    registry: &Registry,
) -> Decision {
    let m = tokio::time::timeout(Duration::from_secs(30), decisions.next())
        .await
        .expect("a decision")
        .unwrap();
    registry.decode(&m.payload).unwrap()
}
